//! `join_before_drain`: A waits for child B to exit (Process.join, waitpid, Pool join,
//! subprocess wait) while B cannot exit: a thread of B (its Queue feeder, or its own write) is
//! blocked on a full pipe that only A would read, or waits (through stuck threads: a sibling's
//! feeder holding the queue's write lock) for such a writer. Fixtures: join_before_drain*.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::{Inode, ThreadRef};
use foldhash::HashMap;
use std::collections::VecDeque;

/// A stuck writer on a full pipe whose read end `a`'s process holds, reached from `b`'s threads
/// over stuck providers (outside `a`'s process), with the path to it (starting in `b`).
fn writer_for(
    ctx: &Ctx<'_>,
    a: ThreadRef,
    b: crate::model::Pid,
) -> Option<(Vec<ThreadRef>, Inode, u64)> {
    let starts = ctx.idx.threads_of(b);
    let mut parent: HashMap<ThreadRef, Option<ThreadRef>> =
        starts.iter().map(|t| (*t, None)).collect();
    let mut queue: VecDeque<ThreadRef> = starts.into_iter().collect();
    while let Some(x) = queue.pop_front() {
        if let Some(BlockedOn::PipeWrite { inode, pending }) = ctx.blocked(x) {
            let a_reads = ctx
                .idx
                .pipe_holders(*inode)
                .iter()
                .any(|h| h.read && h.pid == a.pid);
            if ctx.g.stuck(x) && a_reads {
                let mut path = vec![x];
                let mut cur = x;
                while let Some(Some(p)) = parent.get(&cur) {
                    path.push(*p);
                    cur = *p;
                }
                path.reverse();
                return Some((path, *inode, *pending));
            }
        }
        if !ctx.g.stuck(x) {
            continue;
        }
        for p in ctx.g.providers(x) {
            if p.pid != a.pid && ctx.g.stuck(*p) && !parent.contains_key(p) {
                parent.insert(*p, Some(x));
                queue.push_back(*p);
            }
        }
    }
    None
}

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in ctx.open_stuck() {
        let Some(joined @ BlockedOn::Child { pid: Some(b), .. }) = ctx.blocked(a) else {
            continue;
        };
        // `wait4(B)`, or under forkserver `join(B) via sentinel pipe:[…]`.
        let joins = crate::analysis::describe::short(joined);
        let b = *b;
        if ctx.idx.process(b).is_none() {
            continue;
        }
        let Some((path, inode, pending)) = writer_for(ctx, a, b) else {
            continue;
        };
        let Some(w) = path.last().copied() else {
            continue;
        };
        let read_fds: Vec<String> = ctx
            .idx
            .pipe_holders(inode)
            .iter()
            .filter(|h| h.read && h.pid == a.pid)
            .map(|h| h.fd.to_string())
            .collect();
        let b_main = ctx.main_of(b);
        let mut chain = vec![ctx.link_with(a, format!("{joins}: waits for child {b} to exit"))];
        if path.first() != Some(&b_main) && ctx.idx.thread(b_main).is_some() {
            let what = if ctx.has_frame(b_main, "multiprocessing/queues.py", "_finalize_join") {
                format!("joins its {} at exit", ctx.name(path[0]))
            } else {
                ctx.link(b_main).waits_on
            };
            chain.push(ctx.link_with(b_main, what));
        }
        for x in &path[..path.len() - 1] {
            chain.push(ctx.link(*x));
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
        let feeder = |t: ThreadRef| ctx.has_frame(t, "multiprocessing/queues.py", "_feed");
        let who = |t: ThreadRef| {
            if feeder(t) {
                "Queue feeder thread".to_string()
            } else {
                format!("thread {}", ctx.name(t))
            }
        };
        let why = if w.pid == b {
            format!("its {} is blocked writing to pipe:[{inode}]", who(w))
        } else {
            format!(
                "its {} ({}) waits on the {} of {}, which is blocked writing to pipe:[{inode}]",
                who(path[0]),
                ctx.link(path[0]).waits_on,
                who(w),
                w.pid
            )
        };
        let mut threads: Vec<_> = std::iter::once(a).chain(ctx.idx.threads_of(b)).collect();
        if w.pid != b {
            threads.extend(path.iter().copied());
        }
        let mut evidence = vec![
            ctx.pipe_fill(inode),
            format!(
                "{} is blocked in write({pending} bytes) on pipe:[{inode}]",
                w.tid
            ),
            format!(
                "{} holds the read end as fd {} and is blocked in {joins}",
                a.pid,
                read_fds.join(",")
            ),
        ];
        if w.pid != b {
            evidence.extend(
                path[..path.len() - 1]
                    .iter()
                    .map(|x| format!("{}/{}: {}", x.pid, x.tid, ctx.line(*x))),
            );
        }
        out.push(
            Draft {
                pattern: PatternId::JoinBeforeDrain,
                summary: format!(
                    "{} waits{} for child {b} to exit, but {b} cannot exit: {why}, which only {} would read.",
                    a.pid,
                    at(&culprit),
                    a.pid
                ),
                chain,
                threads,
                culprit,
                fix: "Drain before you join: read everything the child puts (q.get() until a sentinel) and only then call p.join(). If the data may be dropped, call q.cancel_join_thread() in the child; for subprocess pipes use communicate().",
                evidence,
            }
            .hang(),
        );
    }
    out
}
