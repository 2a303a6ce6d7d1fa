//! `orphaned_lock`: threads block on a multiprocessing lock whose holder died (terminate(),
//! SIGKILL, OOM) without releasing it, including a Queue's internal `_rlock`/`_wlock`. Proof:
//! the semaphore's value is 0 and no live process's `SemLock` object has `count > 0`. Also a
//! Manager's lock: a server thread inside a client's request waits on a server lock that no
//! live request can release, and a process has exited.
//! Fixtures: orphaned_lock.py, orphaned_lock_pool.py, orphaned_lock_manager.py.

use super::{Ctx, Draft};
use crate::analysis::blocked;
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::{Role, ThreadRef};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let open = ctx.open_stuck();
    out.extend(manager_locks(ctx, &open));
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
                pattern: PatternId::OrphanedLock,
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

/// A Manager server thread blocked inside a client's request on a lock of the server, stuck,
/// and the only one inside a request (so not a cycle of requests): no live client will release
/// the lock. A client that held it has exited (or, if none is known to have, is among the
/// stuck clients).
fn manager_locks(ctx: &Ctx<'_>, open: &[ThreadRef]) -> Vec<Finding> {
    let exited = ctx.idx.exited();
    let mut out = Vec::new();
    for t in open.iter().copied() {
        let Some((p, th)) = ctx.idx.thread(t) else {
            continue;
        };
        let lock = matches!(
            ctx.blocked(t),
            Some(
                BlockedOn::ThreadLock { .. }
                    | BlockedOn::ParkingLot { .. }
                    | BlockedOn::Mutex {
                        owner_tid: None,
                        ..
                    }
            )
        );
        if p.role != Role::ManagerServer || !lock || !blocked::in_manager_request(th) {
            continue;
        }
        let busy_elsewhere = p
            .threads
            .iter()
            .any(|o| o.tid != th.tid && blocked::in_manager_request(o));
        if busy_elsewhere {
            continue;
        }
        // The clients waiting for the server's answer.
        let clients: Vec<ThreadRef> = open
            .iter()
            .copied()
            .filter(|c| c.pid != t.pid && !ctx.passive(*c))
            .filter(|c| match ctx.blocked(*c) {
                Some(BlockedOn::SocketRead {
                    peer: Some(peer), ..
                }) => ctx.idx.socket_holders(*peer).iter().any(|h| h.pid == t.pid),
                _ => false,
            })
            .collect();
        let culprit = clients
            .iter()
            .find_map(|c| ctx.code_line(*c))
            .or_else(|| ctx.code_line(t));
        let mut chain: Vec<_> = clients
            .iter()
            .take(3)
            .map(|c| ctx.link_with(*c, format!("waits for Manager {} to answer", t.pid)))
            .collect();
        chain.push(ctx.link_with(t, format!("serves the request: {}", ctx.link(t).waits_on)));
        let others: Vec<String> = ctx
            .idx
            .threads_of(t.pid)
            .into_iter()
            .filter(|x| *x != t)
            .map(|x| format!("{} ({})", x.tid, ctx.line(x)))
            .collect();
        let mut threads = clients.clone();
        threads.push(t);
        out.push(
            Draft {
                pattern: PatternId::OrphanedLock,
                summary: format!(
                    "{} wait{} for Manager {} to answer, but the server thread serving the request waits for a lock of the Manager that no live client will release: {}.",
                    if clients.is_empty() { "Clients".to_string() } else { clients.iter().map(|c| c.pid.to_string()).collect::<Vec<_>>().join(", ") },
                    if clients.len() == 1 { "s" } else { "" },
                    t.pid,
                    if exited.is_empty() {
                        "its holder has exited without releasing it, or is one of the stuck clients".to_string()
                    } else {
                        format!("its holder exited without releasing it ({})", exited.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>().join("; "))
                    }
                ),
                chain,
                threads,
                culprit,
                fix: "Don't kill a process that may hold a Manager lock (or any shared lock): stop it cooperatively, or release in a finally: block. Acquire with a timeout (lock.acquire(timeout=...)) so that a lost holder fails instead of hanging.",
                evidence: std::iter::once(format!(
                    "Manager server {}: thread {} is inside a client's request (serve_client) and waits on a lock of the server: {}",
                    t.pid,
                    t.tid,
                    ctx.line(t)
                ))
                .chain(std::iter::once(format!(
                    "its other threads cannot release it: {}",
                    others.join("; ")
                )))
                .chain(exited.iter().map(|(_, s)| s.clone()))
                .collect(),
            }
            .hang(),
        );
    }
    out
}
