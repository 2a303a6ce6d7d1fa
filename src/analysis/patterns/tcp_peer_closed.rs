//! `tcp_peer_closed`: a thread waits for something only its own process could provide (a
//! queue, an event, a future), and the process holds a TCP connection that the peer closed or
//! reset and that none of its threads reads any more: the reply would have come over it and
//! never will (an RPC client whose reader thread ended at EOF without failing the pending
//! calls). The peer's host, when it sent a report, says what happened to it. Fixture:
//! multi_host/dead_peer.py.

use super::{Ctx, Draft};
use crate::analysis::tcp;
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::{Inode, TcpState};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in ctx.open_stuck() {
        if ctx.passive(t) || ctx.g.providers(t).iter().any(|p| p.pid != t.pid) {
            continue;
        }
        // Waits that only this process can end; not the sockets and pipes of other detectors.
        if !matches!(
            ctx.blocked(t),
            Some(
                BlockedOn::ThreadLock { .. }
                    | BlockedOn::ParkingLot { .. }
                    | BlockedOn::Mutex { .. }
                    | BlockedOn::Semaphore { .. }
            )
        ) {
            continue;
        }
        let Some(p) = ctx.idx.process(t.pid) else {
            continue;
        };
        let read = |inode: Inode| {
            ctx.idx
                .threads_of(t.pid)
                .into_iter()
                .any(|x| match ctx.blocked(x) {
                    Some(BlockedOn::TcpRead { inode: i, .. }) => *i == inode,
                    Some(BlockedOn::Any { of }) => of
                        .iter()
                        .any(|b| matches!(b, BlockedOn::TcpRead { inode: i, .. } if *i == inode)),
                    _ => false,
                })
        };
        let dead: Vec<String> = p
            .fds
            .iter()
            .filter_map(|f| {
                let ep = f.tcp()?;
                let closed = matches!(ep.state, TcpState::CloseWait | TcpState::Close);
                let inode = f.socket_inode()?;
                (closed && !read(inode)).then(|| tcp::closed_words(ctx.idx, p, f.fd, ep))
            })
            .collect();
        if dead.is_empty() {
            continue;
        }
        let mut evidence = vec![format!("{}/{}: {}", t.pid, t.tid, ctx.line(t))];
        evidence.extend(dead);
        out.push(
            Draft {
                pattern: PatternId::TcpPeerClosed,
                summary: format!(
                    "{} of {} waits for something only its own threads could provide, while the peer of its TCP connection has closed it and no thread reads it: the reply will never come.",
                    ctx.name(t),
                    t.pid
                ),
                chain: vec![ctx.link(t)],
                threads: vec![t],
                culprit: ctx.code_line(t),
                fix: "Fail pending calls when the connection ends: the thread that reads the socket must, at EOF or on an error, wake every waiter with an exception (set_exception on the futures, put a sentinel in the queue); give waits a timeout, and enable TCP keepalive for peers that vanish without a FIN.",
                evidence,
            }
            .hang(),
        );
    }
    out
}
