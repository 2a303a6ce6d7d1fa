//! `thread_blocks_exit`: interpreter shutdown (`threading._shutdown`) waits for a non-daemon
//! thread that is itself stuck. Fixture: thread_blocks_exit.py.

use super::{Ctx, Draft};
use crate::analysis::types::Finding;
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in ctx.open_stuck() {
        if !ctx.has_frame(m, "threading.py", "_shutdown") {
            continue;
        }
        let others: Vec<_> = ctx
            .idx
            .threads_of(m.pid)
            .into_iter()
            .filter(|t| *t != m && ctx.g.stuck(*t) && !ctx.passive(*t))
            .collect();
        let Some(first) = others.first().copied() else {
            continue;
        };
        let culprit = ctx.code_line(first);
        out.push(
            Draft {
                pattern: PatternId::ThreadBlocksExit,
                summary: format!(
                    "{} cannot exit: interpreter shutdown waits for non-daemon thread {} ({}), which is blocked in {}.",
                    m.pid,
                    ctx.name(first),
                    first.tid,
                    ctx.link(first).waits_on
                ),
                chain: vec![
                    ctx.link_with(m, format!("threading._shutdown joins {}", ctx.name(first))),
                    ctx.link(first),
                ],
                threads: std::iter::once(m).chain(others.iter().copied()).collect(),
                culprit,
                fix: "Make the thread a daemon (Thread(daemon=True)) or tell it to stop (an Event or a sentinel) and join it before the main thread returns.",
                evidence: others.iter().map(|t| format!("{}: {}", ctx.name(*t), ctx.line(*t))).collect(),
            }
            .hang(),
        );
    }
    out
}
