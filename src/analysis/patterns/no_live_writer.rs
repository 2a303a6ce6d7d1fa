//! `no_live_writer`: a reader waits on a queue or pipe that no live, unstuck thread will ever
//! write to, although every process is alive (a sentinel never sent, fewer sentinels than
//! consumers). Fixture: no_live_writer.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen_pipes = std::collections::HashSet::new();
    let open = ctx.open_stuck();
    let mut readers_of: std::collections::HashMap<crate::model::Inode, Vec<_>> =
        std::collections::HashMap::new();
    for r in &open {
        if let Some(BlockedOn::PipeRead { inode }) = ctx.blocked(*r) {
            readers_of.entry(*inode).or_default().push(*r);
        }
    }
    for t in open.iter().copied() {
        let Some(BlockedOn::PipeRead { inode }) = ctx.blocked(t) else {
            continue;
        };
        if ctx.passive(t) || seen_pipes.contains(inode) {
            continue;
        }
        let writers: Vec<_> = ctx
            .idx
            .pipe_holders(*inode)
            .iter()
            .filter(|h| h.write)
            .collect();
        if writers.is_empty() {
            continue;
        }
        seen_pipes.insert(*inode);
        let readers: Vec<_> = readers_of.get(inode).cloned().unwrap_or_default();
        let mut writer_pids: Vec<_> = writers.iter().map(|h| h.pid).collect();
        writer_pids.dedup();
        // The writer most likely to owe the message: a holder that is not itself reading.
        let owing = writer_pids
            .iter()
            .filter(|p| !readers.iter().any(|r| r.pid == **p))
            .map(|p| ctx.main_of(*p))
            .find(|m| ctx.idx.thread(*m).is_some());
        let culprit = owing
            .and_then(|m| ctx.code_line(m))
            .or_else(|| ctx.code_line(t));
        let mut chain = vec![ctx.link_with(t, format!("read pipe:[{inode}] (empty)"))];
        if let Some(m) = owing {
            chain.push(ctx.link(m));
        }
        let mut threads = readers.clone();
        threads.extend(owing);
        out.push(
            Draft {
                pattern: PatternId::NoLiveWriter,
                summary: format!(
                    "{} wait{} for data on pipe:[{inode}] that no live thread will ever write: every holder of its write end ({}) is itself stuck.",
                    readers.iter().map(|r| r.pid.to_string()).collect::<Vec<_>>().join(", "),
                    if readers.len() == 1 { "s" } else { "" },
                    writer_pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                ),
                chain,
                threads,
                culprit,
                fix: "Make sure every reader gets its message: send one sentinel per consumer (for _ in consumers: q.put(None)), or end consumers with an Event; join consumers only after that.",
                evidence: std::iter::once(ctx.pipe_fill(*inode))
                    .chain(writer_pids.iter().map(|p| format!("write end holder {}", ctx.brief(*p))))
                    .collect(),
            }
            .hang(),
        );
    }
    out
}
