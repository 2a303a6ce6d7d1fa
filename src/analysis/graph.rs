//! The wait-for graph and the stuck-set fixpoint.
//!
//! Each thread waits on a resource; each resource has *providers*, the threads that could ever
//! release it (the other end's holders, the semaphore's holder or mappers, the awaited child,
//! the mutex owner, the other threads of the process for a private lock). Seeds are threads that
//! can progress on their own (running, timed waits, waits on things outside the tree, or seen to
//! move between looks). A thread can progress if a provider can; the least fixpoint leaves the
//! threads that never can.

use super::blocked::{self, is_housekeeping};
use super::index::Index;
use super::types::{BlockedOn, Progress};
use crate::model::{Inode, Pid, SyscallState, ThreadRef, Tid};
use std::collections::{HashMap, HashSet};

pub struct Graph {
    /// Threads in snapshot order.
    pub order: Vec<ThreadRef>,
    pub blocked: HashMap<ThreadRef, BlockedOn>,
    pub providers: HashMap<ThreadRef, Vec<ThreadRef>>,
    pub progress: HashMap<ThreadRef, Progress>,
    pub because: HashMap<ThreadRef, String>,
    pub housekeeping: HashSet<ThreadRef>,
    pub passive: HashSet<ThreadRef>,
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
}

/// What a resource needs: providers, or a reason it can progress by itself.
enum Need {
    Seed(String),
    Providers(Vec<ThreadRef>),
}

pub fn build(idx: &Index<'_>) -> Graph {
    let snap = idx.snap;
    let mut g = Graph {
        order: Vec::new(),
        blocked: HashMap::new(),
        providers: HashMap::new(),
        progress: HashMap::new(),
        because: HashMap::new(),
        housekeeping: HashSet::new(),
        passive: HashSet::new(),
    };
    let moved_pipes: HashSet<Inode> = snap
        .pipes
        .iter()
        .filter(|p| {
            p.later_buffered
                .iter()
                .any(|b| b.is_some() && *b != p.buffered)
        })
        .map(|p| p.inode)
        .collect();
    let mut seeds: HashMap<ThreadRef, String> = HashMap::new();
    for p in &snap.processes {
        for t in &p.threads {
            let r = ThreadRef {
                pid: p.pid,
                tid: t.tid,
            };
            let b = idx.through_sentinels(blocked::resolve(p, t));
            g.order.push(r);
            let hk = is_housekeeping(t);
            if hk {
                g.housekeeping.insert(r);
            }
            if blocked::is_passive(idx, p, t, &b) {
                g.passive.insert(r);
            }
            let zombie = t.state == 'Z' || t.state == 'X';
            match need(idx, r, &b) {
                Need::Seed(why) if !hk && !zombie => {
                    seeds.insert(r, why);
                }
                Need::Seed(_) => {}
                Need::Providers(v) => {
                    g.providers.insert(r, v);
                }
            }
            // GIL waiters wake every 5 ms and accrue CPU ticks: never evidence of progress.
            if !hk && !zombie && !seeds.contains_key(&r) && b != BlockedOn::Gil {
                if let Some(why) = moved(t, snap.max_stop_us.is_some()) {
                    seeds.insert(r, why);
                } else if let Some(ino) = pipe_of(&b).filter(|i| moved_pipes.contains(i)) {
                    seeds.insert(r, format!("pipe:[{ino}] changed fill between looks"));
                }
            }
            g.blocked.insert(r, b);
        }
    }
    // Least fixpoint: propagate "can progress" from seeds through providers.
    let mut can: HashMap<ThreadRef, String> = seeds;
    loop {
        let mut added = Vec::new();
        for r in &g.order {
            if can.contains_key(r) {
                continue;
            }
            if let Some(p) = g.providers(*r).iter().find(|p| can.contains_key(p)) {
                added.push((*r, format!("{}/{} can progress", p.pid, p.tid)));
            }
        }
        if added.is_empty() {
            break;
        }
        can.extend(added);
    }
    for r in &g.order {
        let pr = if can.contains_key(r) {
            Progress::CanProgress
        } else {
            Progress::Stuck
        };
        g.progress.insert(*r, pr);
    }
    g.because = can;
    g
}

fn pipe_of(b: &BlockedOn) -> Option<Inode> {
    match b {
        BlockedOn::PipeRead { inode } | BlockedOn::PipeWrite { inode, .. } => Some(*inode),
        _ => None,
    }
}

/// Evidence that a thread moved between looks: CPU time, state or syscall changed. When mphang
/// stopped threads for native stacks, the kernel restarting the interrupted syscall may be
/// charged one tick: one tick of slack then.
fn moved(t: &crate::model::ThreadSnap, stopped: bool) -> Option<String> {
    let slack = u64::from(stopped);
    let first = match &t.syscall {
        SyscallState::Blocked(s) => Some((s.nr, s.args[0], s.args[1], s.args[2])),
        _ => None,
    };
    for l in &t.later {
        if !l.alive {
            return Some(format!("exited within {} ms", l.after_ms));
        }
        if l.cpu_ticks > t.cpu_ticks + slack || l.cpu_ticks < t.cpu_ticks {
            return Some(format!(
                "used {} CPU ticks within {} ms",
                l.cpu_ticks.saturating_sub(t.cpu_ticks),
                l.after_ms
            ));
        }
        let restarted = matches!((first, l.syscall), (Some(_), Some((219, ..))));
        if l.syscall != first && !restarted && !write_resumed(first, l.syscall) {
            return Some(format!("changed system call within {} ms", l.after_ms));
        }
    }
    None
}

/// A blocked write that a signal or ptrace stop cut short returns the bytes already copied, and
/// the caller writes the rest: same call and fd, the buffer advanced by d and the count reduced
/// by d. mphang's own native sampling causes exactly this; it is not progress.
fn write_resumed(first: Option<(i64, u64, u64, u64)>, later: Option<(i64, u64, u64, u64)>) -> bool {
    match (first, later) {
        (Some((nr, fd, buf, count)), Some((nr2, fd2, buf2, count2))) => {
            matches!(nr, 1 | 44)
                && nr == nr2
                && fd == fd2
                && buf2 > buf
                && count2 < count
                && buf2 - buf == count - count2
        }
        _ => false,
    }
}

/// The thread of `me`'s process that holds the GIL while blocked in a system call (not
/// running), when py-spy saw one.
pub fn gil_holder(idx: &Index<'_>, me: ThreadRef) -> Option<ThreadRef> {
    let p = idx.process(me.pid)?;
    p.threads
        .iter()
        .find(|t| {
            t.tid != me.tid
                && t.py.as_ref().is_some_and(|py| py.owns_gil)
                && t.state != 'R'
                && matches!(t.syscall, SyscallState::Blocked(_))
        })
        .map(|t| ThreadRef {
            pid: me.pid,
            tid: t.tid,
        })
}

fn threads_except(idx: &Index<'_>, pid: Pid, me: ThreadRef) -> Vec<ThreadRef> {
    idx.threads_of(pid)
        .into_iter()
        .filter(|t| *t != me)
        .collect()
}

fn need(idx: &Index<'_>, me: ThreadRef, b: &BlockedOn) -> Need {
    match b {
        BlockedOn::Running => Need::Seed("running".into()),
        BlockedOn::Gil => match gil_holder(idx, me) {
            // A holder blocked in the kernel (C code that kept the GIL) must return first.
            Some(h) => Need::Providers(vec![h]),
            None => Need::Seed("waits for the GIL (CPU contention, not a hang)".into()),
        },
        BlockedOn::Timed { what } => Need::Seed(format!("in {what}, which returns by itself")),
        BlockedOn::External { what } => Need::Seed(format!("waits on {what}, outside the tree")),
        BlockedOn::Signal => Need::Seed("waits for a signal from outside".into()),
        BlockedOn::Unknown { what } => Need::Seed(format!("{what}: cannot prove it stuck")),
        BlockedOn::Accept { .. } => Need::Providers(Vec::new()),
        BlockedOn::TcpRead { inode, .. } | BlockedOn::TcpWrite { inode, .. } => {
            let read = matches!(b, BlockedOn::TcpRead { .. });
            match super::tcp::providers(idx, me, *inode, read) {
                Ok(v) => Need::Providers(v),
                Err(why) => Need::Seed(why),
            }
        }
        BlockedOn::PipeRead { inode } => holders_threads(
            idx,
            idx.pipe_holders(*inode)
                .iter()
                .filter(|h| h.write)
                .map(|h| h.pid),
            me,
        ),
        BlockedOn::PipeWrite { inode, .. } => holders_threads(
            idx,
            idx.pipe_holders(*inode)
                .iter()
                .filter(|h| h.read)
                .map(|h| h.pid),
            me,
        ),
        BlockedOn::SocketRead { inode, peer } | BlockedOn::SocketWrite { inode, peer } => {
            let holders: Vec<Pid> = idx.socket_counterparts(*inode, *peer);
            if holders.is_empty() {
                Need::Seed("its peer socket is outside the tree".into())
            } else {
                holders_threads(idx, holders.into_iter(), me)
            }
        }
        BlockedOn::Semaphore { key } => {
            let sem = idx.snap.semaphore(key);
            let holders = sem.and_then(|s| s.holders.as_ref());
            let lock = holders.is_some_and(|h| h.iter().any(|s| s.maxvalue == 1));
            match holders {
                Some(h) if lock => Need::Providers(
                    h.iter()
                        .filter(|s| s.count > 0)
                        .flat_map(|s| threads_except(idx, s.pid, me))
                        .collect(),
                ),
                _ => holders_threads(idx, idx.sem_mappers(key).iter().copied(), me),
            }
        }
        BlockedOn::Mutex { owner_tid, .. } => match owner_tid {
            Some(o) => {
                let owner = ThreadRef {
                    pid: me.pid,
                    tid: Tid(*o),
                };
                if idx.thread(owner).is_some() && owner != me {
                    Need::Providers(vec![owner])
                } else {
                    Need::Providers(Vec::new())
                }
            }
            _ => Need::Providers(threads_except(idx, me.pid, me)),
        },
        BlockedOn::ThreadLock { .. } => match idx.lock_object(me) {
            // An owned RLock: only its owner can release it; none when the owner is not a
            // thread of this process (inherited across fork, or its thread is gone).
            Some(l) if l.owner != 0 => Need::Providers(
                l.owner_tid
                    .map(|t| ThreadRef {
                        pid: me.pid,
                        tid: Tid(t),
                    })
                    .filter(|o| *o != me && idx.thread(*o).is_some())
                    .into_iter()
                    .collect(),
            ),
            _ => Need::Providers(threads_except(idx, me.pid, me)),
        },
        BlockedOn::ParkingLot { .. } => Need::Providers(threads_except(idx, me.pid, me)),
        BlockedOn::Child { pid, .. } => {
            let kids: Vec<Pid> = match pid {
                Some(c) => vec![*c],
                None => idx.children(me.pid).to_vec(),
            };
            if kids.iter().any(|k| idx.process(*k).is_none()) {
                return Need::Seed("the awaited child is not visible".into());
            }
            Need::Providers(kids.iter().flat_map(|k| idx.threads_of(*k)).collect())
        }
        BlockedOn::Any { of } => {
            let mut all = Vec::new();
            for sub in of {
                match need(idx, me, sub) {
                    Need::Seed(why) => return Need::Seed(why),
                    Need::Providers(v) => all.extend(v),
                }
            }
            all.sort();
            all.dedup();
            Need::Providers(all)
        }
    }
}

fn holders_threads(idx: &Index<'_>, pids: impl Iterator<Item = Pid>, me: ThreadRef) -> Need {
    let mut pids: Vec<Pid> = pids.collect();
    pids.sort();
    pids.dedup();
    Need::Providers(
        pids.into_iter()
            .flat_map(|p| threads_except(idx, p, me))
            .collect(),
    )
}
