//! `ipc_cycle`: processes wait on each other through pipes, sockets or semaphores in a cycle
//! (both ends of a duplex Pipe in recv; JoinableQueue.join against a consumer in get). A cycle
//! needs at least two distinct resources: processes that only wait on one and the same pipe or
//! lock (fork children that each inherited the other's copy of a queue) are not a cycle of
//! waits. Fixtures: ipc_cycle.py, ipc_cycle_joinable.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::analysis::PatternId;
use crate::model::{Pid, ThreadRef};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    // Process-level edges P -> Q: a stuck thread of P waits on IPC (a resource) that only Q
    // could serve.
    let mut edges: HashMap<Pid, Vec<(Pid, ThreadRef, String)>> = HashMap::new();
    for t in ctx.open_stuck() {
        if ctx.passive(t) {
            continue;
        }
        let ipc = matches!(
            ctx.blocked(t),
            Some(
                BlockedOn::PipeRead { .. }
                    | BlockedOn::PipeWrite { .. }
                    | BlockedOn::SocketRead { .. }
                    | BlockedOn::SocketWrite { .. }
                    | BlockedOn::TcpRead { .. }
                    | BlockedOn::TcpWrite { .. }
                    | BlockedOn::Semaphore { .. }
                    | BlockedOn::ThreadLock { .. }
            )
        );
        if !ipc {
            continue;
        }
        let resource = ctx.blocked(t).map(resource_of).unwrap_or_default();
        for p in ctx.g.providers(t) {
            if p.pid != t.pid && !ctx.passive(*p) {
                let e = edges.entry(t.pid).or_default();
                if !e.iter().any(|(q, _, r)| *q == p.pid && *r == resource) {
                    e.push((p.pid, t, resource.clone()));
                }
            }
        }
    }
    // Start from the oldest process (the parent, whose line is the culprit): by start time,
    // since pids wrap around (pid_max 32768 here) and a child's pid can be the smaller.
    let mut starts: Vec<Pid> = edges.keys().copied().collect();
    // In a merged snapshot start times of different hosts do not compare: host first.
    starts.sort_by_key(|p| (p.host(), ctx.idx.process(*p).map(|p| p.start_ticks), *p));
    // One cycle per strongly connected group of waiting processes: a cycle's group is one
    // hang; another group (another host of a merge, or an independent hang) gets its own.
    let mut out = Vec::new();
    let mut used: HashSet<Pid> = HashSet::new();
    let mut backward: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for (p, v) in &edges {
        for (q, _, _) in v {
            backward.entry(*q).or_default().push(*p);
        }
    }
    let reach = |start: Pid, next: &dyn Fn(Pid) -> Vec<Pid>| -> HashSet<Pid> {
        let mut seen = HashSet::from_iter([start]);
        let mut todo = vec![start];
        while let Some(cur) = todo.pop() {
            for q in next(cur) {
                if seen.insert(q) {
                    todo.push(q);
                }
            }
        }
        seen
    };
    let group = |start: Pid| -> HashSet<Pid> {
        let fwd = reach(start, &|p| {
            edges
                .get(&p)
                .map(|v| v.iter().map(|(q, _, _)| *q).collect())
                .unwrap_or_default()
        });
        let back = reach(start, &|p| backward.get(&p).cloned().unwrap_or_default());
        fwd.intersection(&back).copied().collect()
    };
    'starts: for s in starts {
        if used.contains(&s) {
            continue;
        }
        // Depth-first search for a path back to s through two or more distinct resources.
        let mut stack: Vec<(Pid, Vec<(ThreadRef, String)>)> = vec![(s, vec![])];
        while let Some((cur, path)) = stack.pop() {
            for (q, t, r) in edges.get(&cur).cloned().unwrap_or_default() {
                let mut p2 = path.clone();
                p2.push((t, r));
                if q == s {
                    let mut resources: Vec<&String> = p2.iter().map(|(_, r)| r).collect();
                    resources.sort();
                    resources.dedup();
                    if resources.len() >= 2 {
                        let cycle: Vec<ThreadRef> = p2.iter().map(|(t, _)| *t).collect();
                        used.extend(group(s));
                        out.push(finding(ctx, &cycle));
                        continue 'starts;
                    }
                    continue;
                }
                if p2.len() < 8 && !p2.iter().any(|(x, _)| x.pid == q) && !used.contains(&q) {
                    stack.push((q, p2));
                }
            }
        }
    }
    out
}

/// The resource a wait is on, as a key: the pipe, the socket receive queue, the semaphore, the
/// lock word.
fn resource_of(b: &BlockedOn) -> String {
    match b {
        BlockedOn::PipeRead { inode } | BlockedOn::PipeWrite { inode, .. } => {
            format!("pipe:{inode}")
        }
        // A socket's receive queue: a reader waits on its own, a writer fills its peer's (the
        // two directions of a duplex Pipe are two resources).
        BlockedOn::SocketRead { inode, .. } => format!("socket:{inode}"),
        BlockedOn::SocketWrite { inode, peer } => format!("socket:{}", peer.unwrap_or(*inode)),
        BlockedOn::Semaphore { key } => format!("sem:{key}"),
        BlockedOn::ThreadLock { uaddr } => format!("lock:{uaddr:#x}"),
        other => crate::analysis::describe::short(other),
    }
}

fn finding(ctx: &Ctx<'_>, cycle: &[ThreadRef]) -> Finding {
    let culprit = cycle.iter().find_map(|t| ctx.code_line(*t));
    let names: Vec<String> = cycle.iter().map(|t| t.pid.to_string()).collect();
    let threads: Vec<ThreadRef> = cycle
        .iter()
        .flat_map(|t| {
            ctx.idx
                .threads_of(t.pid)
                .into_iter()
                .filter(|x| ctx.g.stuck(*x))
                .collect::<Vec<_>>()
        })
        .collect();
    Draft {
        pattern: PatternId::IpcCycle,
        summary: format!(
            "Processes {} wait on each other through pipes, sockets or semaphores in a cycle that nothing can break.",
            names.join(" -> ")
        ),
        chain: cycle.iter().map(|t| ctx.link(*t)).collect(),
        threads,
        culprit,
        fix: "Break the cycle: decide which side sends first (one side must not block in recv() before it has sent), or add timeouts; for JoinableQueue.join(), match every get() with task_done() and make sure the consumer is not waiting for items that never come.",
        evidence: cycle.iter().map(|t| format!("{}/{}: {}", t.pid, t.tid, ctx.line(*t))).collect(),
    }
    .hang()
}
