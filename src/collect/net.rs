//! Sockets of the tree, per network namespace: unix peers and TCP endpoints from sock_diag,
//! and each namespace's interface addresses. sock_diag and `getifaddrs` answer for the
//! namespace of the calling thread, so a namespace other than mphang's is read from a
//! short-lived thread that has joined it with `setns` (needs CAP_SYS_ADMIN; otherwise a
//! diagnostic says which sockets stay unresolved).

use super::sockdiag::{self, UnixInfo};
use crate::model::{
    DiagKind, Diagnostic, FdKind, NetNs, Pid, ProcessSnap, Stage, TcpEndpoint, TcpState,
};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// What one network namespace says about its sockets.
#[derive(Default)]
struct NsDump {
    unix: HashMap<u64, UnixInfo>,
    tcp: HashMap<u64, TcpEndpoint>,
    addrs: Vec<IpAddr>,
}

/// The inode of a process's network namespace.
pub fn net_ns_of(pid: i32) -> Option<u64> {
    ns_inode(&format!("/proc/{pid}/ns/net"), "net:[")
}

/// The inode in a `/proc/.../ns/*` link (`net:[4026531833]`).
pub fn ns_inode(path: &str, prefix: &str) -> Option<u64> {
    std::fs::read_link(path)
        .ok()?
        .to_str()?
        .strip_prefix(prefix)?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Upgrades every socket fd of `procs` (unix peers, TCP endpoints) namespace by namespace, and
/// returns the namespaces with their addresses. Problems become diagnostics.
pub fn resolve_sockets(
    procs: &mut [&mut ProcessSnap],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<NetNs> {
    let mine = net_ns_of(std::process::id() as i32);
    // One process per namespace to enter it through, and whether any holds a socket there.
    // Every namespace's addresses are kept (they tell which host an address belongs to, even
    // when the tree holds no socket any more); sockets are dumped where the tree has some.
    let mut by_ns: BTreeMap<u64, (i32, bool)> = BTreeMap::new();
    for p in procs.iter() {
        let has_socket = p
            .fds
            .iter()
            .any(|f| matches!(f.kind, FdKind::Socket { .. }));
        if let Some(ns) = p.net_ns {
            let e = by_ns.entry(ns).or_insert((p.pid.0, false));
            e.1 |= has_socket;
        }
    }
    let mut dumps: HashMap<u64, NsDump> = HashMap::new();
    for (ns, &(via, sockets)) in &by_ns {
        let read = move || dump_here(sockets);
        let dump = if Some(*ns) == mine {
            read()
        } else {
            in_netns(via, read)
        };
        match dump {
            Ok(d) => {
                dumps.insert(*ns, d);
            }
            // Only addresses were wanted there: nothing the report relies on is missing.
            Err(_) if !sockets => {}
            Err(e) => diagnostics.push(Diagnostic {
                pid: Some(Pid(via)),
                tid: None,
                stage: Stage::SockDiag,
                kind: DiagKind::Failed,
                message: format!(
                    "sockets of network namespace {ns} unavailable (peers stay unknown): {e}"
                ),
            }),
        }
    }
    for p in procs.iter_mut() {
        let Some(d) = p.net_ns.and_then(|ns| dumps.get(&ns)) else {
            continue;
        };
        let pid = p.pid.0;
        for f in &mut p.fds {
            let FdKind::Socket { inode, tcp } = &mut f.kind else {
                continue;
            };
            if let Some(u) = d.unix.get(&inode.0) {
                f.kind = FdKind::UnixSocket {
                    inode: *inode,
                    peer: u.peer.map(crate::model::Inode),
                    path: u.path.clone(),
                    listening: u.listening,
                    rqueue: u.rqueue,
                    pending: u.pending.iter().copied().map(crate::model::Inode).collect(),
                };
            } else if let Some(t) = d.tcp.get(&inode.0) {
                *tcp = Some(t.clone());
            } else if sockdiag::proto_name(pid, f.fd).is_some_and(|n| n.starts_with("TCP")) {
                // A TCP socket the kernel no longer lists: reset, or never connected.
                *tcp = Some(TcpEndpoint {
                    state: TcpState::Close,
                    local: None,
                    remote: None,
                    rqueue: 0,
                    wqueue: 0,
                    bytes_acked: None,
                    bytes_received: None,
                    last_recv_ms: None,
                });
            }
        }
    }
    let mut out: Vec<NetNs> = dumps
        .into_iter()
        .map(|(inode, d)| NetNs {
            inode,
            addrs: d.addrs,
        })
        .collect();
    out.sort_by_key(|n| n.inode);
    out
}

/// The current thread's namespace: its addresses, and with `sockets` its unix and TCP sockets.
fn dump_here(sockets: bool) -> std::io::Result<NsDump> {
    if !sockets {
        return Ok(NsDump {
            addrs: addrs(),
            ..NsDump::default()
        });
    }
    Ok(NsDump {
        unix: sockdiag::dump_unix()?,
        tcp: sockdiag::dump_tcp()?,
        addrs: addrs(),
    })
}

/// Runs `f` on a new thread that has joined the network namespace of `pid`.
fn in_netns<T: Send>(
    pid: i32,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on an fd we own; it changes only this short-lived thread's network
            // namespace, which ends with the thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("namespace reader panicked"))?
    })
}

/// The interface addresses of the current thread's network namespace.
fn addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_namespace_has_loopback() {
        assert!(super::addrs().iter().any(|a| a.is_loopback()));
        assert!(super::net_ns_of(std::process::id() as i32).is_some());
    }
}
