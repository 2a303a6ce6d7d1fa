//! `peer_exited`: a thread waits on a queue, pipe or semaphore for a process that has already
//! exited without delivering (a producer that crashed before its sentinel, a consumer gone while
//! the bounded queue is full): no live process but the waiter's own could serve it, and a
//! process has exited (a zombie, a recorded death, or a child's sentinel pipe at EOF). Other
//! processes blocked on the very same resource (a barrier's other parties) are co-waiters,
//! not peers. Fixtures: peer_exited.py, peer_exited_bounded.py, barrier_party_died.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let exited = ctx.idx.exited();
    if exited.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut done: Vec<crate::model::ThreadRef> = Vec::new();
    let stuck = ctx.open_stuck();
    for &t in &stuck {
        if ctx.passive(t) || done.contains(&t) {
            continue;
        }
        let what = match ctx.blocked(t) {
            Some(
                b @ (BlockedOn::PipeRead { .. }
                | BlockedOn::PipeWrite { .. }
                | BlockedOn::SocketRead { .. }
                | BlockedOn::Semaphore { .. }),
            ) => crate::analysis::describe::short(b),
            _ => continue,
        };
        // Only a peer that is gone could have served it: no other live process provides,
        // except co-waiters on the very same resource (the other parties of a barrier).
        let me = ctx.blocked(t);
        if ctx
            .g
            .providers(t)
            .iter()
            .any(|p| p.pid != t.pid && ctx.blocked(*p) != me)
        {
            continue;
        }
        // Co-waiters on the same resource belong to the same finding.
        let co: Vec<crate::model::ThreadRef> = stuck
            .iter()
            .copied()
            .filter(|x| *x != t && !ctx.passive(*x) && ctx.blocked(*x) == me)
            .collect();
        done.push(t);
        done.extend(co.iter().copied());
        let who = if co.is_empty() {
            format!("{} waits", t.pid)
        } else {
            let mut pids: Vec<String> = co.iter().map(|x| x.pid.to_string()).collect();
            pids.dedup();
            format!("{} and {} (its co-waiters) wait", t.pid, pids.join(", "))
        };
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: PatternId::PeerExited,
                summary: format!(
                    "{who} ({what}) for a peer that has already exited without delivering: {}.",
                    exited.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>().join("; ")
                ),
                chain: vec![ctx.link(t)],
                threads: std::iter::once(t).chain(co.iter().copied()).collect(),
                culprit,
                fix: "Never wait forever on a peer that can die: use q.get(timeout=...) and check p.is_alive()/p.exitcode, or multiprocessing.connection.wait([q._reader, p.sentinel]); send the sentinel from a finally: block in the producer.",
                evidence: std::iter::once(ctx.line(t))
                    .chain(co.iter().map(|x| format!("{}/{} waits on the same: {}", x.pid, x.tid, ctx.line(*x))))
                    .chain(exited.iter().map(|(_, s)| s.clone()))
                    .collect(),
            }
            .hang(),
        );
    }
    out
}
