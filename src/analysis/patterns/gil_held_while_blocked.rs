//! `gil_held_while_blocked`: a thread holds the GIL while blocked in a system call (C code, or
//! `ctypes.PyDLL`, that never released it), so every other thread of the process waits in
//! `take_gil` forever. Fixture: gil_held_while_blocked.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let open = ctx.open_stuck();
    let gil_waiters: Vec<_> = open
        .iter()
        .copied()
        .filter(|w| matches!(ctx.blocked(*w), Some(BlockedOn::Gil)))
        .collect();
    for h in open {
        let Some(py) = ctx.py(h) else { continue };
        if !py.owns_gil || matches!(ctx.blocked(h), Some(BlockedOn::Running)) {
            continue;
        }
        let waiters: Vec<_> = gil_waiters
            .iter()
            .copied()
            .filter(|w| w.pid == h.pid && *w != h)
            .collect();
        if waiters.is_empty() {
            continue;
        }
        let culprit = ctx.code_line(h);
        let holder_wait = ctx.link(h).waits_on;
        let mut chain: Vec<_> = waiters
            .iter()
            // One waiter stands for all (each of them, periodic threads included, is stuck
            // behind the same holder; the evidence lists them).
            .take(1)
            .map(|w| ctx.link_with(*w, format!("waits for the GIL, held by thread {}", h.tid)))
            .collect();
        chain.push(ctx.link_with(h, format!("holds the GIL while blocked in {holder_wait}")));
        let native_top = ctx
            .idx
            .thread(h)
            .and_then(|(_, t)| t.native.as_ref())
            .and_then(|n| n.iter().find_map(|f| f.function.clone()));
        let mut evidence = vec![
            format!("py-spy: thread {} ({}) owns the GIL", h.tid, ctx.name(h)),
            format!(
                "{} thread(s) wait in take_gil: {}",
                waiters.len(),
                waiters
                    .iter()
                    .map(|w| format!("{} ({})", w.tid, ctx.name(*w)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("{}: {}", h.tid, ctx.line(h)),
        ];
        if let Some(f) = native_top {
            evidence.push(format!("innermost native frame of {}: {f}", h.tid));
        }
        let mut threads = waiters.clone();
        threads.push(h);
        out.push(
            Draft {
                pattern: PatternId::GilHeldWhileBlocked,
                summary: format!(
                    "Thread {} of {} holds the GIL while blocked in {}{}; {} other thread(s) wait for the GIL and can never run.",
                    ctx.name(h),
                    h.pid,
                    holder_wait,
                    at(&culprit),
                    waiters.len()
                ),
                chain,
                threads,
                culprit,
                fix: "Release the GIL around blocking calls: in a C extension wrap them in Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS; with ctypes use CDLL (which releases the GIL), not PyDLL; or move the blocking call to another process.",
                evidence,
            }
            .hang(),
        );
    }
    out
}
