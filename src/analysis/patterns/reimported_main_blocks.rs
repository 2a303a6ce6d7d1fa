//! `reimported_main_blocks`: the main module's top level runs again in another process and
//! blocks there. Under spawn, and under forkserver (the default start method from 3.14), the
//! main module is imported again as `__mp_main__`: from 3.14 by the forkserver itself (its
//! default preload, before it serves any fork request), before that and under spawn by each
//! child. Top-level work without an `if __name__ == "__main__":` guard (a server started at
//! import time) then never returns: `Process.start()` waits for the forkserver, or
//! `Process.join()` for the child. Proof: a thread stuck under `spawn._fixup_main_from_path`
//! (the re-import), and the threads waiting on it. A top level that loops with timeouts is not
//! provably stuck and is not reported. Fixture: reimported_main_blocks.py.

use super::{Ctx, Draft};
use crate::analysis::types::{CodeLine, Finding};
use crate::analysis::PatternId;
use crate::model::{Role, ThreadRef};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let stuck = ctx.open_stuck();
    // Forkserver threads are passive, so this also looks at threads already explained as
    // idle services: only the ones inside the re-import count.
    let importing: Vec<ThreadRef> = ctx
        .g
        .order
        .iter()
        .copied()
        .filter(|t| {
            ctx.g.stuck(*t)
                && !ctx.explained.contains(t)
                && ctx.has_frame(*t, "multiprocessing/spawn.py", "_fixup_main_from_path")
        })
        .collect();
    for m in importing {
        let Some(p) = ctx.idx.process(m.pid) else {
            continue;
        };
        // The line to guard: the re-imported module's top-level frame (outermost user frame).
        let top = ctx.py(m).and_then(|py| {
            py.frames
                .iter()
                .rev()
                .find(|f| f.function == "<module>" && f.is_user_code())
                .cloned()
        });
        let at = top
            .as_ref()
            .map(|f| {
                format!(
                    "{}:{}",
                    f.file.rsplit('/').next().unwrap_or(&f.file),
                    f.line
                )
            })
            .unwrap_or_else(|| "its top level".into());
        let culprit = top.map(|f| CodeLine {
            pid: m.pid,
            tid: m.tid,
            file: f.file,
            line: f.line,
            function: f.function,
        });
        // Who waits on it: stuck threads of other processes whose providers are its threads.
        let waiters: Vec<ThreadRef> = stuck
            .iter()
            .copied()
            .filter(|w| {
                w.pid != m.pid
                    && !ctx.passive(*w)
                    && ctx.g.providers(*w).iter().any(|x| x.pid == m.pid)
            })
            .collect();
        let who = if p.role == Role::Forkserver {
            format!("the forkserver {}", m.pid)
        } else {
            format!("{} ({})", m.pid, p.role.label())
        };
        let mut chain: Vec<_> = waiters
            .iter()
            .map(|w| {
                let what = if ctx.has_frame(*w, "multiprocessing/popen_forkserver.py", "_launch")
                    || ctx.has_frame(
                        *w,
                        "multiprocessing/forkserver.py",
                        "connect_to_new_process",
                    ) {
                    format!("Process.start(): waits for {who} to fork the child")
                } else {
                    ctx.link(*w).waits_on
                };
                ctx.link_with(*w, what)
            })
            .collect();
        chain.push(ctx.link_with(
            m,
            format!("re-importing the main module: {}", ctx.link(m).waits_on),
        ));
        let summary = match waiters.first() {
            Some(w) => format!(
                "{} waits for {who}, which is stuck importing the main module again (as __mp_main__): its top level blocks at {at}.",
                w.pid
            ),
            None => format!(
                "{who} is stuck importing the main module again (as __mp_main__): its top level blocks at {at}."
            ),
        };
        let mut evidence: Vec<String> = waiters
            .iter()
            .map(|w| format!("{}/{}: {}", w.pid, w.tid, ctx.line(*w)))
            .collect();
        evidence.push(format!(
            "{}/{}: {} (under multiprocessing's re-import of the main module, spawn._fixup_main_from_path, at {at})",
            m.pid,
            m.tid,
            ctx.line(m)
        ));
        out.push(
            Draft {
                pattern: PatternId::ReimportedMainBlocks,
                summary,
                chain,
                threads: waiters
                    .iter()
                    .copied()
                    .chain(ctx.idx.threads_of(m.pid))
                    .collect(),
                culprit,
                fix: "Put the script's top-level work under `if __name__ == \"__main__\":`. Under spawn, and under forkserver (the default on Linux from 3.14), the main module is imported again, as __mp_main__: by the forkserver (3.14+) or by every child.",
                evidence,
            }
            .hang(),
        );
    }
    out
}
