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
//! One more is written in every report, compact or not, because forked children inherit their
//! parent's and older siblings' pipes (a 256-process fork tree holds 67,000 fds, 87% of its
//! report): `snapshot.processes[].fds_as: {pid, without}`, the fds of that earlier process less
//! `without`, with the process's own `fds` added or replacing by number.
//!
//! [`compact`] writes them into the report in place (moving out what they replace, so a
//! 4,096-process report is not copied) for it to be serialized directly, with no JSON tree in
//! between, and [`restore`] puts it back; [`expand_report`] and [`expand_snapshot`] undo them after a typed parse
//! ([`super::json::parse_report`], `report --from`, `merge`).

use super::Report;
use crate::model::merge::MergedFrame;
use crate::model::{FdEntry, FdsAs, NativeFrame, Pid, ProcessSnap, Snapshot, ThreadRef, Tid};
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
    /// (process index, every fd).
    fds: Vec<(usize, Vec<FdEntry>)>,
}

/// Writes the shorthands into `report` in place (moving the parts they replace out, nothing is
/// copied): serialize it, then [`restore`] it. `fds_as` always; the others when `all`.
pub fn compact(report: &mut Report, all: bool) -> Undo {
    let mut undo = Undo::default();
    for (pi, fds_as, own) in fds_plan(&report.snapshot.processes) {
        let p = &mut report.snapshot.processes[pi];
        undo.fds.push((pi, std::mem::replace(&mut p.fds, own)));
        p.fds_as = Some(fds_as);
    }
    if !all {
        return undo;
    }
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

/// Processes whose fds are shorter written as an earlier process's (its parent's, or the
/// previous child of the same parent: a forked child holds what its older sibling held plus
/// that sibling's own pipes): (index, `fds_as`, own entries).
fn fds_plan(procs: &[ProcessSnap]) -> Vec<(usize, FdsAs, Vec<FdEntry>)> {
    /// Below this many fds a process keeps its list: small reports stay plain.
    const MIN_FDS: usize = 8;
    let mut index: HashMap<Pid, usize> = HashMap::new();
    let mut last_child: HashMap<Pid, usize> = HashMap::new();
    let mut plan = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        if p.fds.len() >= MIN_FDS && p.fds_as.is_none() {
            let bases = [index.get(&p.ppid), last_child.get(&p.ppid)];
            let best = bases
                .into_iter()
                .flatten()
                .map(|&b| (b, fd_diff(&procs[b].fds, &p.fds)))
                .min_by_key(|(_, (without, own))| without.len() + 8 * own.len());
            // Worth it when the entries left are at most half the list (an entry is about
            // eight times the size of a number in `without`).
            if let Some((b, (without, own))) = best {
                if without.len() + 8 * own.len() <= 4 * p.fds.len() {
                    let fds_as = FdsAs {
                        pid: procs[b].pid,
                        without,
                    };
                    plan.push((i, fds_as, own));
                }
            }
        }
        index.insert(p.pid, i);
        last_child.insert(p.ppid, i);
    }
    plan
}

/// `mine` against `base` (both sorted by fd): the fd numbers of `base` not in `mine`, and the
/// entries of `mine` not in `base` as they are.
fn fd_diff(base: &[FdEntry], mine: &[FdEntry]) -> (Vec<i32>, Vec<FdEntry>) {
    let (mut without, mut own) = (Vec::new(), Vec::new());
    let (mut b, mut m) = (base.iter().peekable(), mine.iter().peekable());
    loop {
        match (b.peek(), m.peek()) {
            (Some(x), Some(y)) if x.fd == y.fd => {
                if x != y {
                    own.push((*y).clone());
                }
                b.next();
                m.next();
            }
            (Some(x), Some(y)) if x.fd < y.fd => {
                without.push(x.fd);
                b.next();
            }
            (Some(x), None) => {
                without.push(x.fd);
                b.next();
            }
            (_, Some(y)) => {
                own.push((*y).clone());
                m.next();
            }
            (None, None) => break,
        }
    }
    (without, own)
}

/// Puts back what [`compact`] took out: `report` is as it was before.
pub fn restore(report: &mut Report, undo: Undo) {
    for (pi, fds) in undo.fds {
        if let Some(p) = report.snapshot.processes.get_mut(pi) {
            p.fds = fds;
            p.fds_as = None;
        }
    }
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

/// Undoes [`compact`]'s `fds_as` and `native_as` in a snapshot.
pub fn expand_snapshot(snap: &mut Snapshot) {
    expand_fds(&mut snap.processes);
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

/// Undoes `fds_as`, in order: a base is written (so expanded) before the processes that
/// refer to it. A base that is missing or later leaves the process its own entries.
fn expand_fds(procs: &mut [ProcessSnap]) {
    if procs.iter().all(|p| p.fds_as.is_none()) {
        return;
    }
    let mut index: HashMap<Pid, usize> = HashMap::new();
    for i in 0..procs.len() {
        let (done, rest) = procs.split_at_mut(i);
        let p = &mut rest[0];
        if let Some(fds_as) = p.fds_as.take() {
            if let Some(base) = index.get(&fds_as.pid).map(|&b| &done[b]) {
                let own: HashSet<i32> = p.fds.iter().map(|f| f.fd).collect();
                let without: HashSet<i32> = fds_as.without.iter().copied().collect();
                let inherited = base
                    .fds
                    .iter()
                    .filter(|f| !own.contains(&f.fd) && !without.contains(&f.fd))
                    .cloned();
                let mut fds: Vec<FdEntry> = inherited.chain(p.fds.drain(..)).collect();
                fds.sort_by_key(|f| f.fd);
                p.fds = fds;
            }
        }
        index.insert(p.pid, i);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Access, FdKind, Inode, Role};

    fn process(pid: i32, ppid: i32, pipes: &[u64]) -> ProcessSnap {
        let mut fds: Vec<FdEntry> = (0..3)
            .map(|fd| FdEntry {
                fd,
                access: Access::ReadWrite,
                kind: FdKind::Tty {
                    path: "/dev/pts/0".into(),
                },
            })
            .collect();
        for (i, &ino) in pipes.iter().enumerate() {
            fds.push(FdEntry {
                fd: 3 + i as i32,
                access: if ino % 2 == 0 {
                    Access::Read
                } else {
                    Access::Write
                },
                kind: FdKind::Pipe { inode: Inode(ino) },
            });
        }
        ProcessSnap {
            pid: Pid(pid),
            ppid: Pid(ppid),
            ns_pid: None,
            comm: "python3".into(),
            cmdline: Vec::new(),
            exe: None,
            uid: None,
            state: 'S',
            start_ticks: 0,
            cpu_ticks: 0,
            num_threads: 1,
            nofile_limit: None,
            fd_count: fds.len(),
            python_version: None,
            role: Role::ForkChild,
            threads: Vec::new(),
            fds,
            fds_as: None,
            sem_maps: Vec::new(),
            appeared: Vec::new(),
            status_fds: Vec::new(),
            net_ns: None,
            rank: None,
        }
    }

    #[test]
    fn inherited_fds_are_written_once_and_expand_back() {
        // A parent with 40 pipes; child k inherits the first 10 + k of them and closed one; one
        // child has another pipe under an inherited number.
        let parent_pipes: Vec<u64> = (100..140).collect();
        let mut procs = vec![process(1, 0, &parent_pipes)];
        for k in 0..20 {
            let mut p = process(10 + k as i32, 1, &parent_pipes[..10 + k]);
            p.fds.retain(|f| f.fd != 5);
            if k == 7 {
                p.fds[4].kind = FdKind::Pipe { inode: Inode(999) };
            }
            procs.push(p);
        }
        // A small process keeps its list as it is.
        procs.push(process(50, 1, &[100]));
        let full = procs.clone();
        for (i, fds_as, own) in fds_plan(&procs) {
            procs[i].fds = own;
            procs[i].fds_as = Some(fds_as);
        }
        let written: usize = procs.iter().map(|p| p.fds.len()).sum();
        let all: usize = full.iter().map(|p| p.fds.len()).sum();
        assert!(procs[0].fds_as.is_none() && procs[21].fds_as.is_none());
        assert!(
            procs[1..21].iter().all(|p| p.fds_as.is_some()),
            "every child is written as its parent or older sibling"
        );
        assert!(written * 5 < all, "{written} of {all} entries written");
        expand_fds(&mut procs);
        assert_eq!(procs, full);
    }

    #[test]
    fn a_base_that_is_missing_leaves_the_own_entries() {
        let mut procs = vec![process(2, 1, &[100, 101])];
        procs[0].fds_as = Some(FdsAs {
            pid: Pid(99),
            without: vec![3],
        });
        let own = procs[0].fds.clone();
        expand_fds(&mut procs);
        assert_eq!(procs[0].fds, own);
        assert!(procs[0].fds_as.is_none());
    }
}
