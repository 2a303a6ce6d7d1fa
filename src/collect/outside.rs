//! Holders outside the tree: the other end of a pipe that no process of the tree holds (a shell
//! pipeline feeding the target, a parent that kept a pipe). Looked up machine-wide, lazily: only
//! for pipes a thread waits on whose other end has no holder in the tree, with one scan of
//! `/proc/*/fd` at most.

use super::fds;
use crate::model::{
    Decoded, FdKind, Inode, OutsideHolder, Pid, PipeSnap, ProcessSnap, SyscallState,
};
use std::collections::{HashMap, HashSet};

/// The pipes a thread of the tree waits on (read, write, or in a poll set) whose other end no
/// process of the tree holds, with the side that is missing (`true` = a writer is missing).
fn wanted(processes: &[ProcessSnap]) -> HashMap<Inode, bool> {
    let mut readers: HashSet<Inode> = HashSet::new();
    let mut writers: HashSet<Inode> = HashSet::new();
    for p in processes {
        for f in &p.fds {
            if let FdKind::Pipe { inode } = f.kind {
                if f.access.can_read() {
                    readers.insert(inode);
                }
                if f.access.can_write() {
                    writers.insert(inode);
                }
            }
        }
    }
    let mut out = HashMap::new();
    for p in processes {
        let pipe = |fd: i32| {
            p.fds
                .iter()
                .find(|e| e.fd == fd)
                .and_then(|e| e.pipe_inode())
        };
        for t in &p.threads {
            let SyscallState::Blocked(s) = &t.syscall else {
                continue;
            };
            let (fds, write): (Vec<i32>, bool) = match &s.decoded {
                Decoded::Read { fd } => (vec![*fd], false),
                Decoded::Write { fd, .. } => (vec![*fd], true),
                Decoded::Poll { fds, .. } | Decoded::EpollWait { fds, .. } => (fds.clone(), false),
                _ => continue,
            };
            for ino in fds.into_iter().filter_map(pipe) {
                let missing_writer = !write && !writers.contains(&ino);
                let missing_reader = write && !readers.contains(&ino);
                if missing_writer || missing_reader {
                    out.insert(ino, missing_writer);
                }
            }
        }
    }
    out
}

/// Fills `PipeSnap::outside` for the pipes that need it, with one scan of every other
/// process's fds.
pub fn lookup(processes: &[ProcessSnap], pipes: &mut [PipeSnap]) {
    let want = wanted(processes);
    if want.is_empty() {
        return;
    }
    let tree: HashSet<i32> = processes.iter().map(|p| p.pid.0).collect();
    let me = std::process::id() as i32;
    let mut found: HashMap<Inode, Vec<OutsideHolder>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if tree.contains(&pid) || pid == me {
                continue;
            }
            let Ok(entries) = fds::read_fds(pid) else {
                continue;
            };
            let mut comm = None;
            for f in entries {
                let FdKind::Pipe { inode } = f.kind else {
                    continue;
                };
                let Some(missing_writer) = want.get(&inode) else {
                    continue;
                };
                let side = if *missing_writer {
                    f.access.can_write()
                } else {
                    f.access.can_read()
                };
                if !side {
                    continue;
                }
                let comm = comm
                    .get_or_insert_with(|| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .map(|c| c.trim().to_string())
                            .unwrap_or_default()
                    })
                    .clone();
                found.entry(inode).or_default().push(OutsideHolder {
                    pid: Pid(pid),
                    comm,
                    fd: f.fd,
                    access: f.access,
                });
            }
        }
    }
    for p in pipes.iter_mut() {
        if want.contains_key(&p.inode) {
            p.outside = Some(found.remove(&p.inode).unwrap_or_default());
        }
    }
}
