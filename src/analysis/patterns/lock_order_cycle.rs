//! `lock_order_cycle`: two or more threads each hold a lock the next one needs (AB-BA), across
//! processes (multiprocessing locks, holders from the SemLock scan) or within one (pthread
//! mutex owners; threading locks when no other thread could release them).
//! Fixtures: lock_order_cycle.py, lock_order_cycle_threads.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::ThreadRef;
use foldhash::{HashMap, HashSet, HashSetExt};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(across_processes(ctx));
    if out.is_empty() {
        out.extend(within_process(ctx));
    }
    out
}

/// The threads holding what `t` waits for, when a lock's holder is known.
fn holders_of(ctx: &Ctx<'_>, t: ThreadRef) -> Option<Vec<ThreadRef>> {
    match ctx.blocked(t)? {
        BlockedOn::Semaphore { key } => {
            let h = ctx.idx.semaphore(key)?.holders.as_ref()?;
            if !h.iter().any(|s| s.maxvalue == 1) {
                return None;
            }
            Some(
                h.iter()
                    .filter(|s| s.count > 0)
                    .flat_map(|s| match s.last_tid {
                        Some(tid) => vec![ThreadRef {
                            pid: s.pid,
                            tid: crate::model::Tid(tid),
                        }],
                        None => ctx.idx.threads_of(s.pid),
                    })
                    .collect(),
            )
        }
        BlockedOn::Mutex {
            owner_tid: Some(o), ..
        } => Some(vec![ThreadRef {
            pid: t.pid,
            tid: crate::model::Tid(*o),
        }]),
        BlockedOn::ThreadLock { .. } => {
            let l = ctx.idx.lock_object(t)?;
            let o = l.owner_tid.filter(|_| l.owner != 0)?;
            Some(vec![ThreadRef {
                pid: t.pid,
                tid: crate::model::Tid(o),
            }])
        }
        _ => None,
    }
}

fn across_processes(ctx: &Ctx<'_>) -> Vec<Finding> {
    let stuck_list = ctx.open_stuck();
    let stuck: HashSet<ThreadRef> = stuck_list.iter().copied().collect();
    // Each thread is walked from once: a walk that reaches a thread walked before can only
    // find a cycle already looked for.
    let mut walked: HashSet<ThreadRef> = HashSet::new();
    // Every disjoint cycle (a merge of several hosts can hold one per host).
    let mut out: Vec<Finding> = Vec::new();
    for start in &stuck_list {
        if walked.contains(start) {
            continue;
        }
        let mut path = vec![*start];
        let mut on_path: HashMap<ThreadRef, usize> = HashMap::from_iter([(*start, 0)]);
        let mut cur = *start;
        while let Some(next) =
            holders_of(ctx, cur).and_then(|hs| hs.into_iter().find(|h| stuck.contains(h)))
        {
            if let Some(i) = on_path.get(&next).copied() {
                let cycle = path[i..].to_vec();
                if cycle.len() < 2 || out.iter().any(|f| f.threads.contains(&cycle[0])) {
                    break;
                }
                out.push(finding(ctx, &cycle, "each holds a lock the next one waits for (the holders come from the SemLock objects' count and last_tid, or the mutex __owner)"));
                break;
            }
            if walked.contains(&next) {
                break;
            }
            on_path.insert(next, path.len());
            path.push(next);
            cur = next;
        }
        walked.extend(path);
    }
    out
}

fn within_process(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut pids: Vec<_> = ctx.open_stuck().iter().map(|t| t.pid).collect();
    pids.dedup();
    for pid in pids {
        let all = ctx.idx.threads_of(pid);
        // Every thread stuck, but for periodic ones (which release nothing without evidence).
        if all
            .iter()
            .any(|t| !ctx.g.stuck(*t) && !ctx.g.housekeeping.contains(t))
        {
            continue;
        }
        // Threads blocked acquiring a private lock directly from user code.
        let mut lockers: Vec<(ThreadRef, u64)> = all
            .iter()
            .filter_map(|t| match ctx.blocked(*t) {
                Some(BlockedOn::ThreadLock { uaddr })
                    if ctx
                        .py(*t)
                        .and_then(|p| p.frames.first())
                        .is_some_and(|f| f.is_user_code()) =>
                {
                    Some((*t, *uaddr))
                }
                _ => None,
            })
            .collect();
        lockers.dedup_by_key(|(_, u)| *u);
        if lockers.len() < 2 {
            continue;
        }
        let cycle: Vec<ThreadRef> = lockers.iter().map(|(t, _)| *t).collect();
        out.push(finding(ctx, &cycle, "each waits for a different lock of this process and every thread that could release them is itself stuck, so each holds what another waits for"));
    }
    out
}

fn finding(ctx: &Ctx<'_>, cycle: &[ThreadRef], why: &str) -> Finding {
    let culprit = cycle.iter().find_map(|t| ctx.code_line(*t));
    let chain = cycle
        .iter()
        .map(|t| {
            ctx.link_with(
                *t,
                format!(
                    "{}{}",
                    ctx.link(*t).waits_on,
                    ctx.code_line(*t)
                        .map(|c| format!(" at line {}", c.line))
                        .unwrap_or_default()
                ),
            )
        })
        .collect();
    let mut pids: Vec<_> = cycle.iter().map(|t| t.pid.to_string()).collect();
    pids.dedup();
    Draft {
        pattern: PatternId::LockOrderCycle,
        summary: format!(
            "Lock-order deadlock: {} threads ({}) {}.",
            cycle.len(),
            cycle.iter().map(|t| format!("{}/{}", t.pid, t.tid)).collect::<Vec<_>>().join(", "),
            if pids.len() > 1 { "in different processes each hold a lock the next one needs" } else { "each hold a lock the next one needs" }
        ),
        chain,
        threads: cycle.to_vec(),
        culprit,
        fix: "Take locks in one global order everywhere (always A before B), or take them together (acquire with a timeout and back off, or use a single lock).",
        evidence: std::iter::once(why.to_string()).chain(cycle.iter().map(|t| format!("{}/{}: {}", t.pid, t.tid, ctx.line(*t)))).collect(),
    }
    .hang()
}
