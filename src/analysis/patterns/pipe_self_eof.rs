//! `pipe_self_eof`: a reader waits for EOF on a pipe whose write end its own process still
//! holds open. Fixture: pipe_self_eof.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in ctx.open_stuck() {
        let Some(BlockedOn::PipeRead { inode }) = ctx.blocked(t) else {
            continue;
        };
        if ctx.has_frame(t, "multiprocessing/queues.py", "get") || ctx.passive(t) {
            continue; // a Queue reader waits for messages, not EOF
        }
        let writers: Vec<_> = ctx
            .idx
            .pipe_holders(*inode)
            .iter()
            .filter(|h| h.write)
            .collect();
        let own: Vec<String> = writers
            .iter()
            .filter(|h| h.pid == t.pid)
            .map(|h| h.fd.to_string())
            .collect();
        if own.is_empty() || writers.iter().any(|h| h.pid != t.pid) {
            continue;
        }
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: PatternId::PipeSelfEof,
                summary: format!(
                    "{} waits for data or EOF on pipe:[{inode}], but its own process holds the only write end (fd {}), so EOF can never come.",
                    t.pid,
                    own.join(",")
                ),
                chain: vec![ctx.link_with(
                    t,
                    format!("read pipe:[{inode}]; the write end is this process's own fd {}", own.join(",")),
                )],
                threads: vec![t],
                culprit,
                fix: "Close your copy of the write end once the writer has it (e.g. w.close() in the parent right after p.start()); the reader then gets EOF when the writer exits.",
                evidence: vec![
                    ctx.pipe_fill(*inode),
                    format!("write end held only by {} itself (fd {})", t.pid, own.join(",")),
                ],
            }
            .hang(),
        );
    }
    out
}
