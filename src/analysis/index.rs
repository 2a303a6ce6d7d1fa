//! Lookups over a snapshot: who holds which pipe end or socket, who maps which semaphore.

use crate::model::{
    FdKind, Inode, Pid, PipeSnap, ProcessSnap, SemKey, SemaphoreSnap, Snapshot, ThreadRef,
    ThreadSnap,
};
use std::collections::HashMap;

/// One process's fd on a pipe or socket.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    pub pid: Pid,
    pub fd: i32,
    pub read: bool,
    pub write: bool,
}

/// Indexes built once per analysis.
pub struct Index<'a> {
    pub snap: &'a Snapshot,
    procs: HashMap<Pid, &'a ProcessSnap>,
    pipe_holders: HashMap<Inode, Vec<Holder>>,
    sock_holders: HashMap<Inode, Vec<Holder>>,
    sem_mappers: HashMap<SemKey, Vec<Pid>>,
    children: HashMap<Pid, Vec<Pid>>,
    pipes: HashMap<Inode, &'a PipeSnap>,
    sems: HashMap<&'a SemKey, &'a SemaphoreSnap>,
}

impl<'a> Index<'a> {
    pub fn new(snap: &'a Snapshot) -> Index<'a> {
        let mut idx = Index {
            snap,
            procs: HashMap::new(),
            pipe_holders: HashMap::new(),
            sock_holders: HashMap::new(),
            sem_mappers: HashMap::new(),
            children: HashMap::new(),
            pipes: snap.pipes.iter().map(|p| (p.inode, p)).collect(),
            sems: snap.semaphores.iter().map(|s| (&s.key, s)).collect(),
        };
        for p in &snap.processes {
            idx.procs.insert(p.pid, p);
            idx.children.entry(p.ppid).or_default().push(p.pid);
            for f in &p.fds {
                let h = Holder {
                    pid: p.pid,
                    fd: f.fd,
                    read: f.access.can_read(),
                    write: f.access.can_write(),
                };
                match f.kind {
                    FdKind::Pipe { inode } => idx.pipe_holders.entry(inode).or_default().push(h),
                    FdKind::UnixSocket { inode, .. } | FdKind::Socket { inode } => {
                        idx.sock_holders.entry(inode).or_default().push(h)
                    }
                    _ => {}
                }
            }
            for m in &p.sem_maps {
                let v = idx.sem_mappers.entry(m.key.clone()).or_default();
                if !v.contains(&p.pid) {
                    v.push(p.pid);
                }
            }
        }
        idx
    }

    pub fn pipe(&self, inode: Inode) -> Option<&'a PipeSnap> {
        self.pipes.get(&inode).copied()
    }

    pub fn semaphore(&self, key: &SemKey) -> Option<&'a SemaphoreSnap> {
        self.sems.get(key).copied()
    }

    pub fn process(&self, pid: Pid) -> Option<&'a ProcessSnap> {
        self.procs.get(&pid).copied()
    }

    pub fn thread(&self, r: ThreadRef) -> Option<(&'a ProcessSnap, &'a ThreadSnap)> {
        let p = self.process(r.pid)?;
        Some((p, p.thread(r.tid)?))
    }

    pub fn pipe_holders(&self, inode: Inode) -> &[Holder] {
        self.pipe_holders
            .get(&inode)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn socket_holders(&self, inode: Inode) -> &[Holder] {
        self.sock_holders
            .get(&inode)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn sem_mappers(&self, key: &SemKey) -> &[Pid] {
        self.sem_mappers.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn children(&self, pid: Pid) -> &[Pid] {
        self.children.get(&pid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The `threading` lock object a thread waits for, when the collector found it.
    pub fn lock_object(&self, r: ThreadRef) -> Option<&'a crate::model::LockObject> {
        let (_, t) = self.thread(r)?;
        match &t.syscall {
            crate::model::SyscallState::Blocked(s) => match &s.decoded {
                crate::model::Decoded::Futex(f) => f.lock.as_ref(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Every thread of `pid` as a [`ThreadRef`].
    pub fn threads_of(&self, pid: Pid) -> Vec<ThreadRef> {
        self.process(pid)
            .map(|p| {
                p.threads
                    .iter()
                    .filter(|t| t.state != 'Z' && t.state != 'X')
                    .map(|t| ThreadRef { pid, tid: t.tid })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Zombie processes (exited, not yet reaped) and processes recorded as gone.
    pub fn exited(&self) -> Vec<(Pid, String)> {
        let mut v: Vec<(Pid, String)> = self
            .snap
            .processes
            .iter()
            .filter(|p| p.state == 'Z')
            .map(|p| {
                (
                    p.pid,
                    format!(
                        "{} exited (zombie: not yet joined by its parent {})",
                        p.pid, p.ppid
                    ),
                )
            })
            .collect();
        for g in &self.snap.gone {
            let how = g.ended.as_deref().unwrap_or("exited");
            v.push((g.pid, format!("{} {}", g.pid, how)));
        }
        v
    }
}
