//! Host qualification of a whole snapshot: the one place that knows every id field.
//!
//! Before snapshots of several hosts are put together, each is qualified with its host's code
//! (see [`super::ids`]): pids, tids (also the raw TIDs inside futex words and lock objects),
//! pipe and socket inodes and semaphore keys. Equalities within the host survive, so the
//! analysis of the merged snapshot is the analysis of each host's part plus what connects them
//! (TCP). A new id field in the model must be qualified here; the replay invariance test
//! (`multi_host::replay_merged_twice`) fails when one is missed.

use super::{Decoded, FdKind, Pid, Snapshot, SyscallState, Tid};

/// Qualifies every id of `snap` with host `code` (labelled `label`).
pub fn qualify(snap: &mut Snapshot, code: u16, label: &str) {
    let q = |id: i32| super::ids::qualify_id(code, id);
    snap.root = snap.root.qualified(code);
    for p in &mut snap.processes {
        p.pid = p.pid.qualified(code);
        p.ppid = p.ppid.qualified(code);
        for s in &mut p.status_fds {
            s.child = s.child.qualified(code);
        }
        for m in &mut p.sem_maps {
            m.key = m.key.qualified(label);
        }
        for f in &mut p.fds {
            match &mut f.kind {
                FdKind::Pipe { inode } | FdKind::Socket { inode, .. } => {
                    *inode = inode.qualified(code)
                }
                FdKind::UnixSocket {
                    inode,
                    peer,
                    pending,
                    ..
                } => {
                    *inode = inode.qualified(code);
                    *peer = peer.map(|i| i.qualified(code));
                    for c in pending {
                        *c = c.qualified(code);
                    }
                }
                _ => {}
            }
        }
        for t in &mut p.threads {
            t.tid = t.tid.qualified(code);
            let SyscallState::Blocked(s) = &mut t.syscall else {
                continue;
            };
            match &mut s.decoded {
                Decoded::WaitChild { pid } => *pid = pid.map(|c| c.qualified(code)),
                Decoded::Futex(f) => {
                    if let super::FutexRegion::SharedSem { key } = &mut f.region {
                        *key = key.qualified(label);
                    }
                    if let Some(w) = &mut f.word {
                        w.owner_tid = q(w.owner_tid);
                    }
                    if let Some(l) = &mut f.lock {
                        l.owner_tid = l.owner_tid.map(q);
                        l.owner_in_parent = l.owner_in_parent.map(|(p, t)| (q(p), q(t)));
                    }
                }
                _ => {}
            }
        }
    }
    for p in &mut snap.pipes {
        p.inode = p.inode.qualified(code);
    }
    for s in &mut snap.semaphores {
        s.key = s.key.qualified(label);
        for m in &mut s.mapped_by {
            *m = m.qualified(code);
        }
        for h in s.holders.iter_mut().flatten() {
            h.pid = h.pid.qualified(code);
            h.last_tid = h.last_tid.map(q);
        }
    }
    for g in &mut snap.gone {
        g.pid = g.pid.qualified(code);
        g.ppid = g.ppid.map(|p| p.qualified(code));
    }
    for d in &mut snap.diagnostics {
        d.pid = d.pid.map(|p: Pid| p.qualified(code));
        d.tid = d.tid.map(|t: Tid| t.qualified(code));
    }
    for h in &mut snap.hosts {
        h.label = Some(label.to_string());
        for s in &mut h.sources {
            s.root = s.root.qualified(code);
        }
    }
}
