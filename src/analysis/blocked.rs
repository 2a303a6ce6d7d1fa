//! Blocked-on: what each thread waits for, from its decoded syscall, fds and memory; and which
//! threads are known idle services (periodic library loops, idle workers, Manager threads
//! waiting for requests) rather than user work.

use super::types::BlockedOn;
use crate::model::{Decoded, FdKind, FutexRegion, ProcessSnap, Role, SyscallState, ThreadSnap};

/// Resolves what `t` (a thread of `p`) waits for. An exited (zombie) thread and a thread
/// stopped by a signal or a tracer are said to be so, whatever their last system call.
pub fn resolve(p: &ProcessSnap, t: &ThreadSnap) -> BlockedOn {
    match t.state {
        'Z' | 'X' => BlockedOn::Unknown {
            what: "exited (a zombie until its parent reaps it)".into(),
        },
        'T' | 't' => {
            let was = super::describe::short(&resolve_running(p, t));
            let (by, until) = if t.state == 't' {
                (
                    "by a tracer (state t: a debugger or profiler holds it)",
                    "when its tracer lets it go",
                )
            } else {
                (
                    "by a signal (state T: SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU)",
                    "only after SIGCONT",
                )
            };
            BlockedOn::Unknown {
                what: format!("stopped {by}, in {was}; it runs again {until}"),
            }
        }
        _ => resolve_running(p, t),
    }
}

/// What a thread that is not stopped or exited waits for.
fn resolve_running(p: &ProcessSnap, t: &ThreadSnap) -> BlockedOn {
    // A GIL waiter wakes every 5 ms and may be caught runnable: still waiting for the GIL.
    if t.native.as_deref().is_some_and(crate::model::waits_for_gil) {
        return BlockedOn::Gil;
    }
    if t.state == 'R' || t.state == 'D' {
        return BlockedOn::Running;
    }
    let s = match &t.syscall {
        SyscallState::Running => return BlockedOn::Running,
        SyscallState::UserStopped => {
            return BlockedOn::Unknown {
                what: "stopped in user space".into(),
            }
        }
        SyscallState::Unknown => {
            return BlockedOn::Unknown {
                what: t
                    .wchan
                    .clone()
                    .map(|w| format!("in {w} (syscall unreadable)"))
                    .unwrap_or_else(|| "syscall unreadable".into()),
            }
        }
        SyscallState::Blocked(s) => s,
    };
    match &s.decoded {
        Decoded::Read { fd } => on_fd(p, *fd, false, 0),
        Decoded::Write { fd, count } => on_fd(p, *fd, true, *count),
        Decoded::Poll {
            fds,
            timeout_ms,
            sleep_only,
        } => {
            if *sleep_only {
                BlockedOn::Timed {
                    what: "time.sleep".into(),
                }
            } else if let Some(ms) = timeout_ms {
                BlockedOn::Timed {
                    what: format!("{} with a {ms} ms timeout", s.name),
                }
            } else {
                any_of(p, fds)
            }
        }
        Decoded::EpollWait {
            fds, timeout_ms, ..
        } => match timeout_ms {
            Some(ms) => BlockedOn::Timed {
                what: format!("epoll_wait with a {ms} ms timeout"),
            },
            None => any_of(p, fds),
        },
        Decoded::Futex(f) => {
            if f.timed {
                return match f.region {
                    FutexRegion::Interpreter => BlockedOn::Gil,
                    _ => BlockedOn::Timed {
                        what: "a timed lock or condition wait".into(),
                    },
                };
            }
            match &f.region {
                FutexRegion::SharedSem { key } => BlockedOn::Semaphore { key: key.clone() },
                _ if f.is_mutex() => BlockedOn::Mutex {
                    uaddr: f.uaddr,
                    owner_tid: f.mutex_owner().map(|o| o.tid).filter(|&t| t > 0),
                },
                // 3.14+: a PyMutex-based lock parks; its key (the PyMutex) names the lock.
                FutexRegion::OwnStack { key } if f.lock.is_some() => {
                    BlockedOn::ThreadLock { uaddr: *key }
                }
                FutexRegion::OwnStack { key } => BlockedOn::ParkingLot {
                    uaddr: f.uaddr,
                    key: *key,
                },
                _ => BlockedOn::ThreadLock { uaddr: f.uaddr },
            }
        }
        Decoded::WaitChild { pid } => BlockedOn::Child {
            pid: *pid,
            sentinel: None,
        },
        Decoded::Sleep => BlockedOn::Timed {
            what: "sleep".into(),
        },
        Decoded::Accept { fd } => BlockedOn::Accept {
            inode: p
                .fds
                .iter()
                .find(|e| e.fd == *fd)
                .and_then(|e| e.socket_inode()),
        },
        Decoded::Signal => BlockedOn::Signal,
        Decoded::Restart => BlockedOn::Timed {
            what: "a restarted timed wait".into(),
        },
        Decoded::Other => BlockedOn::Unknown {
            what: format!("in {}", s.name),
        },
    }
}

fn on_fd(p: &ProcessSnap, fd: i32, write: bool, pending: u64) -> BlockedOn {
    let Some(e) = p.fds.iter().find(|e| e.fd == fd) else {
        return BlockedOn::Unknown {
            what: format!("fd {fd} (closed?)"),
        };
    };
    match &e.kind {
        FdKind::Pipe { inode } if write => BlockedOn::PipeWrite {
            inode: *inode,
            pending,
        },
        FdKind::Pipe { inode } => BlockedOn::PipeRead { inode: *inode },
        FdKind::UnixSocket {
            inode,
            peer,
            listening: false,
            ..
        } if write => BlockedOn::SocketWrite {
            inode: *inode,
            peer: *peer,
        },
        FdKind::UnixSocket {
            inode,
            peer,
            listening: false,
            ..
        } => BlockedOn::SocketRead {
            inode: *inode,
            peer: *peer,
        },
        FdKind::Tty { path } => BlockedOn::External {
            what: format!("terminal {path}"),
        },
        FdKind::File { path } => BlockedOn::External {
            what: format!("file {path}"),
        },
        FdKind::Socket { tcp: Some(_), .. } => {
            super::tcp::blocked_on(e, write, pending).unwrap_or(BlockedOn::Unknown {
                what: format!("fd {fd} (tcp)"),
            })
        }
        FdKind::Socket { inode, .. } => BlockedOn::External {
            what: format!("socket:[{inode}] (network)"),
        },
        other => BlockedOn::External {
            what: format!("fd {fd} ({other:?})"),
        },
    }
}

fn any_of(p: &ProcessSnap, fds: &[i32]) -> BlockedOn {
    if fds.is_empty() {
        return BlockedOn::Signal;
    }
    let of: Vec<BlockedOn> = fds
        .iter()
        .map(
            |fd| match p.fds.iter().find(|e| e.fd == *fd).map(|e| &e.kind) {
                Some(FdKind::UnixSocket {
                    inode,
                    listening: true,
                    ..
                }) => BlockedOn::Accept {
                    inode: Some(*inode),
                },
                _ => on_fd(p, *fd, false, 0),
            },
        )
        .collect();
    if of.len() == 1 {
        of.into_iter().next().unwrap_or(BlockedOn::Signal)
    } else {
        BlockedOn::Any { of }
    }
}

/// An idle service thread or process: waits for work and is never the subject of a finding
/// (it still appears in chains). A Manager server thread is idle only while it waits for a
/// request, not while it runs one (e.g. blocked acquiring a lock for a client).
pub fn is_passive(p: &ProcessSnap, t: &ThreadSnap, b: &BlockedOn) -> bool {
    if t.state == 'Z' {
        return true;
    }
    if p.role == Role::ManagerServer {
        return !in_manager_request(t);
    }
    if matches!(
        p.role,
        Role::ResourceTracker | Role::Forkserver | Role::NonPython
    ) {
        return true;
    }
    if matches!(b, BlockedOn::Accept { .. }) {
        return true;
    }
    let Some(py) = &t.py else { return false };
    let own = py.own_frames();
    let has = |file: &str, func: &str| own.iter().any(|f| f.is(file, func));
    let idle_feeder = has("multiprocessing/queues.py", "_feed")
        && own
            .first()
            .is_some_and(|f| f.file.ends_with("threading.py"));
    idle_feeder
        || super::progress::known_loop(py).is_some()
        || has("multiprocessing/pool.py", "_handle_tasks")
        || has("multiprocessing/pool.py", "_handle_results")
        || (p.role == Role::PoolWorker && has("multiprocessing/pool.py", "worker") && {
            // an idle worker waits for a task inside `get` (inqueue read or its _rlock)
            own.iter().any(|f| f.named("get")) || own.iter().any(|f| f.function.contains("recv"))
        })
}

/// A Manager server thread inside a client's request: in `serve_client`, but not waiting for
/// the next request in `recv`.
pub fn in_manager_request(t: &ThreadSnap) -> bool {
    let Some(py) = &t.py else { return false };
    let own = py.own_frames();
    let Some(i) = own
        .iter()
        .position(|f| f.is("multiprocessing/managers.py", "serve_client"))
    else {
        return false;
    };
    !own[..i]
        .iter()
        .any(|f| f.file.ends_with("multiprocessing/connection.py"))
}
