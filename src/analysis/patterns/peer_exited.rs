//! `peer_exited`: a thread waits on a queue, pipe or semaphore for a process that has already
//! exited without delivering (a producer that crashed before its sentinel, a consumer gone while
//! the bounded queue is full): no live process but the waiter's own could serve it, and a
//! process has exited (a zombie or a recorded death). Fixtures: peer_exited.py,
//! peer_exited_bounded.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let exited = ctx.idx.exited();
    if exited.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for t in ctx.open_stuck() {
        if ctx.passive(t) {
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
        // Only a peer that is gone could have served it: no other live process provides.
        if ctx.g.providers(t).iter().any(|p| p.pid != t.pid) {
            continue;
        }
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: "peer_exited",
                summary: format!(
                    "{} waits ({what}) for a peer that has already exited without delivering: {}.",
                    t.pid,
                    exited.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>().join("; ")
                ),
                chain: vec![ctx.link(t)],
                threads: vec![t],
                culprit,
                fix: "Never wait forever on a peer that can die: use q.get(timeout=...) and check p.is_alive()/p.exitcode, or multiprocessing.connection.wait([q._reader, p.sentinel]); send the sentinel from a finally: block in the producer.",
                evidence: std::iter::once(ctx.line(t))
                    .chain(exited.iter().map(|(_, s)| s.clone()))
                    .collect(),
            }
            .hang(),
        );
    }
    out
}
