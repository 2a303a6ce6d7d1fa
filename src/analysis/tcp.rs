//! TCP in the wait-for graph: what a thread on a TCP socket waits for, and who is at the other
//! end: a socket of the snapshot (a loopback peer in the tree, or another host's process in a
//! merged snapshot), a listener that has not accepted yet, nobody (the peer closed or reset the
//! connection), or something outside the snapshot (then the thread is not proven stuck).
//!
//! Endpoints are matched like Weave Scope's address ids: loopback, unspecified and link-local
//! addresses are scoped by host and network namespace, every other address is global. A
//! connection matches the socket whose local endpoint is its remote one and whose remote is its
//! local. A global match found on several other hosts (two hosts' private bridges reusing one
//! range) is ambiguous and stays unknown. NAT (a Service VIP) is not undone: such an edge stays
//! unmatched and is reported as outside, never guessed.

use super::index::Index;
use super::types::{BlockedOn, UnknownEdge};
use crate::model::host::host_local;
use crate::model::{FdKind, Inode, Pid, ProcessSnap, Snapshot, TcpEndpoint, TcpState, ThreadRef};
use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Where an address lives: one host's network namespace, or everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Ns(u16, u64),
    Global,
}

fn ns_of(p: &ProcessSnap) -> (u16, u64) {
    (p.pid.host(), p.net_ns.unwrap_or(0))
}

fn scope(ip: &IpAddr, ns: (u16, u64)) -> Scope {
    if host_local(ip) {
        Scope::Ns(ns.0, ns.1)
    } else {
        Scope::Global
    }
}

/// A connection as one end sees it: (scope of its local address, local, remote).
type ConnKey = (Scope, SocketAddr, SocketAddr);

/// TCP endpoints of a snapshot, indexed once per analysis.
#[derive(Default)]
pub struct TcpIndex {
    /// (scope of the local address, local, remote) -> processes holding that socket, with the
    /// socket as each read it.
    conns: HashMap<ConnKey, Vec<(Pid, Inode, TcpEndpoint)>>,
    /// (host, namespace, port) -> (bound address, holder) of listeners.
    listeners: HashMap<(u16, u64, u16), Vec<(IpAddr, Pid)>>,
    /// A global address -> the (host, namespace) pairs whose interfaces have it.
    owners: HashMap<IpAddr, Vec<(u16, u64)>>,
    /// Host labels by code, for the words.
    labels: HashMap<u16, String>,
}

impl TcpIndex {
    pub fn new(snap: &Snapshot) -> TcpIndex {
        let mut t = TcpIndex::default();
        for h in &snap.hosts {
            let code = h.code();
            t.labels.insert(code, h.name().to_string());
            for ns in &h.net_ns {
                for a in ns.addrs.iter().filter(|a| !host_local(a)) {
                    t.owners.entry(*a).or_default().push((code, ns.inode));
                }
            }
        }
        for p in &snap.processes {
            let ns = ns_of(p);
            for f in &p.fds {
                let Some(ep) = f.tcp() else { continue };
                let Some(local) = ep.local else { continue };
                match ep.remote {
                    Some(remote) if ep.state != TcpState::Listen => {
                        let v = t
                            .conns
                            .entry((scope(&local.ip(), ns), local, remote))
                            .or_default();
                        if !v.iter().any(|(pid, _, _)| *pid == p.pid) {
                            if let Some(inode) = f.socket_inode() {
                                v.push((p.pid, inode, ep.clone()));
                            }
                        }
                    }
                    _ if ep.state == TcpState::Listen => t
                        .listeners
                        .entry((ns.0, ns.1, local.port()))
                        .or_default()
                        .push((local.ip(), p.pid)),
                    _ => {}
                }
            }
        }
        t
    }

    fn label(&self, code: u16) -> String {
        self.labels
            .get(&code)
            .cloned()
            .unwrap_or_else(|| crate::model::host::label(code).to_string())
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The processes holding the other end, with its inode.
    Held(Vec<(Pid, Inode)>),
    /// The connection waits in a listener's accept queue: its holders must accept it.
    Listener(Vec<Pid>),
    /// The peer closed or reset the connection: nothing more will come.
    Gone(TcpState),
    /// Data is already waiting: the wait ends by itself.
    Queued(u32),
    /// The two ends disagree on the bytes sent: data crossed between the moments they were
    /// read (two hosts' reports are not simultaneous), so the connection moved.
    Moved,
    /// The other end is not in the snapshot.
    Outside(Outside),
}

/// Why the other end is not in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// On this host (and namespace), held by a process outside the tree.
    ThisHost,
    /// On host `label`, which reported, but not in its report.
    Reported(String),
    /// Several hosts could hold it (an address range reused on several hosts).
    Ambiguous,
    /// On a host that sent no report (or any other host, for a one-host report): unknown.
    NoReport(SocketAddr),
    /// The socket has no address (never connected).
    NoAddress,
}

/// The other end of `ep`, a TCP socket of process `p`; `read` when the thread waits for input.
pub fn peer(idx: &Index<'_>, p: &ProcessSnap, ep: &TcpEndpoint, read: bool) -> Peer {
    if ep.state == TcpState::Close || (read && ep.state.peer_gone()) {
        return Peer::Gone(ep.state);
    }
    if read && ep.rqueue > 0 {
        return Peer::Queued(ep.rqueue);
    }
    let (Some(local), Some(remote)) = (ep.local, ep.remote) else {
        return Peer::Outside(Outside::NoAddress);
    };
    let t = &idx.tcp;
    let ns = ns_of(p);
    if let Some(holders) = t.conns.get(&(scope(&remote.ip(), ns), remote, local)) {
        let mine: Vec<&(Pid, Inode, TcpEndpoint)> = holders
            .iter()
            .filter(|(h, _, _)| h.host() == ns.0)
            .collect();
        let mut hosts: Vec<u16> = holders.iter().map(|(h, _, _)| h.host()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let chosen: Vec<&(Pid, Inode, TcpEndpoint)> = if !mine.is_empty() {
            mine
        } else if hosts.len() == 1 {
            holders.iter().collect()
        } else {
            return Peer::Outside(Outside::Ambiguous);
        };
        if chosen
            .iter()
            .any(|(_, _, other)| quiet(ep, other) == Some(false))
        {
            return Peer::Moved;
        }
        return Peer::Held(chosen.iter().map(|(pid, ino, _)| (*pid, *ino)).collect());
    }
    // Not accepted yet: a listener on the remote port, in the namespace the address is in.
    let places: Vec<(u16, u64)> = if host_local(&remote.ip()) {
        vec![ns]
    } else {
        t.owners.get(&remote.ip()).cloned().unwrap_or_default()
    };
    let mut listening: Vec<Pid> = Vec::new();
    for (h, n) in &places {
        for (ip, pid) in t
            .listeners
            .get(&(*h, *n, remote.port()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if (*ip == remote.ip() || ip.is_unspecified()) && !listening.contains(pid) {
                listening.push(*pid);
            }
        }
    }
    if !listening.is_empty() {
        return Peer::Listener(listening);
    }
    let outside = match places.as_slice() {
        [] => Outside::NoReport(remote),
        [(h, _)] if *h == ns.0 => Outside::ThisHost,
        [(h, _)] => Outside::Reported(t.label(*h)),
        _ => Outside::Ambiguous,
    };
    Peer::Outside(outside)
}

/// Whether nothing crossed a connection between the moments its two ends were read: each
/// side's bytes written (acknowledged + still queued) equal the other side's bytes received,
/// except that the side that opened the connection also counts its SYN (one byte, on exactly
/// one side). None when a kernel or report lacks the counters.
pub fn quiet(a: &TcpEndpoint, b: &TcpEndpoint) -> Option<bool> {
    let written = |e: &TcpEndpoint| -> Option<i128> {
        Some(i128::from(e.bytes_acked?) + i128::from(e.wqueue))
    };
    let a_to_b = written(a)? - i128::from(b.bytes_received?);
    let b_to_a = written(b)? - i128::from(a.bytes_received?);
    Some(matches!((a_to_b, b_to_a), (1, 0) | (0, 1)))
}

/// The TCP connection behind socket `inode` of process `pid`.
fn endpoint<'a>(
    idx: &Index<'a>,
    pid: Pid,
    inode: Inode,
) -> Option<(&'a ProcessSnap, &'a TcpEndpoint)> {
    let p = idx.process(pid)?;
    let ep = p.fds.iter().find_map(|f| match &f.kind {
        FdKind::Socket { inode: i, tcp } if *i == inode => tcp.as_ref(),
        _ => None,
    })?;
    Some((p, ep))
}

/// The providers of a thread waiting on TCP socket `inode` (`Err`: why it can progress by
/// itself, or why its other side is unknown). Used by the graph for `TcpRead` and `TcpWrite`.
pub fn providers(
    idx: &Index<'_>,
    me: ThreadRef,
    inode: Inode,
    read: bool,
) -> Result<Vec<ThreadRef>, String> {
    let Some((p, ep)) = endpoint(idx, me.pid, inode) else {
        return Err(format!("socket:[{inode}] not found in the snapshot"));
    };
    let threads = |pids: &[Pid]| -> Vec<ThreadRef> {
        let mut v: Vec<ThreadRef> = pids
            .iter()
            .flat_map(|pid| idx.threads_of(*pid))
            .filter(|t| *t != me)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    match peer(idx, p, ep, read) {
        Peer::Held(held) => Ok(threads(&held.iter().map(|(p, _)| *p).collect::<Vec<_>>())),
        Peer::Listener(pids) => Ok(threads(&pids)),
        Peer::Gone(_) => Ok(Vec::new()),
        Peer::Queued(n) => Err(format!("{n} bytes already wait in its receive queue")),
        Peer::Moved => Err(MOVED.into()),
        Peer::Outside(o) => Err(outside_words(ep, &o)),
    }
}

const MOVED: &str = "the connection carried data between the moments its two ends were read";

fn outside_words(ep: &TcpEndpoint, o: &Outside) -> String {
    let remote = ep
        .remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| "its peer".into());
    match o {
        Outside::ThisHost => format!("its peer {remote} is on this host, outside the tree"),
        Outside::Reported(h) => {
            format!("its peer {remote} is on host {h}, outside that host's report")
        }
        Outside::Ambiguous => format!("its peer {remote} matches sockets on several hosts"),
        Outside::NoReport(_) => {
            format!("its peer {remote} is on a host that sent no report (unknown)")
        }
        Outside::NoAddress => "the socket is not connected".into(),
    }
}

/// What a thread blocked on TCP socket fd `e` of `p` waits for (`read`: input).
pub fn blocked_on(e: &crate::model::FdEntry, write: bool, pending: u64) -> Option<BlockedOn> {
    let FdKind::Socket {
        inode,
        tcp: Some(ep),
    } = &e.kind
    else {
        return None;
    };
    Some(if ep.state == TcpState::Listen {
        BlockedOn::Accept {
            inode: Some(*inode),
        }
    } else if write {
        BlockedOn::TcpWrite {
            inode: *inode,
            local: ep.local,
            remote: ep.remote,
            pending,
        }
    } else {
        BlockedOn::TcpRead {
            inode: *inode,
            local: ep.local,
            remote: ep.remote,
        }
    })
}

/// `recv tcp 10.0.0.1:41234 -> 10.0.0.3:29500`: a TCP wait in a chain.
pub fn short(b: &BlockedOn) -> Option<String> {
    let (verb, local, remote) = match b {
        BlockedOn::TcpRead { local, remote, .. } => ("recv", local, remote),
        BlockedOn::TcpWrite { local, remote, .. } => ("send", local, remote),
        _ => return None,
    };
    let addr = |a: &Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    Some(format!("{verb} tcp {} -> {}", addr(local), addr(remote)))
}

/// The one-line description of a TCP wait: the connection, its state and queues, and who is
/// at the other end.
pub fn line(
    idx: &Index<'_>,
    g: &super::graph::Graph,
    me: ThreadRef,
    b: &BlockedOn,
) -> Option<String> {
    let (inode, read) = match b {
        BlockedOn::TcpRead { inode, .. } => (*inode, true),
        BlockedOn::TcpWrite { inode, .. } => (*inode, false),
        _ => return None,
    };
    let head = short(b)?;
    let Some((p, ep)) = endpoint(idx, me.pid, inode) else {
        return Some(head);
    };
    let idle = ep
        .last_recv_ms
        .filter(|ms| *ms >= 1000)
        .map(|ms| format!(", nothing received for {:.1} s", f64::from(ms) / 1000.0))
        .unwrap_or_default();
    let state = format!(
        "{}, recv-q {}, send-q {}{idle}",
        ep.state.label(),
        ep.rqueue,
        ep.wqueue
    );
    let who = |pids: &[Pid]| -> String {
        pids.iter()
            .map(|pid| super::describe::process_brief(idx, g, *pid))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let other = match peer(idx, p, ep, read) {
        Peer::Held(held) => format!(
            "peer held by {}",
            held.iter()
                .map(|(pid, ino)| holder_words(idx, g, *pid, *ino))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Peer::Listener(pids) => format!("not yet accepted by the listener in {}", who(&pids)),
        Peer::Gone(TcpState::CloseWait) => {
            "the peer closed the connection: nothing more will come".into()
        }
        Peer::Gone(_) => "the connection was reset or closed: nothing more will come".into(),
        Peer::Queued(n) => format!("{n} bytes already queued"),
        Peer::Moved => MOVED.into(),
        Peer::Outside(o) => outside_words(ep, &o),
    };
    Some(format!("{head} ({state}); {other}"))
}

/// `fd 5: 10.0.0.1:41234 -> 10.0.0.2:29500 CLOSE-WAIT (the peer closed it); no thread reads it;
/// 10.0.0.2 is host node-b, where node-b/7 exited (...)`: a connection whose peer is gone.
pub fn closed_words(idx: &Index<'_>, p: &ProcessSnap, fd: i32, ep: &TcpEndpoint) -> String {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    let how = match ep.state {
        TcpState::CloseWait => "the peer closed it",
        _ => "reset or closed",
    };
    let mut s = format!(
        "fd {fd}: {} -> {} {} ({how}); no thread of {} reads it",
        addr(ep.local),
        addr(ep.remote),
        ep.state.label(),
        p.pid
    );
    let Some(remote) = ep.remote else {
        return s;
    };
    let ns = ns_of(p);
    let hosts: Vec<u16> = if host_local(&remote.ip()) {
        vec![ns.0]
    } else {
        let mut v: Vec<u16> = idx
            .tcp
            .owners
            .get(&remote.ip())
            .map(|o| o.iter().map(|(h, _)| *h).collect())
            .unwrap_or_default();
        v.dedup();
        v
    };
    match hosts.as_slice() {
        [] => s.push_str(&format!(
            "; {} is on a host that sent no report",
            remote.ip()
        )),
        [h] => {
            let exited: Vec<String> = idx
                .exited()
                .into_iter()
                .filter(|(pid, _)| pid.is_some_and(|p| p.host() == *h))
                .map(|(_, what)| what)
                .collect();
            let place = if *h == ns.0 {
                "this host".to_string()
            } else {
                format!("host {}", idx.tcp.label(*h))
            };
            s.push_str(&format!("; {} is {place}", remote.ip()));
            if exited.is_empty() {
                s.push_str(", where no process of its report holds the other end");
            } else {
                s.push_str(&format!(", where {}", exited.join("; ")));
            }
        }
        _ => {}
    }
    s
}

/// `node-a/3 (main), whose thread 4 (store-server) waits in poll on ...`: the holder of a peer
/// socket, named by the thread that waits on that socket when one does.
fn holder_words(idx: &Index<'_>, g: &super::graph::Graph, pid: Pid, inode: Inode) -> String {
    let on_it = |b: &BlockedOn| match b {
        BlockedOn::TcpRead { inode: i, .. } | BlockedOn::TcpWrite { inode: i, .. } => *i == inode,
        _ => false,
    };
    let waiter = idx
        .threads_of(pid)
        .into_iter()
        .find(|t| match g.blocked(*t) {
            Some(BlockedOn::Any { of }) => of.iter().any(on_it),
            Some(b) => on_it(b),
            None => false,
        });
    match (waiter, idx.process(pid)) {
        (Some(t), Some(p)) => {
            let name = p
                .thread(t.tid)
                .map(|th| th.display_name().to_string())
                .unwrap_or_default();
            format!(
                "{}, whose thread {} ({name}) waits in {}",
                p.label(),
                t.tid,
                g.blocked(t).map(super::describe::short).unwrap_or_default()
            )
        }
        _ => super::describe::process_brief(idx, g, pid),
    }
}

/// Every TCP wait whose other side is on a host that sent no report (merged snapshots only).
pub fn unknown_edges(idx: &Index<'_>, g: &super::graph::Graph) -> Vec<UnknownEdge> {
    if !idx.snap.is_merged() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for r in &g.order {
        let Some(b) = g.blocked(*r) else { continue };
        let waits: Vec<&BlockedOn> = match b {
            BlockedOn::Any { of } => of.iter().collect(),
            other => vec![other],
        };
        for w in waits {
            let (inode, read) = match w {
                BlockedOn::TcpRead { inode, .. } => (*inode, true),
                BlockedOn::TcpWrite { inode, .. } => (*inode, false),
                _ => continue,
            };
            let Some((p, ep)) = endpoint(idx, r.pid, inode) else {
                continue;
            };
            if let Peer::Outside(Outside::NoReport(remote)) = peer(idx, p, ep, read) {
                out.push(UnknownEdge {
                    thread: *r,
                    waits_on: short(w).unwrap_or_default(),
                    remote,
                });
            }
        }
    }
    out
}
