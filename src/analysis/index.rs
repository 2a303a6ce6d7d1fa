//! Lookups over a snapshot: who holds which pipe end or socket, who maps which semaphore,
//! which forkserver child a sentinel pipe stands for.

use super::types::BlockedOn;
use crate::model::{
    FdKind, Inode, Pid, PipeSnap, ProcessSnap, SemKey, SemaphoreSnap, Snapshot, ThreadRef,
    ThreadSnap,
};
use foldhash::{HashMap, HashMapExt};

/// One process's fd on a pipe or socket.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    pub pid: Pid,
    pub fd: i32,
    pub read: bool,
    pub write: bool,
}

/// A pipe at EOF held for reading: evidence that its writer (a child) exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentinelAtEof {
    pub holder: Pid,
    pub fd: i32,
    pub inode: Inode,
    /// Bytes left in it (under forkserver: the child's exit status).
    pub buffered: Option<u64>,
}

/// Indexes built once per analysis.
pub struct Index<'a> {
    pub snap: &'a Snapshot,
    procs: HashMap<Pid, &'a ProcessSnap>,
    /// Every thread by reference: a process's own list is searched linearly, which made a
    /// 1,000-thread process's analysis cubic.
    threads: HashMap<ThreadRef, (&'a ProcessSnap, &'a ThreadSnap)>,
    pipe_holders: HashMap<Inode, Vec<Holder>>,
    sock_holders: HashMap<Inode, Vec<Holder>>,
    sem_mappers: HashMap<SemKey, Vec<Pid>>,
    children: HashMap<Pid, Vec<Pid>>,
    /// TCP endpoints, listeners and addresses (see [`super::tcp`]).
    pub tcp: super::tcp::TcpIndex,
    /// A forkserver child's status pipe (read end: its client's `Process.sentinel`) -> child.
    sentinels: HashMap<Inode, Pid>,
    /// A connecting unix socket -> the listener in whose accept queue its connection waits.
    pending_on: HashMap<Inode, Inode>,
    pipes: HashMap<Inode, &'a PipeSnap>,
    sems: HashMap<&'a SemKey, &'a SemaphoreSnap>,
}

impl<'a> Index<'a> {
    pub fn new(snap: &'a Snapshot) -> Index<'a> {
        let mut idx = Index {
            snap,
            procs: HashMap::new(),
            threads: HashMap::new(),
            pipe_holders: HashMap::new(),
            sock_holders: HashMap::new(),
            sem_mappers: HashMap::new(),
            children: HashMap::new(),
            tcp: super::tcp::TcpIndex::new(snap),
            sentinels: HashMap::new(),
            pending_on: HashMap::new(),
            pipes: snap.pipes.iter().map(|p| (p.inode, p)).collect(),
            sems: snap.semaphores.iter().map(|s| (&s.key, s)).collect(),
        };
        for p in &snap.processes {
            idx.procs.insert(p.pid, p);
            for t in &p.threads {
                let r = ThreadRef {
                    pid: p.pid,
                    tid: t.tid,
                };
                idx.threads.entry(r).or_insert((p, t));
            }
            idx.children.entry(p.ppid).or_default().push(p.pid);
            for f in &p.fds {
                let h = Holder {
                    pid: p.pid,
                    fd: f.fd,
                    read: f.access.can_read(),
                    write: f.access.can_write(),
                };
                if let FdKind::UnixSocket { inode, pending, .. } = &f.kind {
                    for c in pending {
                        idx.pending_on.insert(*c, *inode);
                    }
                }
                match f.kind {
                    FdKind::Pipe { inode } => idx.pipe_holders.entry(inode).or_default().push(h),
                    FdKind::UnixSocket { inode, .. } | FdKind::Socket { inode, .. } => {
                        idx.sock_holders.entry(inode).or_default().push(h)
                    }
                    _ => {}
                }
            }
            for s in &p.status_fds {
                let ino = p
                    .fds
                    .iter()
                    .find(|f| f.fd == s.fd)
                    .and_then(|f| f.pipe_inode());
                if let Some(ino) = ino {
                    idx.sentinels.insert(ino, s.child);
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
        self.threads.get(&r).copied()
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

    /// The Pool workers of `owner`: its children with the Pool-worker role, and (under
    /// forkserver, whose children they are) Pool workers holding a pipe end or mapping a
    /// semaphore that `owner` also holds (the Pool's inqueue, outqueue and their locks).
    pub fn pool_workers(&self, owner: Pid) -> Vec<Pid> {
        let Some(o) = self.process(owner) else {
            return Vec::new();
        };
        let pipes: Vec<Inode> = o.fds.iter().filter_map(|f| f.pipe_inode()).collect();
        let mut out: Vec<Pid> = self
            .snap
            .processes
            .iter()
            .filter(|p| p.role == crate::model::Role::PoolWorker && p.pid != owner)
            .filter(|p| {
                p.ppid == owner
                    || p.fds
                        .iter()
                        .filter_map(|f| f.pipe_inode())
                        .any(|i| pipes.contains(&i))
                    || p.sem_maps
                        .iter()
                        .any(|m| o.sem_maps.iter().any(|om| om.key == m.key))
            })
            .map(|p| p.pid)
            .collect();
        out.sort();
        out
    }

    /// The listening socket in whose accept queue the connection of `inode` waits.
    pub fn listener_of(&self, inode: Inode) -> Option<Inode> {
        self.pending_on.get(&inode).copied()
    }

    /// Who can answer on unix socket `inode`: the holders of its peer, or, while its
    /// connection still waits in a listener's accept queue (no peer yet), the listener's.
    pub fn socket_counterparts(&self, inode: Inode, peer: Option<Inode>) -> Vec<Pid> {
        let other = peer.or_else(|| self.pending_on.get(&inode).copied());
        other
            .map(|p| self.socket_holders(p).iter().map(|h| h.pid).collect())
            .unwrap_or_default()
    }

    /// The forkserver child whose status pipe `inode` is.
    pub fn sentinel_child(&self, inode: Inode) -> Option<Pid> {
        self.sentinels.get(&inode).copied()
    }

    /// Under forkserver `Process.join` polls the child's sentinel pipe, which only the
    /// forkserver writes (when the child exits): such a read is a wait for that child.
    pub fn through_sentinels(&self, b: BlockedOn) -> BlockedOn {
        match b {
            BlockedOn::PipeRead { inode } => match self.sentinel_child(inode) {
                Some(c) => BlockedOn::Child {
                    pid: Some(c),
                    sentinel: Some(inode),
                },
                None => b,
            },
            BlockedOn::Any { of } => BlockedOn::Any {
                of: of.into_iter().map(|x| self.through_sentinels(x)).collect(),
            },
            other => other,
        }
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

    /// Evidence that processes exited: zombies (not yet reaped), processes recorded as gone,
    /// and sentinel pipes at EOF (see [`Index::sentinels_at_eof`]) of parents without a zombie
    /// or recorded child. The pid is None when only the sentinel tells.
    pub fn exited(&self) -> Vec<(Option<Pid>, String)> {
        let mut v: Vec<(Option<Pid>, String)> = self
            .snap
            .processes
            .iter()
            .filter(|p| p.state == 'Z')
            .map(|p| {
                (
                    Some(p.pid),
                    format!(
                        "{} exited (zombie: not yet joined by its parent {})",
                        p.pid, p.ppid
                    ),
                )
            })
            .collect();
        for g in &self.snap.gone {
            let how = g.ended.as_deref().unwrap_or("exited");
            v.push((Some(g.pid), format!("{} {}", g.pid, how)));
        }
        let told: Vec<Pid> = self
            .snap
            .processes
            .iter()
            .filter(|p| p.state == 'Z')
            .map(|p| p.ppid)
            .chain(self.snap.gone.iter().filter_map(|g| g.ppid))
            .collect();
        for s in self.sentinels_at_eof() {
            if told.contains(&s.holder) {
                continue;
            }
            let status = match s.buffered {
                Some(b) if b > 0 => format!(", {b} bytes (an exit status) buffered"),
                _ => String::new(),
            };
            v.push((
                None,
                format!(
                    "a child of {} exited: its sentinel pipe:[{}] ({}'s fd {}) is at EOF, no process holds the write end{status}",
                    s.holder, s.inode, s.holder, s.fd
                ),
            ));
        }
        v
    }

    /// Pipes a Python parent holds only the read end of, with no write end anywhere in the
    /// tree: a `Process.sentinel` whose child exited. Under fork and spawn the child held the
    /// write end until it died; under forkserver the forkserver wrote the exit status (8 bytes)
    /// and closed it when it reaped the child, so no zombie is left to tell. The holder must
    /// have a child in the tree (a forkserver client has the forkserver) or the pipe must hold
    /// an exit status: a child's read end of its `parent_sentinel` does not count. One entry
    /// per pipe.
    pub fn sentinels_at_eof(&self) -> Vec<SentinelAtEof> {
        let mut out: Vec<SentinelAtEof> = Vec::new();
        for (inode, hs) in &self.pipe_holders {
            if hs.iter().any(|h| h.write) {
                continue;
            }
            let buffered = self.snap.pipe(*inode).and_then(|p| p.buffered);
            let Some(h) = hs.iter().find(|h| {
                h.read
                    && self
                        .process(h.pid)
                        .is_some_and(|p| p.is_python() && p.state != 'Z')
                    && (!self.children(h.pid).is_empty() || buffered.unwrap_or(0) > 0)
            }) else {
                continue;
            };
            out.push(SentinelAtEof {
                holder: h.pid,
                fd: h.fd,
                inode: *inode,
                buffered: buffered.map(u64::from),
            });
        }
        out.sort_by_key(|s| (s.holder, s.fd));
        out
    }
}
