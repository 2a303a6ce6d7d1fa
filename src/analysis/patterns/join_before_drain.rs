//! `join_before_drain`: A waits for child B to exit (Process.join, waitpid, Pool join,
//! subprocess wait) while B cannot exit: a thread of B (its Queue feeder, or its own write) is
//! blocked on a full pipe that only A would read. Fixtures: join_before_drain*.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in ctx.open_stuck() {
        let Some(joined @ BlockedOn::Child { pid: Some(b), .. }) = ctx.blocked(a) else {
            continue;
        };
        // `wait4(B)`, or under forkserver `join(B) via sentinel pipe:[…]`.
        let joins = crate::analysis::describe::short(joined);
        let Some(child) = ctx.idx.process(*b) else {
            continue;
        };
        // A writer in B blocked on a pipe whose read end A's process holds.
        let writer = child.threads.iter().find_map(|t| {
            let r = crate::model::ThreadRef {
                pid: *b,
                tid: t.tid,
            };
            match ctx.blocked(r) {
                Some(BlockedOn::PipeWrite { inode, pending })
                    if ctx.g.stuck(r)
                        && ctx
                            .idx
                            .pipe_holders(*inode)
                            .iter()
                            .any(|h| h.read && h.pid == a.pid) =>
                {
                    Some((r, *inode, *pending))
                }
                _ => None,
            }
        });
        let Some((w, inode, pending)) = writer else {
            continue;
        };
        let read_fds: Vec<String> = ctx
            .idx
            .pipe_holders(inode)
            .iter()
            .filter(|h| h.read && h.pid == a.pid)
            .map(|h| h.fd.to_string())
            .collect();
        let b_main = ctx.main_of(*b);
        let mut chain = vec![ctx.link_with(a, format!("{joins}: waits for child {b} to exit"))];
        if b_main != w && ctx.idx.thread(b_main).is_some() {
            let what = if ctx.has_frame(b_main, "multiprocessing/queues.py", "_finalize_join") {
                format!("joins its {} at exit", ctx.name(w))
            } else {
                ctx.link(b_main).waits_on
            };
            chain.push(ctx.link_with(b_main, what));
        }
        chain.push(ctx.link_with(
            w,
            format!(
                "write {pending} B to pipe:[{inode}] (full); only {} reads it, via fd {}",
                a.pid,
                read_fds.join(",")
            ),
        ));
        let culprit = ctx.code_line(a);
        let feeder = ctx.has_frame(w, "multiprocessing/queues.py", "_feed");
        let threads: Vec<_> = std::iter::once(a).chain(ctx.idx.threads_of(*b)).collect();
        out.push(
            Draft {
                pattern: "join_before_drain",
                summary: format!(
                    "{} waits{} for child {b} to exit, but {b} cannot exit: its {} is blocked writing to pipe:[{inode}], which only {} would read.",
                    a.pid,
                    at(&culprit),
                    if feeder { "Queue feeder thread".to_string() } else { format!("thread {}", ctx.name(w)) },
                    a.pid
                ),
                chain,
                threads,
                culprit,
                fix: "Drain before you join: read everything the child puts (q.get() until a sentinel) and only then call p.join(). If the data may be dropped, call q.cancel_join_thread() in the child; for subprocess pipes use communicate().",
                evidence: vec![
                    ctx.pipe_fill(inode),
                    format!("{} is blocked in write({pending} bytes) on pipe:[{inode}]", w.tid),
                    format!("{} holds the read end as fd {} and is blocked in {joins}", a.pid, read_fds.join(",")),
                ],
            }
            .hang(),
        );
    }
    out
}
