//! `store_key_never_set`: ranks wait on a key-value store (torch's TCPStore, or any server that
//! select()s over its TCP clients) for a key, the server's thread waits for any client to send,
//! and every client is waiting: the key is set by nobody. The roll call names the rank that is
//! elsewhere: the `set` its peers wait for belongs there. Fixture: multi_host/store_key.py.

use super::{Ctx, Draft};
use crate::analysis::rollcall;
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::ThreadRef;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    for hub in ctx.open_stuck() {
        let Some(BlockedOn::Any { of }) = ctx.blocked(hub) else {
            continue;
        };
        let reads = of
            .iter()
            .filter(|b| matches!(b, BlockedOn::TcpRead { .. }))
            .count();
        let server_loop = of
            .iter()
            .all(|b| matches!(b, BlockedOn::TcpRead { .. } | BlockedOn::Accept { .. }));
        if reads < 2 || !server_loop {
            continue;
        }
        // Clients: threads waiting for a reply that only the hub's process could send.
        let clients: Vec<ThreadRef> = ctx
            .open_stuck()
            .into_iter()
            .filter(|t| {
                *t != hub
                    && matches!(ctx.blocked(*t), Some(BlockedOn::TcpRead { .. }))
                    && ctx.g.providers(*t).contains(&hub)
            })
            .collect();
        if clients.len() < 2 {
            continue;
        }
        return vec![finding(ctx, hub, &clients)];
    }
    Vec::new()
}

fn finding(ctx: &Ctx<'_>, hub: ThreadRef, clients: &[ThreadRef]) -> Finding {
    let rc = rollcall::roll_call(ctx.idx, ctx.g);
    // The rank elsewhere: a member of a group smaller than the majority, if a client; its
    // line is where its peers' key should have been set.
    let outlier = rc.as_ref().and_then(|rc| {
        let (first, rest) = rc.groups.split_first()?;
        if rest.iter().any(|g| g.members.len() >= first.members.len()) {
            return None;
        }
        rest.iter().find_map(|g| {
            g.members.iter().find_map(|m| {
                let c = clients.iter().find(|c| c.pid == m.pid)?;
                Some((*c, g.line.clone()))
            })
        })
    });
    let first = outlier.as_ref().map(|(c, _)| *c).unwrap_or(clients[0]);
    let culprit = outlier
        .and_then(|(_, line)| line)
        .or_else(|| ctx.code_line(first));
    let mut pids: Vec<String> = clients.iter().map(|c| c.pid.to_string()).collect();
    pids.dedup();
    let call = rc.as_ref().map(rollcall::sentence);
    let mut evidence: Vec<String> = clients
        .iter()
        .chain(std::iter::once(&hub))
        .map(|t| format!("{}/{}: {}", t.pid, t.tid, ctx.line(*t)))
        .collect();
    if let Some(s) = &call {
        evidence.push(format!("roll call: {s}"));
    }
    let mut threads = clients.to_vec();
    threads.push(hub);
    Draft {
        pattern: PatternId::StoreKeyNeverSet,
        summary: format!(
            "{} wait on the key-value server in {} (thread {}) for keys no client will set: the server waits for any client to send, and every client waits.{}",
            pids.join(", "),
            hub.pid,
            hub.tid,
            call.map(|s| format!(" {s}.")).unwrap_or_default()
        ),
        chain: vec![ctx.link(first), ctx.link(hub)],
        threads,
        culprit,
        fix: "Find who should have set the awaited key: the rank elsewhere in the roll call did not reach its set() (or waits for a key its peers set only afterwards). Order set() before get()/wait() on every rank, and give store waits a timeout (TCPStore(timeout=...), store.wait(keys, timeout)).",
        evidence,
    }
    .hang()
}
