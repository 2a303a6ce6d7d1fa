//! `finalizer_deadlock`: code run at interpreter finalization (an atexit handler, `__del__`)
//! blocks, e.g. stopping a logging QueueListener or joining a thread during shutdown. Seen as a
//! stuck main thread whose outermost Python frame is no longer the script's `<module>`.
//! Fixture: finalizer_deadlock.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::Finding;
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in ctx.open_stuck() {
        if m.tid.0 != m.pid.0 || ctx.passive(m) {
            continue;
        }
        let Some(py) = ctx.py(m) else { continue };
        let Some(outer) = py.frames.last() else {
            continue;
        };
        let in_del = py.frames.iter().any(|f| f.named("__del__"));
        let at_exit = outer.function != "<module>"
            && !outer.named("_shutdown")
            && !outer.named("_exit_function")
            && !outer.named("_bootstrap")
            && !outer.named("run")
            && !outer.named("_run_module_as_main");
        if !(at_exit || in_del) {
            continue;
        }
        let culprit = ctx.code_line(m);
        out.push(
            Draft {
                pattern: PatternId::FinalizerDeadlock,
                summary: format!(
                    "{} is stuck during interpreter finalization in {}{}: an atexit handler or finalizer blocks ({}).",
                    m.pid,
                    if in_del { "__del__".to_string() } else { outer.function.clone() },
                    at(&culprit),
                    ctx.link(m).waits_on
                ),
                chain: vec![ctx.link(m)],
                threads: ctx.idx.threads_of(m.pid),
                culprit,
                fix: "Code run at exit must not block: give joins and gets a timeout, stop helper threads and QueueListeners before the interpreter shuts down, and don't start threads or wait on other processes in __del__ or atexit handlers.",
                evidence: vec![
                    format!("outermost Python frame of the main thread: {} ({}), not the script's <module>", outer.function, outer.short_location()),
                    ctx.line(m),
                ],
            }
            .hang(),
        );
    }
    out
}
