//! `undrained_queue_at_exit`: a process is stuck at exit joining its Queue feeder thread, which
//! is blocked writing into a pipe that no live process reads or will read.
//! Fixtures: undrained_queue_at_exit.py, undrained_queue_main_exit.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::ThreadRef;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in ctx.open_stuck() {
        let joining = ctx.has_frame(m, "multiprocessing/queues.py", "_finalize_join")
            || ctx.has_frame(m, "multiprocessing/util.py", "_exit_function");
        if !joining {
            continue;
        }
        let Some(p) = ctx.idx.process(m.pid) else {
            continue;
        };
        let feeder = p.threads.iter().find_map(|t| {
            let r = ThreadRef {
                pid: m.pid,
                tid: t.tid,
            };
            match ctx.blocked(r) {
                Some(BlockedOn::PipeWrite { inode, pending }) if ctx.g.stuck(r) && r != m => {
                    Some((r, *inode, *pending))
                }
                _ => None,
            }
        });
        let Some((f, inode, pending)) = feeder else {
            continue;
        };
        if ctx.explained.contains(&f) {
            continue;
        }
        // Only when no other live process holds the read end: otherwise that process could
        // read, and this one is a dependent of whatever keeps it from reading.
        if ctx
            .idx
            .pipe_holders(inode)
            .iter()
            .any(|h| h.read && h.pid != m.pid)
        {
            continue;
        }
        let readers: Vec<String> = ctx
            .idx
            .pipe_holders(inode)
            .iter()
            .filter(|h| h.read)
            .map(|h| {
                if h.pid == m.pid {
                    format!("{} itself (fd {}), stuck at exit", h.pid, h.fd)
                } else {
                    format!("{} (fd {})", ctx.brief(h.pid), h.fd)
                }
            })
            .collect();
        // Whoever waits for this process is a dependent; its line is where the user looks.
        let waiter = ctx.g.order.iter().copied().find(
            |t| matches!(ctx.blocked(*t), Some(BlockedOn::Child { pid: Some(c), .. }) if *c == m.pid),
        );
        let culprit = waiter.and_then(|w| ctx.code_line(w));
        let mut chain = Vec::new();
        if let Some(w) = waiter {
            chain.push(ctx.link_with(w, format!("wait4({}): waits for it to exit", m.pid)));
        }
        chain.push(ctx.link_with(m, format!("joins its {} at exit", ctx.name(f))));
        chain.push(ctx.link_with(
            f,
            format!("write {pending} B to pipe:[{inode}] (full); no live process will read it"),
        ));
        out.push(
            Draft {
                pattern: PatternId::UndrainedQueueAtExit,
                summary: format!(
                    "{} is stuck at exit: it joins its Queue feeder thread, which is blocked writing to pipe:[{inode}] that no live process will read.",
                    ctx.idx.process(m.pid).map(|p| p.label()).unwrap_or_default()
                ),
                chain,
                threads: ctx.idx.threads_of(m.pid),
                culprit,
                fix: "Consume everything put on a multiprocessing.Queue before the putting process exits, or call q.cancel_join_thread() in it (buffered data is then dropped). A queue used within one process should be a queue.Queue.",
                evidence: vec![
                    ctx.pipe_fill(inode),
                    format!("read end held by: {}", if readers.is_empty() { "nobody".into() } else { readers.join("; ") }),
                    format!("{} is inside multiprocessing's exit handler (Queue._finalize_join)", m.tid),
                ],
            }
            .hang(),
        );
    }
    out
}
