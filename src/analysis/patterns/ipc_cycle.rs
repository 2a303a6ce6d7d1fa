//! `ipc_cycle`: processes wait on each other through pipes, sockets or semaphores in a cycle
//! (both ends of a duplex Pipe in recv; JoinableQueue.join against a consumer in get).
//! Fixtures: ipc_cycle.py, ipc_cycle_joinable.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding};
use crate::model::{Pid, ThreadRef};
use std::collections::{HashMap, HashSet};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    // Process-level edges P -> Q: a stuck thread of P waits on IPC that only Q could serve.
    let mut edges: HashMap<Pid, Vec<(Pid, ThreadRef)>> = HashMap::new();
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
        for p in ctx.g.providers(t) {
            if p.pid != t.pid && !ctx.passive(*p) {
                let e = edges.entry(t.pid).or_default();
                if !e.iter().any(|(q, _)| *q == p.pid) {
                    e.push((p.pid, t));
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
        for (q, _) in v {
            backward.entry(*q).or_default().push(*p);
        }
    }
    let reach = |start: Pid, next: &dyn Fn(Pid) -> Vec<Pid>| -> HashSet<Pid> {
        let mut seen = HashSet::from([start]);
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
                .map(|v| v.iter().map(|(q, _)| *q).collect())
                .unwrap_or_default()
        });
        let back = reach(start, &|p| backward.get(&p).cloned().unwrap_or_default());
        fwd.intersection(&back).copied().collect()
    };
    'starts: for s in starts {
        if used.contains(&s) {
            continue;
        }
        // Depth-first search for a path back to s.
        let mut stack = vec![(s, vec![])];
        while let Some((cur, path)) = stack.pop() {
            for (q, t) in edges.get(&cur).cloned().unwrap_or_default() {
                let mut p2: Vec<ThreadRef> = path.clone();
                p2.push(t);
                // A cycle needs two distinct resources: waiters that all wait on the same one
                // (a barrier whose last party died) wait on it, not on each other.
                if q == s && distinct_waits(ctx, &p2) >= 2 {
                    used.extend(group(s));
                    out.push(finding(ctx, &p2));
                    continue 'starts;
                }
                if p2.len() < 8 && !p2.iter().any(|x| x.pid == q) && !used.contains(&q) {
                    stack.push((q, p2));
                }
            }
        }
    }
    out
}

fn distinct_waits(ctx: &Ctx<'_>, cycle: &[ThreadRef]) -> usize {
    let mut waits: Vec<&BlockedOn> = cycle.iter().filter_map(|t| ctx.blocked(*t)).collect();
    waits.dedup();
    let mut distinct: Vec<&BlockedOn> = Vec::new();
    for w in waits {
        if !distinct.contains(&w) {
            distinct.push(w);
        }
    }
    distinct.len()
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
        pattern: "ipc_cycle",
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
