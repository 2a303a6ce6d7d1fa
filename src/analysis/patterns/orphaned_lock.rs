//! `orphaned_lock`: threads block on a multiprocessing lock whose holder died (terminate(),
//! SIGKILL, OOM) without releasing it, including a Queue's internal `_rlock`/`_wlock`. Proof:
//! the semaphore's value is 0 and no live process's `SemLock` object has `count > 0`.
//! Fixtures: orphaned_lock.py, orphaned_lock_pool.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let open = ctx.open_stuck();
    for sem in &ctx.idx.snap.semaphores {
        let Some(holders) = &sem.holders else {
            continue;
        };
        if sem.value != Some(0)
            || !holders.iter().any(|h| h.maxvalue == 1)
            || holders.iter().any(|h| h.count > 0)
        {
            continue;
        }
        let waiters: Vec<_> = open
            .iter()
            .copied()
            .filter(|t| matches!(ctx.blocked(*t), Some(BlockedOn::Semaphore { key }) if *key == sem.key))
            .collect();
        if waiters.is_empty() {
            continue;
        }
        // The line the user looks at: a waiter in user code, else a stuck user thread of a
        // process that maps the lock (e.g. the Pool's main thread waiting for a result).
        let culprit = waiters.iter().find_map(|w| ctx.code_line(*w)).or_else(|| {
            open.iter()
                .copied()
                .filter(|t| sem.mapped_by.contains(&t.pid) && !ctx.passive(*t))
                .find_map(|t| ctx.code_line(t))
        });
        let mut evidence = vec![format!(
            "sem {}: value 0, {} waiters; SemLock objects found in {} with count 0: no live process holds it",
            sem.key,
            sem.nwaiters.map(|n| n.to_string()).unwrap_or("?".into()),
            holders.iter().map(|h| h.pid.to_string()).collect::<Vec<_>>().join(", ")
        )];
        evidence.extend(ctx.idx.exited().into_iter().map(|(_, s)| s));
        let pids: Vec<String> = {
            let mut v: Vec<_> = waiters.iter().map(|w| w.pid).collect();
            v.dedup();
            v.iter().map(|p| p.to_string()).collect()
        };
        let queue_lock = waiters.iter().any(|w| {
            ctx.has_frame(*w, "multiprocessing/queues.py", "get")
                || ctx.has_frame(*w, "multiprocessing/queues.py", "put")
        });
        out.push(
            Draft {
                pattern: "orphaned_lock",
                summary: format!(
                    "{} thread{} in {} wait for a multiprocessing {} (sem {}) that no live process holds: its holder exited without releasing it.",
                    waiters.len(),
                    if waiters.len() == 1 { "" } else { "s" },
                    pids.join(", "),
                    if queue_lock { "Queue's internal lock" } else { "lock" },
                    sem.key
                ),
                chain: waiters.iter().take(3).map(|w| ctx.link_with(*w, format!("acquire SemLock sem {} (value 0, no live holder)", sem.key))).collect(),
                threads: waiters.clone(),
                culprit,
                fix: "Don't terminate() or kill a process that may hold a multiprocessing lock or be inside a Queue operation (leaving `with Pool()` terminates workers: call pool.close(); pool.join() first). Use lock.acquire(timeout=...) to fail instead of hanging.",
                evidence,
            }
            .hang(),
        );
    }
    out
}
