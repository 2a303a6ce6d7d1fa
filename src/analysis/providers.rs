//! Providers: for each wait, the threads that could plausibly release it.
//!
//! Candidates come from the resource: the holders of a pipe's other end, the socket peer's
//! holders, the semaphore's holder processes (or every mapper of a counting semaphore), the
//! mutex or RLock owner, the GIL holder, the awaited child's threads, or the other threads of
//! the process for a private lock. Then only plausible ones are kept:
//!
//! - never a zombie or an exited thread;
//! - for a pipe, socket or semaphore: never a thread that itself waits for the waiter's process
//!   to exit; as a reader or a releaser, never a thread already inside the interpreter's exit
//!   (`_exit_function`, `threading._shutdown`, a feeder join: its process's exit still gives
//!   readers EOF), nor a Queue feeder or Pool task handler (they only write);
//! - a periodic thread (`progress`) only with positive evidence: its poll set holds an fd of
//!   that pipe or socket, its stack is inside a receive (or send) call, it is the lock's known
//!   holder. Otherwise it is left out and the exclusion recorded, so that a finding can say
//!   what it assumed.
//!
//! A known owner (mutex `__owner`, RLock owner, GIL holder) is kept as is.

use super::index::Index;
use super::types::BlockedOn;
use crate::model::{Decoded, FdKind, Inode, Pid, SemKey, SyscallState, ThreadRef, Tid};
use foldhash::{HashMap, HashSet};

/// What a wait needs: providers, or a reason it can progress by itself.
pub enum Need {
    Seed(String),
    Providers(Vec<ThreadRef>),
}

/// What the filter knows.
pub struct Cx<'a> {
    pub idx: &'a Index<'a>,
    pub blocked: &'a HashMap<ThreadRef, BlockedOn>,
    /// Threads taken as periodic: providers only with evidence.
    pub periodic: &'a HashSet<ThreadRef>,
}

/// The kind of resource, for the plausibility rules.
#[derive(Clone, Copy)]
enum Kind<'k> {
    /// A pipe; `reader`: the waiter needs someone to read it.
    Pipe { inode: Inode, reader: bool },
    /// A unix socket whose other end is `peer`; `reader` as for a pipe.
    Socket { peer: Inode, reader: bool },
    /// A TCP connection (socket `inode` is the waiter's end); `reader` as for a pipe.
    Tcp { inode: Inode, reader: bool },
    /// A multiprocessing semaphore; `holder`: the known holding thread of a lock.
    Sem {
        key: &'k SemKey,
        holder: Option<ThreadRef>,
    },
    /// A lock or parking-lot wait private to the process.
    Private,
    /// A child process to exit.
    Child(Pid),
    /// A known owner: kept as is.
    Owner,
}

impl Kind<'_> {
    fn ipc(self) -> bool {
        matches!(
            self,
            Kind::Pipe { .. } | Kind::Socket { .. } | Kind::Tcp { .. } | Kind::Sem { .. }
        )
    }

    /// The waiter needs someone to read (it writes) or to release a lock.
    fn needs_reader_or_release(self) -> bool {
        matches!(
            self,
            Kind::Pipe { reader: true, .. }
                | Kind::Socket { reader: true, .. }
                | Kind::Tcp { reader: true, .. }
                | Kind::Sem { .. }
        )
    }

    /// What an excluded periodic thread is assumed not to do.
    fn words(self, waiter: ThreadRef) -> String {
        match self {
            Kind::Pipe {
                inode,
                reader: true,
            } => format!("read pipe:[{inode}]"),
            Kind::Pipe { inode, .. } => format!("write to pipe:[{inode}]"),
            Kind::Socket { peer, .. } => format!("serve socket:[{peer}]"),
            Kind::Tcp { inode, .. } => format!("answer on the TCP connection of socket:[{inode}]"),
            Kind::Sem { key, .. } => format!("release sem {key}"),
            Kind::Private => format!("release what thread {} waits for", waiter.tid),
            Kind::Child(pid) => format!("end process {pid}"),
            Kind::Owner => String::new(),
        }
    }
}

fn frames_any(cx: &Cx<'_>, t: ThreadRef, f: impl Fn(&crate::model::PyFrame) -> bool) -> bool {
    cx.idx
        .thread(t)
        .and_then(|(_, th)| th.py.as_ref())
        .is_some_and(|py| py.own_frames().iter().any(f))
}

/// The main thread is running the interpreter's exit: it will not read or release anything.
fn at_exit(cx: &Cx<'_>, t: ThreadRef) -> bool {
    t.tid.0 == t.pid.0
        && frames_any(cx, t, |f| {
            f.is("multiprocessing/util.py", "_exit_function")
                || f.is("threading.py", "_shutdown")
                || f.is("multiprocessing/queues.py", "_finalize_join")
        })
}

/// `t` waits for process `pid` to exit (join, waitpid).
fn waits_on_process(cx: &Cx<'_>, t: ThreadRef, pid: Pid) -> bool {
    match cx.blocked.get(&t) {
        Some(BlockedOn::Child { pid: Some(c), .. }) => *c == pid,
        Some(BlockedOn::Child { pid: None, .. }) => cx.idx.children(t.pid).contains(&pid),
        _ => false,
    }
}

/// A thread that only ever writes to pipes: a Queue feeder, a Pool's task handler.
fn writer_only(cx: &Cx<'_>, t: ThreadRef) -> bool {
    frames_any(cx, t, |f| {
        f.is("multiprocessing/queues.py", "_feed")
            || f.is("multiprocessing/pool.py", "_handle_tasks")
    })
}

/// The inodes of the fds `t` polls (poll, select, epoll), from its first look.
fn polled(cx: &Cx<'_>, t: ThreadRef) -> Vec<Inode> {
    let Some((p, th)) = cx.idx.thread(t) else {
        return Vec::new();
    };
    let SyscallState::Blocked(s) = &th.syscall else {
        return Vec::new();
    };
    let fds = match &s.decoded {
        Decoded::Poll { fds, .. } | Decoded::EpollWait { fds, .. } => fds,
        _ => return Vec::new(),
    };
    fds.iter()
        .filter_map(|fd| p.fds.iter().find(|e| e.fd == *fd))
        .filter_map(|e| match e.kind {
            FdKind::Pipe { inode } => Some(inode),
            FdKind::UnixSocket { inode, .. } | FdKind::Socket { inode, .. } => Some(inode),
            _ => None,
        })
        .collect()
}

/// `t` is blocked reading a pipe or socket whose other end is outside the tree (an execnet or
/// RPC receiver, a control channel): a service thread driven from outside. Like a periodic
/// thread it provides a resource of the tree only with [`evidence`]; its wait is not ours.
fn fed_from_outside(cx: &Cx<'_>, t: ThreadRef) -> bool {
    let idx = cx.idx;
    match cx.blocked.get(&t) {
        Some(BlockedOn::PipeRead { inode }) => !idx.pipe_holders(*inode).iter().any(|h| h.write),
        Some(BlockedOn::SocketRead { inode, peer }) => {
            peer.or_else(|| idx.listener_of(*inode)).is_none()
                || idx.socket_counterparts(*inode, *peer).is_empty()
        }
        Some(BlockedOn::TcpRead { inode, .. }) => {
            super::tcp::providers(idx, t, *inode, true).is_err()
        }
        _ => false,
    }
}

/// Positive evidence that a periodic thread provides this resource.
fn evidence(cx: &Cx<'_>, t: ThreadRef, kind: Kind<'_>) -> bool {
    let receiving = |f: &crate::model::PyFrame| {
        (f.file.ends_with("multiprocessing/connection.py")
            && (f.function.contains("recv") || f.function.contains("poll")))
            || f.is("multiprocessing/queues.py", "get")
    };
    let sending = |f: &crate::model::PyFrame| {
        (f.file.ends_with("multiprocessing/connection.py") && f.function.contains("send"))
            || f.is("multiprocessing/queues.py", "put")
    };
    match kind {
        Kind::Pipe { inode, reader } => {
            polled(cx, t).contains(&inode)
                || frames_any(cx, t, |f| if reader { receiving(f) } else { sending(f) })
        }
        Kind::Socket { peer, reader } => {
            polled(cx, t).contains(&peer)
                || frames_any(cx, t, |f| if reader { receiving(f) } else { sending(f) })
        }
        // The peer's end is on another socket inode: any socket in its poll set, or a
        // socket call on its stack.
        Kind::Tcp { reader, .. } => {
            !polled(cx, t).is_empty()
                || frames_any(cx, t, |f| {
                    (f.file.ends_with("socket.py") || f.file.ends_with("selectors.py"))
                        || if reader { receiving(f) } else { sending(f) }
                })
        }
        Kind::Sem { holder, .. } => {
            holder == Some(t)
                || frames_any(cx, t, |f| {
                    f.file.ends_with("multiprocessing/synchronize.py") || receiving(f) || sending(f)
                })
        }
        Kind::Owner => true,
        Kind::Private | Kind::Child(_) => false,
    }
}

/// Keeps the plausible providers among `cands` for `me`'s wait; records the periodic threads
/// left out for lack of evidence in `assumed`.
fn filter(
    cx: &Cx<'_>,
    me: ThreadRef,
    kind: Kind<'_>,
    cands: impl IntoIterator<Item = ThreadRef>,
    assumed: &mut Vec<(ThreadRef, String)>,
) -> Vec<ThreadRef> {
    let mut out = Vec::new();
    // A set beside the list: a lock wait in a 1,000-thread process has 1,000 candidates, and a
    // linear `contains` made the whole analysis cubic (26 s in a debug build).
    let mut seen = std::collections::HashSet::new();
    for c in cands {
        if c == me || !seen.insert(c) {
            continue;
        }
        let Some((p, t)) = cx.idx.thread(c) else {
            continue;
        };
        if t.state == 'Z' || t.state == 'X' || p.state == 'Z' {
            continue;
        }
        if matches!(kind, Kind::Owner) {
            out.push(c);
            continue;
        }
        if kind.ipc() && waits_on_process(cx, c, me.pid) {
            continue;
        }
        // A thread in the interpreter's exit reads and releases nothing; its process's exit
        // still provides EOF to readers of its pipes and sockets.
        if kind.needs_reader_or_release() && at_exit(cx, c) {
            continue;
        }
        if matches!(kind, Kind::Pipe { reader: true, .. }) && writer_only(cx, c) {
            continue;
        }
        if (cx.periodic.contains(&c) || (kind.ipc() && fed_from_outside(cx, c)))
            && !evidence(cx, c, kind)
        {
            assumed.push((c, kind.words(me)));
            continue;
        }
        out.push(c);
    }
    out
}

fn threads_of(cx: &Cx<'_>, pids: impl IntoIterator<Item = Pid>) -> Vec<ThreadRef> {
    let mut pids: Vec<Pid> = pids.into_iter().collect();
    pids.sort();
    pids.dedup();
    pids.into_iter()
        .flat_map(|p| cx.idx.threads_of(p))
        .collect()
}

/// What `me`'s wait `b` needs.
pub fn need(
    cx: &Cx<'_>,
    me: ThreadRef,
    b: &BlockedOn,
    assumed: &mut Vec<(ThreadRef, String)>,
) -> Need {
    let idx = cx.idx;
    match b {
        BlockedOn::Running => Need::Seed("running".into()),
        BlockedOn::Gil => match super::graph::gil_holder(idx, me) {
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
                Ok(v) => {
                    let kind = Kind::Tcp {
                        inode: *inode,
                        reader: !read,
                    };
                    Need::Providers(filter(cx, me, kind, v, assumed))
                }
                Err(why) => Need::Seed(why),
            }
        }
        BlockedOn::PipeRead { inode } | BlockedOn::PipeWrite { inode, .. } => {
            let reader = matches!(b, BlockedOn::PipeWrite { .. });
            let holders: Vec<Pid> = idx
                .pipe_holders(*inode)
                .iter()
                .filter(|h| if reader { h.read } else { h.write })
                .map(|h| h.pid)
                .collect();
            if holders.is_empty() {
                return Need::Seed(outside_pipe(idx, *inode, reader));
            }
            let kind = Kind::Pipe {
                inode: *inode,
                reader,
            };
            Need::Providers(filter(cx, me, kind, threads_of(cx, holders), assumed))
        }
        BlockedOn::SocketRead { inode, peer } | BlockedOn::SocketWrite { inode, peer } => {
            // The peer's holders, or while the connection waits in a listener's accept queue,
            // the listener's.
            let holders: Vec<Pid> = idx.socket_counterparts(*inode, *peer);
            let Some(other) = peer.or_else(|| idx.listener_of(*inode)) else {
                return Need::Seed("its peer socket is outside the tree".into());
            };
            if holders.is_empty() {
                return Need::Seed("its peer socket is outside the tree".into());
            }
            let kind = Kind::Socket {
                peer: other,
                reader: matches!(b, BlockedOn::SocketWrite { .. }),
            };
            Need::Providers(filter(cx, me, kind, threads_of(cx, holders), assumed))
        }
        BlockedOn::Semaphore { key } => {
            let sem = idx.semaphore(key);
            let holders = sem.and_then(|s| s.holders.as_ref());
            let lock = holders.is_some_and(|h| h.iter().any(|s| s.maxvalue == 1));
            match holders {
                Some(h) if lock => {
                    let mut out = Vec::new();
                    for s in h.iter().filter(|s| s.count > 0) {
                        let holder = s
                            .last_tid
                            .map(|t| ThreadRef {
                                pid: s.pid,
                                tid: Tid(t),
                            })
                            .filter(|t| idx.thread(*t).is_some());
                        let kind = Kind::Sem { key, holder };
                        out.extend(filter(cx, me, kind, idx.threads_of(s.pid), assumed));
                    }
                    Need::Providers(out)
                }
                _ => {
                    let kind = Kind::Sem { key, holder: None };
                    let cands = threads_of(cx, idx.sem_mappers(key).iter().copied());
                    Need::Providers(filter(cx, me, kind, cands, assumed))
                }
            }
        }
        BlockedOn::Mutex { owner_tid, .. } => match owner_tid {
            Some(o) => {
                let owner = ThreadRef {
                    pid: me.pid,
                    tid: Tid(*o),
                };
                Need::Providers(filter(cx, me, Kind::Owner, [owner], assumed))
            }
            None => Need::Providers(filter(
                cx,
                me,
                Kind::Private,
                idx.threads_of(me.pid),
                assumed,
            )),
        },
        BlockedOn::ThreadLock { .. } => match idx.lock_object(me) {
            // An owned RLock: only its owner can release it; none when the owner is not a
            // thread of this process (inherited across fork, or its thread is gone).
            Some(l) if l.owner != 0 => {
                let owner = l.owner_tid.map(|t| ThreadRef {
                    pid: me.pid,
                    tid: Tid(t),
                });
                Need::Providers(filter(cx, me, Kind::Owner, owner, assumed))
            }
            _ => Need::Providers(filter(
                cx,
                me,
                Kind::Private,
                idx.threads_of(me.pid),
                assumed,
            )),
        },
        BlockedOn::ParkingLot { .. } => Need::Providers(filter(
            cx,
            me,
            Kind::Private,
            idx.threads_of(me.pid),
            assumed,
        )),
        BlockedOn::Child { pid, .. } => {
            let kids: Vec<Pid> = match pid {
                Some(c) => vec![*c],
                None => idx.children(me.pid).to_vec(),
            };
            if kids.iter().any(|k| idx.process(*k).is_none()) {
                return Need::Seed("the awaited child is not visible".into());
            }
            let mut out = Vec::new();
            for k in kids {
                out.extend(filter(cx, me, Kind::Child(k), idx.threads_of(k), assumed));
            }
            Need::Providers(out)
        }
        BlockedOn::Any { of } => {
            let mut all = Vec::new();
            for sub in of {
                match need(cx, me, sub, assumed) {
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

/// A pipe whose other end no process of the tree holds: its holder is outside (a reader blocks
/// only while a writer exists, a writer only while a reader exists).
fn outside_pipe(idx: &Index<'_>, inode: Inode, reader: bool) -> String {
    let end = if reader { "read" } else { "write" };
    match idx.pipe(inode).and_then(|p| p.outside.as_ref()) {
        Some(v) if !v.is_empty() => format!(
            "the {end} end of pipe:[{inode}] is held outside the tree by {}",
            v.iter()
                .map(|h| format!("{} ({}, fd {})", h.pid, h.comm, h.fd))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("the {end} end of pipe:[{inode}] is held outside the tree (holder unknown)"),
    }
}
