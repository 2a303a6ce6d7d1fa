//! Words for people: what a thread waits on and who is on the other side, one line each.

use super::graph::Graph;
use super::index::{Holder, Index};
use super::types::BlockedOn;
use crate::model::{Pid, ThreadRef};

/// Short name of a wait (`wait4(3736)`, `write pipe:[6692]`), used inside chains.
pub fn short(b: &BlockedOn) -> String {
    match b {
        BlockedOn::Running => "running".into(),
        BlockedOn::PipeRead { inode } => format!("read pipe:[{inode}]"),
        BlockedOn::PipeWrite { inode, .. } => format!("write pipe:[{inode}]"),
        BlockedOn::SocketRead { inode, .. } => format!("recv socket:[{inode}]"),
        BlockedOn::SocketWrite { inode, .. } => format!("send socket:[{inode}]"),
        BlockedOn::TcpRead { .. } | BlockedOn::TcpWrite { .. } => {
            super::tcp::short(b).unwrap_or_default()
        }
        BlockedOn::Accept { .. } => "accept (waits for a client)".into(),
        BlockedOn::External { what } => format!("waits on {what}"),
        BlockedOn::Semaphore { key } => format!("acquire SemLock sem {key}"),
        BlockedOn::Mutex { owner_tid, .. } => match owner_tid {
            Some(o) => format!(
                "pthread_mutex_lock (owner TID {})",
                crate::model::Tid(*o).local()
            ),
            None => "pthread_mutex_lock".into(),
        },
        BlockedOn::ThreadLock { .. } => "a threading lock or condition".into(),
        BlockedOn::ParkingLot { .. } => "a parking-lot wait".into(),
        BlockedOn::Gil => "waiting for the GIL".into(),
        BlockedOn::Child {
            pid: Some(p),
            sentinel: Some(s),
        } => format!("join({p}) via sentinel pipe:[{s}]"),
        BlockedOn::Child { pid: Some(p), .. } => format!("wait4({p})"),
        BlockedOn::Child { pid: None, .. } => "wait4(any child)".into(),
        BlockedOn::Any { of } => format!(
            "poll on {}",
            of.iter().map(short).collect::<Vec<_>>().join(", ")
        ),
        BlockedOn::Timed { what } => what.clone(),
        BlockedOn::Signal => "waits for a signal".into(),
        BlockedOn::Unknown { what } => what.clone(),
    }
}

/// `3694 (main), blocked in wait4(3736)`: a process and what its main (or only) thread does.
pub fn process_brief(idx: &Index<'_>, g: &Graph, pid: Pid) -> String {
    let Some(p) = idx.process(pid) else {
        return format!("{pid} (not in the tree)");
    };
    if p.state == 'Z' {
        return format!("{} (exited, zombie)", p.label());
    }
    if p.state == 'T' || p.state == 't' {
        return format!("{} (stopped; runs again only after SIGCONT)", p.label());
    }
    let main = ThreadRef {
        pid,
        tid: crate::model::Tid(pid.0),
    };
    match g.blocked(main) {
        Some(BlockedOn::Running) => format!("{}, running", p.label()),
        Some(b) => format!(
            "{}, whose main thread is blocked in {}",
            p.label(),
            short(b)
        ),
        None => p.label(),
    }
}

/// At most this many holder processes are described in one line; the rest are counted.
const HOLDERS_SHOWN: usize = 8;

fn holders_text(idx: &Index<'_>, g: &Graph, me: ThreadRef, hs: &[&Holder]) -> String {
    if hs.is_empty() {
        return "held by no process".into();
    }
    // Fds per process, in the order the processes first appear (one pass: a pipe inherited by
    // a 64-process tree has 64 holders, and every blocked thread's line names them).
    let mut pids: Vec<(Pid, Vec<i32>)> = Vec::new();
    for h in hs {
        match pids.iter_mut().rev().find(|(p, _)| *p == h.pid) {
            Some((_, fds)) => fds.push(h.fd),
            None => pids.push((h.pid, vec![h.fd])),
        }
        if pids.len() > HOLDERS_SHOWN {
            break;
        }
    }
    let total = {
        let mut all: Vec<Pid> = hs.iter().map(|h| h.pid).collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    let mut parts: Vec<String> = pids
        .iter()
        .take(HOLDERS_SHOWN)
        .map(|(pid, fds)| {
            let fds: Vec<String> = fds.iter().map(i32::to_string).collect();
            if *pid == me.pid {
                format!("this process (fd {})", fds.join(","))
            } else {
                format!("{} (fd {})", process_brief(idx, g, *pid), fds.join(","))
            }
        })
        .collect();
    if total > HOLDERS_SHOWN {
        parts.push(format!("and {} more processes", total - HOLDERS_SHOWN));
    }
    format!("held by {}", parts.join("; "))
}

/// The holders of a pipe's other end; none in the tree means outside it (named when the
/// machine-wide lookup found them).
fn pipe_holders_text(
    idx: &Index<'_>,
    g: &Graph,
    me: ThreadRef,
    inode: crate::model::Inode,
    hs: &[&Holder],
) -> String {
    if !hs.is_empty() {
        return holders_text(idx, g, me, hs);
    }
    match idx.pipe(inode).and_then(|p| p.outside.as_ref()) {
        Some(v) if !v.is_empty() => format!(
            "held outside the tree by {}",
            v.iter()
                .map(|h| format!("{} ({}, fd {})", h.pid, h.comm, h.fd))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "held outside the tree (holder unknown)".into(),
    }
}

fn pipe_fill(idx: &Index<'_>, inode: crate::model::Inode) -> String {
    match idx.pipe(inode) {
        Some(p) => match (p.buffered, p.capacity) {
            (Some(b), Some(c)) => format!("{b} B buffered of {} KiB", c / 1024),
            (Some(b), None) => format!("{b} B buffered"),
            _ => "fill unknown".into(),
        },
        None => "fill unknown".into(),
    }
}

fn py_top(idx: &Index<'_>, me: ThreadRef) -> String {
    idx.thread(me)
        .and_then(|(_, t)| t.py.as_ref())
        .and_then(|py| py.frames.first())
        .map(|f| format!(" in {}", f.function))
        .unwrap_or_default()
}

/// The one-line description of a thread's wait.
pub fn line(idx: &Index<'_>, g: &Graph, me: ThreadRef) -> String {
    let Some(b) = g.blocked(me) else {
        return String::new();
    };
    match b {
        BlockedOn::PipeWrite { inode, pending } => {
            let hs: Vec<&Holder> = idx.pipe_holders(*inode).iter().filter(|h| h.read).collect();
            format!(
                "write {pending} B to pipe:[{inode}] ({}, full); read end {}",
                pipe_fill(idx, *inode),
                pipe_holders_text(idx, g, me, *inode, &hs)
            )
        }
        BlockedOn::PipeRead { inode } => {
            let hs: Vec<&Holder> = idx.pipe_holders(*inode).iter().filter(|h| h.write).collect();
            format!(
                "read from pipe:[{inode}] ({}); write end {}",
                pipe_fill(idx, *inode),
                pipe_holders_text(idx, g, me, *inode, &hs)
            )
        }
        BlockedOn::SocketRead { inode, peer } | BlockedOn::SocketWrite { inode, peer } => {
            let verb = if matches!(b, BlockedOn::SocketRead { .. }) {
                "recv from"
            } else {
                "send to"
            };
            match peer {
                Some(pi) => {
                    let hs: Vec<&Holder> = idx.socket_holders(*pi).iter().collect();
                    format!(
                        "{verb} unix socket:[{inode}]; peer socket:[{pi}] {}",
                        holders_text(idx, g, me, &hs)
                    )
                }
                None => match idx.listener_of(*inode) {
                    Some(l) => {
                        let hs: Vec<&Holder> = idx.socket_holders(l).iter().collect();
                        format!(
                            "{verb} unix socket:[{inode}], whose connection waits to be accepted on socket:[{l}] {}",
                            holders_text(idx, g, me, &hs)
                        )
                    }
                    None => format!("{verb} unix socket:[{inode}] (no peer)"),
                },
            }
        }
        BlockedOn::Child { pid: Some(c), .. } => format!(
            "{}: waits for child {}",
            short(b),
            process_brief(idx, g, *c)
        ),
        BlockedOn::TcpRead { .. } | BlockedOn::TcpWrite { .. } => {
            super::tcp::line(idx, g, me, b).unwrap_or_else(|| short(b))
        }
        BlockedOn::Semaphore { key } => {
            let sem = idx.semaphore(key);
            let state = sem
                .map(|s| {
                    format!(
                        "value {}, {} waiters",
                        s.value.map(|v| v.to_string()).unwrap_or("?".into()),
                        s.nwaiters.map(|v| v.to_string()).unwrap_or("?".into())
                    )
                })
                .unwrap_or_default();
            let who = match sem.and_then(|s| s.holders.as_ref()) {
                Some(h) => {
                    let held: Vec<String> = h
                        .iter()
                        .filter(|s| s.count > 0)
                        .map(|s| match s.last_tid {
                            Some(t) => format!("{} (thread {t}, count {})", s.pid, s.count),
                            None => format!("{} (count {})", s.pid, s.count),
                        })
                        .collect();
                    if held.is_empty() && h.iter().any(|s| s.maxvalue == 1) {
                        "no live process holds it".to_string()
                    } else if held.is_empty() {
                        "a semaphore: any process mapping it may release it".to_string()
                    } else {
                        format!("held by {}", held.join(", "))
                    }
                }
                None => format!(
                    "mapped by {}",
                    idx.sem_mappers(key)
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!("acquire SemLock sem {key} ({state}){}; {who}", py_top(idx, me))
        }
        BlockedOn::Mutex { uaddr, owner_tid } => match owner_tid {
            Some(o) => {
                let here = idx
                    .thread(ThreadRef {
                        pid: me.pid,
                        tid: crate::model::Tid(*o),
                    })
                    .is_some();
                let elsewhere = idx
                    .snap
                    .processes
                    .iter()
                    .find(|p| p.pid != me.pid && p.threads.iter().any(|t| t.tid.0 == *o));
                let where_ = match (here, elsewhere) {
                    (true, _) => "a thread of this process".to_string(),
                    (false, Some(p)) => format!(
                        "not a thread of this process (TID {} lives in {})",
                        crate::model::Tid(*o).local(),
                        p.label()
                    ),
                    (false, None) => "not a thread of this process".to_string(),
                };
                format!(
                    "lock pthread mutex at {uaddr:#x}; owner TID {} is {where_}",
                    crate::model::Tid(*o).local()
                )
            }
            None => format!("lock pthread mutex at {uaddr:#x} (owner unknown)"),
        },
        BlockedOn::ThreadLock { uaddr } => match idx.lock_object(me) {
            Some(l) if l.owner != 0 => match l.owner_tid {
                Some(t) => format!(
                    "acquire an RLock at {:#x}{}; held by thread {t} (count {})",
                    l.object,
                    py_top(idx, me),
                    l.count
                ),
                None => format!(
                    "acquire an RLock at {:#x}{}; its owner (pthread {:#x}, count {}) is not a thread of this process",
                    l.object,
                    py_top(idx, me),
                    l.owner,
                    l.count
                ),
            },
            _ => format!(
                "wait on a threading lock or condition at {uaddr:#x}{} (only this process's threads can release it)",
                py_top(idx, me)
            ),
        },
        BlockedOn::ParkingLot { key, .. } => format!(
            "parked on {key:#x}{} (parking lot, 3.13+; only this process's threads can wake it)",
            py_top(idx, me)
        ),
        other => short(other),
    }
}
