//! Python objects read from target memory, through [`abi`](super::abi)'s layouts: the
//! `sem_t` of every shared semaphore and, when someone waits on one at value 0, the
//! `_multiprocessing.SemLock` objects that say who holds it; and the lock object (with its
//! owner) behind a thread's direct acquire.

use super::{abi, locks, memory, par_map, sems, Raw};
use crate::model::{FutexRegion, SemKey, SemaphoreSnap, SyscallState};
use std::collections::{BTreeMap, HashMap};

/// Every shared semaphore of the tree, matched by dev:inode: value and waiters from its
/// `sem_t`, and for one waited on at value 0 the SemLock holders of each process.
pub(super) fn semaphores(
    procs: &[Raw],
    layouts: &HashMap<i32, Option<String>>,
    workers: usize,
) -> Vec<SemaphoreSnap> {
    let mut by_key: BTreeMap<SemKey, SemaphoreSnap> = BTreeMap::new();
    let mut first: HashMap<SemKey, (i32, u64, abi::GlibcLayout)> = HashMap::new();
    for r in procs {
        for m in &r.snap.sem_maps {
            let e = by_key
                .entry(m.key.clone())
                .or_insert_with(|| SemaphoreSnap {
                    key: m.key.clone(),
                    paths: Vec::new(),
                    value: None,
                    nwaiters: None,
                    mapped_by: Vec::new(),
                    holders: None,
                });
            if !e.paths.contains(&m.path) {
                e.paths.push(m.path.clone());
            }
            if !e.mapped_by.contains(&r.snap.pid) {
                e.mapped_by.push(r.snap.pid);
            }
            first
                .entry(m.key.clone())
                .or_insert((r.snap.pid.0, m.start, r.abi.libc));
        }
    }
    // Semaphores someone waits on without a timeout.
    let mut waited: Vec<SemKey> = Vec::new();
    for r in procs {
        for t in &r.snap.threads {
            if let SyscallState::Blocked(s) = &t.syscall {
                if let crate::model::Decoded::Futex(f) = &s.decoded {
                    if let FutexRegion::SharedSem { key } = &f.region {
                        waited.push(key.clone());
                    }
                }
            }
        }
    }
    for (key, s) in by_key.iter_mut() {
        if let Some((pid, start, libc)) = first.get(key) {
            if let Some((v, w)) = sems::read_sem(*pid, *start, libc) {
                s.value = Some(v);
                s.nwaiters = Some(w);
            }
        }
        if s.value == Some(0) && waited.contains(key) {
            s.holders = Some(holders(procs, key, layouts, workers));
        }
    }
    by_key.into_values().collect()
}

/// SemLock objects pointing at semaphore `key` in every process mapping it. One full scan per
/// address layout; forked children with the same layout are probed at the addresses found,
/// falling back to a full scan when the probe fails. Scans run in parallel.
fn holders(
    procs: &[Raw],
    key: &SemKey,
    layouts: &HashMap<i32, Option<String>>,
    workers: usize,
) -> Vec<crate::model::SemLockSeen> {
    // Processes whose CPython layout is unknown (or free-threaded) are not scanned.
    let mappers: Vec<(&Raw, u64)> = procs
        .iter()
        .filter(|r| r.abi.py.is_some())
        .filter_map(|r| {
            r.snap
                .sem_maps
                .iter()
                .find(|m| &m.key == key)
                .map(|m| (r, m.start))
        })
        .collect();
    let tids = |r: &Raw| -> Vec<i32> { super::tid_space(&r.snap).0 };
    let scan = |r: &Raw, start: u64| -> Vec<(u64, crate::model::SemLockSeen)> {
        let Some(py) = &r.abi.py else {
            return Vec::new();
        };
        let tids = tids(r);
        let l = sems::Layouts {
            py,
            libc: &r.abi.libc,
            tids: &tids,
        };
        sems::scan_semlocks(r.snap.pid.0, &r.maps, start, &l)
    };
    let probe = |r: &Raw, addrs: &[u64], start: u64| {
        let py = r.abi.py.as_ref()?;
        let tids = tids(r);
        let l = sems::Layouts {
            py,
            libc: &r.abi.libc,
            tids: &tids,
        };
        sems::probe_semlocks(r.snap.pid.0, addrs, start, &l)
    };
    // First process of each layout (or of no known layout): full scans, in parallel.
    let mut firsts: Vec<(&Raw, u64)> = Vec::new();
    let mut seen_layouts: Vec<&String> = Vec::new();
    let mut rest: Vec<(&Raw, u64)> = Vec::new();
    for (r, start) in &mappers {
        match layouts.get(&r.snap.pid.0).and_then(|l| l.as_ref()) {
            Some(l) if seen_layouts.contains(&l) => rest.push((r, *start)),
            Some(l) => {
                seen_layouts.push(l);
                firsts.push((r, *start));
            }
            None => firsts.push((r, *start)),
        }
    }
    let scanned = par_map(&firsts, workers, |(r, start)| {
        (r.snap.pid.0, scan(r, *start))
    });
    let addrs_by_layout: HashMap<String, Vec<u64>> = scanned
        .iter()
        .filter_map(|(pid, found)| {
            let l = layouts.get(pid)?.clone()?;
            Some((l, found.iter().map(|(a, _)| *a).collect()))
        })
        .collect();
    let probed = par_map(&rest, workers, |(r, start)| {
        let pid = r.snap.pid.0;
        let known = layouts
            .get(&pid)
            .and_then(|l| l.as_ref())
            .and_then(|l| addrs_by_layout.get(l))
            .filter(|a| !a.is_empty());
        known
            .and_then(|a| probe(r, a, *start))
            .unwrap_or_else(|| scan(r, *start))
    });
    // last_tid is a TID of the holder's PID namespace.
    let back: HashMap<i32, HashMap<i32, i32>> = mappers
        .iter()
        .filter(|(r, _)| r.snap.ns_pid.is_some())
        .map(|(r, _)| (r.snap.pid.0, super::tid_space(&r.snap).1))
        .collect();
    scanned
        .into_iter()
        .flat_map(|(_, v)| v)
        .chain(probed.into_iter().flatten())
        .map(|(_, mut s)| {
            if let Some(m) = back.get(&s.pid.0) {
                s.last_tid = s.last_tid.and_then(|t| m.get(&t).copied());
            }
            s
        })
        .collect()
}

/// For threads acquiring a lock directly (not waiting in a Condition, Event or join): the lock
/// object (`_thread.lock`, `_thread.RLock`, an `io.Buffered*`) and, when it records one, its
/// owner. A heap `sem_t` futex (up to 3.13; `PyThread_type_lock` up to 3.14) or a parking-lot
/// key (3.14+ PyMutex locks). At most one bounded scan per process.
pub(super) fn add_lock_owners(procs: &mut [Raw]) {
    for r in procs.iter_mut() {
        let Some(py) = r.abi.py else { continue };
        let mut waits: Vec<locks::Wait> = Vec::new();
        for t in &r.snap.threads {
            let SyscallState::Blocked(s) = &t.syscall else {
                continue;
            };
            let crate::model::Decoded::Futex(f) = &s.decoded else {
                continue;
            };
            let direct =
                t.py.as_ref()
                    .and_then(|p| p.frames.first())
                    .is_some_and(|f| {
                        !f.file.ends_with("threading.py") && !f.file.ends_with("queue.py")
                    });
            if !direct || f.shared || f.timed || f.is_mutex() {
                continue;
            }
            let w = match f.region {
                FutexRegion::Heap => locks::Wait::Sem(f.uaddr),
                FutexRegion::OwnStack { key } if key != 0 => locks::Wait::Parked(key),
                _ => continue,
            };
            if !waits.contains(&w) {
                waits.push(w);
            }
        }
        if waits.is_empty() {
            continue;
        }
        let (tids, back) = super::tid_space(&r.snap);
        let l = locks::Layouts {
            py: &py,
            libc: &r.abi.libc,
            tids: &tids,
        };
        let mut found = locks::find(r.snap.pid.0, &r.maps, &waits, &l);
        if !back.is_empty() {
            for lock in found.values_mut() {
                lock.owner_tid = lock.owner_tid.and_then(|t| back.get(&t).copied());
            }
        }
        // An owner that is no thread here: which thread of the parent it names.
        let ppid = r.snap.ppid.0;
        let parent_tids: Vec<i32> = std::fs::read_dir(format!("/proc/{ppid}/task"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for lock in found.values_mut() {
            if lock.owner == 0 {
                continue;
            }
            let in_parent =
                r.abi
                    .libc
                    .tid_of_pthread(&memory::Remote(ppid), lock.owner, &parent_tids);
            // glibc reuses a dead thread's stack (and so its pthread_t) for the next thread: a
            // thread started in a fork child can sit at the pthread_t of the parent thread that
            // held the lock at fork. Only the child's main thread continues a parent thread;
            // another thread at a live parent thread's pthread_t is such a reuse, and the lock
            // is the parent thread's.
            if let (Some(t), Some(_)) = (lock.owner_tid, in_parent) {
                if t != r.snap.pid.0 {
                    lock.owner_tid = None;
                }
            }
            if lock.owner_tid.is_none() {
                lock.owner_in_parent = in_parent.map(|t| (ppid, t));
            }
        }
        for t in &mut r.snap.threads {
            if let SyscallState::Blocked(s) = &mut t.syscall {
                if let crate::model::Decoded::Futex(f) = &mut s.decoded {
                    let at = match f.region {
                        FutexRegion::OwnStack { key } => key,
                        _ => f.uaddr,
                    };
                    f.lock = found.get(&at).cloned();
                }
            }
        }
    }
}
