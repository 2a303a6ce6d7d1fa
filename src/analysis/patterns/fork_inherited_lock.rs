//! `fork_inherited_lock`: a forked child blocks on a lock (pthread mutex, threading lock, io
//! buffer lock) that was held at fork time by a thread that does not exist in the child.
//! Proof: the mutex `__owner` TID, or the owner recorded in the RLock or BufferedWriter
//! object, is not a thread of the child; or the lock is private to the child and the child
//! has no other thread that could release it.
//! Fixtures: fork_inherited_lock.py, fork_inherited_threading_lock.py, fork_inherited_rlock.py,
//! fork_inherited_io_lock.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::Role;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in ctx.open_stuck() {
        let Some(p) = ctx.idx.process(t.pid) else {
            continue;
        };
        if !matches!(
            p.role,
            Role::ForkChild | Role::PoolWorker | Role::ForkserverChild
        ) {
            continue;
        }
        let others = ctx.idx.threads_of(t.pid);
        let joining = ctx.py(t).is_some_and(|py| {
            py.frames.iter().any(|f| {
                f.named("join") || f.named("_wait_for_tstate_lock") || f.named("_shutdown")
            })
        });
        let (evidence, waits_on) = match ctx.blocked(t) {
            Some(BlockedOn::Mutex { uaddr, owner_tid: Some(o) })
                if !others.iter().any(|x| x.tid.0 == *o) && t.tid.0 != *o =>
            {
                let holder = ctx
                    .idx
                    .snap
                    .processes
                    .iter()
                    .find(|q| q.pid != t.pid && q.threads.iter().any(|th| th.tid.0 == *o));
                let mut ev = vec![format!(
                    "pthread mutex at {uaddr:#x}: __owner = {o}, not a thread of {} (its threads: {})",
                    t.pid,
                    ctx.idx.threads_of(t.pid).iter().map(|x| x.tid.to_string()).collect::<Vec<_>>().join(", ")
                )];
                if let Some(h) = holder {
                    ev.push(format!("TID {o} is a thread of {}, which forked this process", h.label()));
                }
                (ev, format!("pthread_mutex_lock at {uaddr:#x}; owner TID {o} is not a thread of this process"))
            }
            Some(BlockedOn::ThreadLock { uaddr })
                if ctx
                    .idx
                    .lock_object(t)
                    .is_some_and(|l| l.owner != 0 && l.owner_tid.is_none()) =>
            {
                let l = ctx.idx.lock_object(t).cloned();
                let in_parent = l.as_ref().and_then(|l| l.owner_in_parent);
                let kind = l.as_ref().map(|l| l.kind.clone()).unwrap_or_default();
                let (owner, count, obj) = l.map(|l| (l.owner, l.count, l.object)).unwrap_or_default();
                let rlock = kind == "_thread.RLock";
                let what = if rlock { "RLock".to_string() } else { format!("lock of the {kind}") };
                let mut ev_parent = Vec::new();
                if let Some((pp, tid)) = in_parent {
                    ev_parent.push(format!("in the parent {pp}, pthread {owner:#x} is thread {tid}: it held the {what} when the child was forked"));
                }
                let object = if rlock {
                    format!("threading.RLock at {obj:#x} (lock {uaddr:#x}): rlock_owner = pthread {owner:#x}, rlock_count = {count}")
                } else {
                    format!("{kind} at {obj:#x} (lock {uaddr:#x}): owner = pthread {owner:#x}, inside a read or write when the child was forked")
                };
                (
                    vec![
                        object,
                        format!(
                            "that pthread's TID reads 0 in {}: not a thread of this process (glibc clears the other threads' TIDs at fork)",
                            t.pid
                        ),
                    ]
                    .into_iter()
                    .chain(ev_parent)
                    .collect(),
                    format!("acquire the {what} held since before fork by pthread {owner:#x}, not a thread of this process"),
                )
            }
            Some(BlockedOn::ThreadLock { uaddr } | BlockedOn::Mutex { uaddr, owner_tid: None })
                if ctx.g.providers(t).is_empty() && !joining =>
            {
                (
                    vec![
                        format!("lock at {uaddr:#x} is private to {} (futex without FUTEX_SHARED)", t.pid),
                        format!("{} has no other thread that could release it: it was already held when the process was forked", t.pid),
                    ],
                    format!("a lock at {uaddr:#x} held since before fork; no thread here can release it"),
                )
            }
            _ => continue,
        };
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: PatternId::ForkInheritedLock,
                summary: format!(
                    "Forked child {} blocks{} on a lock that another thread held when the child was forked; that thread does not exist in the child, so the lock is never released.",
                    t.pid,
                    at(&culprit)
                ),
                chain: vec![ctx.link_with(t, waits_on)],
                threads: vec![t],
                culprit,
                fix: "Don't fork while other threads may hold locks: start processes before threads, use the 'spawn' or 'forkserver' start method (multiprocessing.set_start_method('spawn')), or reinitialise the lock in the child with os.register_at_fork(after_in_child=...).",
                evidence,
            }
            .hang(),
        );
    }
    out
}
