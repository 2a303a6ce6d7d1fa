//! Large `--json` reports without quadratic or repeated parts. A process whose 1,000 threads
//! wait on one lock gives each thread every other thread as a provider (1,000,000 entries,
//! 81 MB), and 1,000 identical stacks twice (merged and native). Reports of more than
//! [`AUTO_THREADS`] threads are therefore written with three shorthands (docs/json-format.md),
//! which are typed fields of the report, so the published schema describes them:
//!
//! * `threads[].providers_all_of: [pid]`: every thread of these processes (other than the
//!   verdict's own) is a provider; those threads are left out of `providers`;
//! * `threads[].stack_as: {pid, tid}`: the same merged `stack` as that earlier verdict;
//! * `snapshot.processes[].threads[].native_as: {pid, tid}`: the same `native` stack as that
//!   earlier thread.
//!
//! [`compact`] writes them into the report in place (moving out what they replace, so a
//! 4,096-process report is not copied) for it to be serialized directly, with no JSON tree in
//! between, and [`restore`] puts it back; [`expand_report`] and [`expand_snapshot`] undo them after a typed parse
//! ([`super::json::parse_report`], `report --from`, `merge`).

use super::Report;
use crate::model::merge::MergedFrame;
use crate::model::{NativeFrame, Pid, Snapshot, ThreadRef, Tid};
use foldhash::{HashMap, HashMapExt, HashSet};

/// Reports with more threads than this are written compact.
pub const AUTO_THREADS: usize = 256;

/// What [`compact`] took out of a report, to put back.
#[derive(Default)]
pub struct Undo {
    /// (verdict index, full providers, stack).
    verdicts: Vec<(usize, Vec<ThreadRef>, Vec<MergedFrame>)>,
    /// (process index, thread index, native frames).
    natives: Vec<(usize, usize, Vec<NativeFrame>)>,
}

/// Writes the shorthands into `report` in place (moving the parts they replace out, nothing is
/// copied): serialize it, then [`restore`] it.
pub fn compact(report: &mut Report) -> Undo {
    let threads_of: HashMap<Pid, HashSet<Tid>> = report
        .snapshot
        .processes
        .iter()
        .map(|p| (p.pid, p.threads.iter().map(|t| t.tid).collect()))
        .collect();
    // First the decisions, on shared borrows: (all_of, stack_as) per verdict, native_as per
    // thread.
    let mut plan: Vec<(usize, Vec<Pid>, Option<ThreadRef>)> = Vec::new();
    let mut seen_stacks: HashMap<&[MergedFrame], ThreadRef> = HashMap::new();
    for (i, v) in report.threads.iter().enumerate() {
        // Providers by process; a process all of whose other threads provide is summarised.
        let mut by_pid: HashMap<Pid, HashSet<Tid>> = HashMap::new();
        for p in &v.providers {
            by_pid.entry(p.pid).or_default().insert(p.tid);
        }
        let mut all_of: Vec<Pid> = by_pid
            .iter()
            .filter(|(pid, tids)| {
                let Some(all) = threads_of.get(pid) else {
                    return false;
                };
                let mine = **pid == v.thread.pid;
                // Every thread of the process except the verdict's own, and at least two.
                tids.len() >= 2
                    && !(mine && tids.contains(&v.thread.tid))
                    && tids.iter().all(|t| all.contains(t))
                    && tids.len() == all.len() - usize::from(mine && all.contains(&v.thread.tid))
            })
            .map(|(pid, _)| *pid)
            .collect();
        all_of.sort();
        let mut stack_as = None;
        if !v.stack.is_empty() {
            match seen_stacks.get(v.stack.as_slice()) {
                Some(&t) => stack_as = Some(t),
                None => {
                    seen_stacks.insert(&v.stack, v.thread);
                }
            }
        }
        if !all_of.is_empty() || stack_as.is_some() {
            plan.push((i, all_of, stack_as));
        }
    }
    let mut native_plan: Vec<(usize, usize, ThreadRef)> = Vec::new();
    let mut seen_native: HashMap<&[NativeFrame], ThreadRef> = HashMap::new();
    for (pi, p) in report.snapshot.processes.iter().enumerate() {
        for (ti, t) in p.threads.iter().enumerate() {
            let Some(native) = t.native.as_deref() else {
                continue;
            };
            match seen_native.get(native) {
                Some(&r) => native_plan.push((pi, ti, r)),
                None => {
                    seen_native.insert(
                        native,
                        ThreadRef {
                            pid: p.pid,
                            tid: t.tid,
                        },
                    );
                }
            }
        }
    }
    // Then the moves.
    let mut undo = Undo::default();
    for (i, all_of, stack_as) in plan {
        let v = &mut report.threads[i];
        let full = std::mem::take(&mut v.providers);
        v.providers = full
            .iter()
            .filter(|p| !all_of.contains(&p.pid))
            .copied()
            .collect();
        v.providers_all_of = all_of;
        let stack = if stack_as.is_some() {
            std::mem::take(&mut v.stack)
        } else {
            Vec::new()
        };
        v.stack_as = stack_as;
        undo.verdicts.push((i, full, stack));
    }
    for (pi, ti, r) in native_plan {
        let t = &mut report.snapshot.processes[pi].threads[ti];
        if let Some(n) = t.native.take() {
            undo.natives.push((pi, ti, n));
        }
        t.native_as = Some(r);
    }
    undo
}

/// Puts back what [`compact`] took out: `report` is as it was before.
pub fn restore(report: &mut Report, undo: Undo) {
    for (i, full, stack) in undo.verdicts {
        if let Some(v) = report.threads.get_mut(i) {
            v.providers = full;
            v.providers_all_of.clear();
            if v.stack_as.take().is_some() {
                v.stack = stack;
            }
        }
    }
    for (pi, ti, n) in undo.natives {
        if let Some(t) = report
            .snapshot
            .processes
            .get_mut(pi)
            .and_then(|p| p.threads.get_mut(ti))
        {
            t.native = Some(n);
            t.native_as = None;
        }
    }
}

/// Undoes [`compact`]'s `native_as` in a snapshot.
pub fn expand_snapshot(snap: &mut Snapshot) {
    let wanted: HashSet<ThreadRef> = snap
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .filter_map(|t| t.native_as)
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut natives: HashMap<ThreadRef, Vec<NativeFrame>> = HashMap::new();
    for p in &snap.processes {
        for t in &p.threads {
            let r = ThreadRef {
                pid: p.pid,
                tid: t.tid,
            };
            if let (true, Some(n)) = (wanted.contains(&r), &t.native) {
                natives.insert(r, n.clone());
            }
        }
    }
    for t in snap.processes.iter_mut().flat_map(|p| &mut p.threads) {
        if let Some(r) = t.native_as.take() {
            if let Some(n) = natives.get(&r) {
                t.native = Some(n.clone());
            }
        }
    }
}

/// Undoes every shorthand of [`compact`] in a report.
pub fn expand_report(report: &mut Report) {
    expand_snapshot(&mut report.snapshot);
    let wanted: HashSet<ThreadRef> = report.threads.iter().filter_map(|v| v.stack_as).collect();
    let stacks: HashMap<ThreadRef, Vec<MergedFrame>> = report
        .threads
        .iter()
        .filter(|v| wanted.contains(&v.thread))
        .map(|v| (v.thread, v.stack.clone()))
        .collect();
    let threads_of: HashMap<Pid, Vec<Tid>> = report
        .snapshot
        .processes
        .iter()
        .map(|p| (p.pid, p.threads.iter().map(|t| t.tid).collect()))
        .collect();
    for v in &mut report.threads {
        if let Some(r) = v.stack_as.take() {
            if let Some(s) = stacks.get(&r) {
                v.stack = s.clone();
            }
        }
        for pid in std::mem::take(&mut v.providers_all_of) {
            for &tid in threads_of.get(&pid).into_iter().flatten() {
                let r = ThreadRef { pid, tid };
                if r != v.thread {
                    v.providers.push(r);
                }
            }
        }
    }
}
