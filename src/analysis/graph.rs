//! The wait-for graph and the stuck-set fixpoint.
//!
//! Each thread waits on a resource; each resource has *providers*, the threads that could
//! plausibly release it (see [`super::providers`]). Seeds are threads that can progress on
//! their own: running, waiting on something outside the tree, seen to move between looks
//! ([`super::progress`]), or in a long timed wait not seen to wake (it may still go on to
//! provide). Periodic threads (seen to wake and go back to the same wait, or a known library
//! loop) can progress, but provide nothing without positive evidence. A thread can progress if
//! a provider can; the least fixpoint, a worklist over reverse provider edges, leaves the
//! threads that never can.

use super::blocked;
use super::index::Index;
use super::progress::{self, Motion};
use super::providers::{self, Need};
use super::types::{BlockedOn, Progress};
use crate::model::{SyscallState, ThreadRef};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;

pub struct Graph {
    /// Threads in snapshot order.
    pub order: Vec<ThreadRef>,
    pub blocked: HashMap<ThreadRef, BlockedOn>,
    pub providers: HashMap<ThreadRef, Vec<ThreadRef>>,
    pub progress: HashMap<ThreadRef, Progress>,
    pub because: HashMap<ThreadRef, String>,
    /// Periodic threads: seen to wake and go back to the same timed wait at the same line, or
    /// a known library timer or monitor loop. Never progress for others.
    pub housekeeping: HashSet<ThreadRef>,
    pub passive: HashSet<ThreadRef>,
    /// What each periodic (or not yet confirmed periodic) thread does, in words:
    /// `heartbeat, sleeping at app.py:40`.
    pub periodic: HashMap<ThreadRef, String>,
    /// Periodic threads left out of a waiter's providers for lack of evidence, with what they
    /// are assumed not to do (`read pipe:[6692]`).
    pub assumed: HashMap<ThreadRef, Vec<(ThreadRef, String)>>,
    /// Timed waiters not seen to wake yet whose exclusion would change the verdict, with the
    /// time left in their wait when known: looking again until they wake settles it.
    pub undecided: Vec<(ThreadRef, Option<u64>)>,
}

impl Graph {
    pub fn stuck(&self, t: ThreadRef) -> bool {
        self.progress.get(&t) == Some(&Progress::Stuck)
    }
    pub fn providers(&self, t: ThreadRef) -> &[ThreadRef] {
        self.providers.get(&t).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn blocked(&self, t: ThreadRef) -> Option<&BlockedOn> {
        self.blocked.get(&t)
    }
    /// The periodic threads assumed not to provide what `t` waits for.
    pub fn assumed(&self, t: ThreadRef) -> &[(ThreadRef, String)] {
        self.assumed.get(&t).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Providers, seeds and exclusions for one assumption about periodic threads.
struct Wiring {
    providers: HashMap<ThreadRef, Vec<ThreadRef>>,
    assumed: HashMap<ThreadRef, Vec<(ThreadRef, String)>>,
    seeds: HashMap<ThreadRef, String>,
}

pub fn build(idx: &Index<'_>) -> Graph {
    let snap = idx.snap;
    let stopped = snap.max_stop_us.is_some();
    let pipes = progress::moved_pipes(snap);
    let appeared = progress::appeared(snap);
    let mut g = Graph {
        order: Vec::new(),
        blocked: HashMap::new(),
        providers: HashMap::new(),
        progress: HashMap::new(),
        because: HashMap::new(),
        housekeeping: HashSet::new(),
        passive: HashSet::new(),
        periodic: HashMap::new(),
        assumed: HashMap::new(),
        undecided: Vec::new(),
    };
    let mut motion: HashMap<ThreadRef, Motion> = HashMap::new();
    for p in &snap.processes {
        for t in &p.threads {
            let r = ThreadRef {
                pid: p.pid,
                tid: t.tid,
            };
            let b = idx.through_sentinels(blocked::resolve(p, t));
            g.order.push(r);
            if blocked::is_passive(p, t, &b) {
                g.passive.insert(r);
            }
            let mut m = progress::judge(p, t, &b, stopped, &pipes);
            if m == Motion::Still {
                if let Some(why) = appeared.get(&p.pid) {
                    m = Motion::Moved(format!("its process {why}"));
                }
            }
            if let Motion::Periodic(per) = &m {
                g.periodic.insert(r, per.what.clone());
                if per.confirmed.is_some() {
                    g.housekeeping.insert(r);
                }
            }
            motion.insert(r, m);
            g.blocked.insert(r, b);
        }
    }
    let unconfirmed: Vec<(ThreadRef, Option<u64>)> = g
        .order
        .iter()
        .filter_map(|r| match motion.get(r) {
            Some(Motion::Periodic(p)) if p.confirmed.is_none() => Some((*r, p.left_ms)),
            _ => None,
        })
        .collect();
    let w = wire(idx, &g, &motion, &g.housekeeping);
    let can = fixpoint(&g.order, &w.providers, w.seeds);
    if !unconfirmed.is_empty() {
        // Would the verdict change if the timed waiters not seen to wake were periodic too?
        let mut excluded = g.housekeeping.clone();
        excluded.extend(unconfirmed.iter().map(|(r, _)| *r));
        let w2 = wire(idx, &g, &motion, &excluded);
        let can2 = fixpoint(&g.order, &w2.providers, w2.seeds);
        let changes = g
            .order
            .iter()
            .any(|r| !excluded.contains(r) && can.contains_key(r) && !can2.contains_key(r));
        if changes {
            g.undecided = unconfirmed;
        }
    }
    for r in &g.order {
        let pr = if can.contains_key(r) {
            Progress::CanProgress
        } else {
            Progress::Stuck
        };
        g.progress.insert(*r, pr);
    }
    g.providers = w.providers;
    g.assumed = w.assumed;
    g.because = can;
    g
}

/// Seeds and plausible providers of every thread, with `excluded` taken as periodic.
fn wire(
    idx: &Index<'_>,
    g: &Graph,
    motion: &HashMap<ThreadRef, Motion>,
    excluded: &HashSet<ThreadRef>,
) -> Wiring {
    let cx = providers::Cx {
        idx,
        blocked: &g.blocked,
        periodic: excluded,
    };
    let mut w = Wiring {
        providers: HashMap::new(),
        assumed: HashMap::new(),
        seeds: HashMap::new(),
    };
    for r in &g.order {
        let Some((p, t)) = idx.thread(*r) else {
            continue;
        };
        if t.state == 'Z' || t.state == 'X' || p.state == 'Z' {
            continue;
        }
        let Some(b) = g.blocked.get(r) else { continue };
        match motion.get(r) {
            Some(Motion::Moved(why)) => {
                w.seeds.insert(*r, why.clone());
                continue;
            }
            Some(Motion::Periodic(per)) => {
                let why = match &per.confirmed {
                    Some(c) => format!("periodic ({c})"),
                    None if excluded.contains(r) => continue,
                    None => format!(
                        "not seen to wake from this timed wait{}: it may return and provide",
                        per.left_ms
                            .map(|ms| format!(" ({ms} ms left at most)"))
                            .unwrap_or_default()
                    ),
                };
                w.seeds.insert(*r, why);
                continue;
            }
            _ => {}
        }
        let mut assumed = Vec::new();
        match providers::need(&cx, *r, b, &mut assumed) {
            Need::Seed(why) => {
                w.seeds.insert(*r, why);
            }
            Need::Providers(v) => {
                w.providers.insert(*r, v);
            }
        }
        if !assumed.is_empty() {
            w.assumed.insert(*r, assumed);
        }
    }
    w
}

/// Least fixpoint: "can progress" spreads from the seeds to every thread one of whose providers
/// can. A worklist over reverse provider edges: each edge is visited once.
fn fixpoint(
    order: &[ThreadRef],
    providers: &HashMap<ThreadRef, Vec<ThreadRef>>,
    seeds: HashMap<ThreadRef, String>,
) -> HashMap<ThreadRef, String> {
    let mut waiters: HashMap<ThreadRef, Vec<ThreadRef>> = HashMap::new();
    for r in order {
        for p in providers.get(r).map(Vec::as_slice).unwrap_or(&[]) {
            waiters.entry(*p).or_default().push(*r);
        }
    }
    let mut queue: VecDeque<ThreadRef> = order
        .iter()
        .filter(|r| seeds.contains_key(r))
        .copied()
        .collect();
    let mut can = seeds;
    while let Some(p) = queue.pop_front() {
        for w in waiters.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if !can.contains_key(w) {
                can.insert(*w, format!("{}/{} can progress", p.pid, p.tid));
                queue.push_back(*w);
            }
        }
    }
    can
}

/// The thread of `me`'s process that holds the GIL while blocked in a system call (not
/// running), when py-spy saw one, and still saw it holding the GIL in every later look that
/// re-read the stacks (py-spy's read of the GIL owner is not atomic with /proc).
pub fn gil_holder(idx: &Index<'_>, me: ThreadRef) -> Option<ThreadRef> {
    let p = idx.process(me.pid)?;
    p.threads
        .iter()
        .find(|t| {
            t.tid != me.tid
                && t.py.as_ref().is_some_and(|py| py.owns_gil)
                && t.state != 'R'
                && matches!(t.syscall, SyscallState::Blocked(_))
                && t.later
                    .iter()
                    .all(|l| l.alive && (l.py_top.is_none() || l.owns_gil))
        })
        .map(|t| ThreadRef {
            pid: me.pid,
            tid: t.tid,
        })
}
