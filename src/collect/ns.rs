//! PID namespaces: ids read from a target in another PID namespace (mutex owners, waited-for
//! children, a forkserver's children, thread ids) mapped to mphang's through `NSpid`.

use super::*;
use crate::model::{Pid, ProcessSnap, SyscallState, Tid};
use std::collections::HashMap;

/// For a process in another PID namespace, its threads' namespace TIDs mapped to mphang's
/// (through `NSpid`, [`native::ns_tid_map`]); empty for a process in mphang's namespace. TIDs
/// read from target memory (py-spy's thread ids, `struct pthread` tids, SemLock `last_tid`,
/// RLock owners) are namespace TIDs and go through this map.
pub(crate) fn ns_tids(p: &ProcessSnap) -> HashMap<i32, i32> {
    if p.ns_pid.is_none() {
        return HashMap::new();
    }
    native::ns_tid_map(p.pid)
        .into_iter()
        .map(|(ns, host)| (ns, host.0))
        .collect()
}

/// The TIDs of `p` as its own memory names them, and the way back to mphang's TIDs.
pub(crate) fn tid_space(p: &ProcessSnap) -> (Vec<i32>, HashMap<i32, i32>) {
    let map = ns_tids(p);
    if map.is_empty() {
        (p.threads.iter().map(|t| t.tid.0).collect(), map)
    } else {
        (map.keys().copied().collect(), map)
    }
}

/// Mutex owners read from target memory, the child a wait4/waitid names and a forkserver's
/// children (`status_fds`) are ids of the target's PID namespace. For processes in another
/// namespace, map them to mphang's TIDs through the `NSpid` lines of the tree's threads (an id
/// not found in the tree keeps its namespace value).
pub(crate) fn translate_ns_owners(procs: &mut [Raw]) {
    if procs.iter().all(|r| r.snap.ns_pid.is_none()) {
        return;
    }
    let mut map: HashMap<i32, Tid> = HashMap::new();
    for r in procs.iter().filter(|r| r.snap.ns_pid.is_some()) {
        map.extend(native::ns_tid_map(r.snap.pid));
    }
    for r in procs.iter_mut().filter(|r| r.snap.ns_pid.is_some()) {
        // A forkserver's `pid_to_fd` names its children by namespace pid too.
        for s in &mut r.snap.status_fds {
            if let Some(host) = map.get(&s.child.0) {
                s.child = Pid(host.0);
            }
        }
        for t in &mut r.snap.threads {
            if let SyscallState::Blocked(s) = &mut t.syscall {
                match &mut s.decoded {
                    crate::model::Decoded::Futex(f) => {
                        if let Some(w) = &mut f.word {
                            if let Some(host) = map.get(&w.owner_tid) {
                                w.owner_tid = host.0;
                            }
                        }
                    }
                    // wait4/waitid name the child by its pid in the waiter's namespace.
                    crate::model::Decoded::WaitChild { pid: Some(c) } => {
                        if let Some(host) = map.get(&c.0) {
                            *c = Pid(host.0);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
