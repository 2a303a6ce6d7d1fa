//! Sockets through `NETLINK_SOCK_DIAG`: unix socket peers (`/proc/net/unix` has no peer
//! column) and TCP endpoints (`inet_diag`: addresses, state, queues), by socket inode.

use crate::model::{TcpEndpoint, TcpState};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the kernel says about one unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixInfo {
    pub peer: Option<u64>,
    pub path: Option<String>,
    pub listening: bool,
    pub rqueue: Option<u32>,
    /// For a listener: the client sockets whose connections wait to be accepted.
    pub pending: Vec<u64>,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const TCP_LISTEN: u8 = 10;
const INET_DIAG_INFO: u8 = 2;

/// Dumps every AF_UNIX socket of mphang's network namespace: inode -> info.
pub fn dump_unix() -> std::io::Result<HashMap<u64, UnixInfo>> {
    // unix_diag_req (24 bytes)
    let mut req = Vec::with_capacity(24);
    req.push(libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes()); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // states: all
    req.extend_from_slice(&0u32.to_ne_bytes()); // ino
    req.extend_from_slice(
        &(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN).to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]); // cookie: none
    let mut out = HashMap::new();
    dump(&req, |msg| {
        if let Some((ino, info)) = parse_msg(msg) {
            out.insert(ino, info);
        }
    })?;
    Ok(out)
}

/// Dumps every TCP socket (IPv4 and IPv6) of mphang's network namespace that has an inode
/// (an owner): inode -> endpoint. Listeners, connections and sockets in every state.
pub fn dump_tcp() -> std::io::Result<HashMap<u64, TcpEndpoint>> {
    let mut out = HashMap::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        // inet_diag_req_v2: family, protocol, ext, pad, states (u32), inet_diag_sockid (48)
        let mut req = Vec::with_capacity(56);
        req.push(family as u8);
        req.push(libc::IPPROTO_TCP as u8);
        req.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext: tcp_info
        req.push(0);
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
        req.extend_from_slice(&[0u8; 48]); // any socket
        dump(&req, |msg| {
            if let Some((ino, ep)) = parse_inet(msg) {
                out.insert(ino, ep);
            }
        })?;
    }
    Ok(out)
}

/// Sends one `SOCK_DIAG_BY_FAMILY` dump request with body `req` and calls `each` with every
/// reply message's payload.
fn dump(req: &[u8], mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    // SAFETY: plain socket(2) call; the returned fd is owned by `Fd` below and closed on drop.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = Fd(raw);
    let total = 16 + req.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(req);
    // SAFETY: `msg` is a valid buffer of `msg.len()` bytes and `sock.0` an open socket.
    let sent = unsafe { libc::send(sock.0, msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or([0; 2]));
            if len < 16 || off + len > n {
                return Ok(());
            }
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(());
            }
            if ty == libc::NLMSG_ERROR as u16 {
                return Err(std::io::Error::other("sock_diag returned an error"));
            }
            if ty == SOCK_DIAG_BY_FAMILY {
                each(&buf[off + 16..off + len]);
            }
            off += (len + 3) & !3;
        }
    }
}

/// Parses one `inet_diag_msg`: family, state, timer, retrans, then `inet_diag_sockid`
/// (sport, dport big-endian; src, dst 16 bytes each; if; cookie), expires, rqueue, wqueue, uid,
/// inode.
fn parse_inet(msg: &[u8]) -> Option<(u64, TcpEndpoint)> {
    let family = i32::from(*msg.first()?);
    let state = *msg.get(1)?;
    let port =
        |o: usize| -> Option<u16> { Some(u16::from_be_bytes(msg.get(o..o + 2)?.try_into().ok()?)) };
    let addr = |o: usize| -> Option<IpAddr> {
        let b = msg.get(o..o + 16)?;
        Some(if family == libc::AF_INET {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        })
    };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_ne_bytes(msg.get(o..o + 4)?.try_into().ok()?)) };
    let (sport, dport) = (port(4)?, port(6)?);
    let (src, dst) = (addr(8)?, addr(24)?);
    let inode = u32_at(68)?;
    if inode == 0 {
        return None; // no owner: time-wait, orphaned, or not yet accepted
    }
    let state = TcpState::from_kernel(state);
    let remote = (state != TcpState::Listen && (dport != 0 || !dst.is_unspecified()))
        .then_some(SocketAddr::new(dst, dport));
    let mut ep = TcpEndpoint {
        state,
        local: Some(SocketAddr::new(src, sport)),
        remote,
        rqueue: u32_at(56)?,
        wqueue: u32_at(60)?,
        bytes_acked: None,
        bytes_received: None,
        last_recv_ms: None,
    };
    // Attributes after the 72-byte message: INET_DIAG_INFO carries struct tcp_info.
    let mut off = 72;
    while off + 4 <= msg.len() {
        let alen = usize::from(u16::from_ne_bytes(msg[off..off + 2].try_into().ok()?));
        let aty = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().ok()?);
        if alen < 4 || off + alen > msg.len() {
            break;
        }
        if aty == u16::from(INET_DIAG_INFO) {
            let info = &msg[off + 4..off + alen];
            let u64_at = |o: usize| -> Option<u64> {
                Some(u64::from_ne_bytes(info.get(o..o + 8)?.try_into().ok()?))
            };
            // struct tcp_info: tcpi_last_data_recv at 52, tcpi_bytes_acked at 120,
            // tcpi_bytes_received at 128 (include/uapi/linux/tcp.h).
            ep.last_recv_ms = info
                .get(52..56)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes);
            ep.bytes_acked = u64_at(120);
            ep.bytes_received = u64_at(128);
        }
        off += (alen + 3) & !3;
    }
    Some((u64::from(inode), ep))
}

/// The protocol name of a socket fd (`TCP`, `TCPv6`, `UNIX`, `UDP`) from the socket's
/// `system.sockprotoname` attribute: tells a TCP socket the kernel no longer lists (closed by a
/// reset) from other families.
pub fn proto_name(pid: i32, fd: i32) -> Option<String> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let name = c"system.sockprotoname";
    let mut buf = [0u8; 32];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    let s = String::from_utf8_lossy(&buf[..n as usize]);
    Some(s.trim_end_matches('\0').to_string())
}

/// Parses one `unix_diag_msg` with its attributes.
fn parse_msg(msg: &[u8]) -> Option<(u64, UnixInfo)> {
    // unix_diag_msg: family u8, type u8, state u8, pad u8, ino u32, cookie [u32; 2]
    let state = *msg.get(2)?;
    let ino = u32::from_ne_bytes(msg.get(4..8)?.try_into().ok()?) as u64;
    let mut info = UnixInfo {
        listening: state == TCP_LISTEN,
        ..UnixInfo::default()
    };
    let mut off = 16;
    while off + 4 <= msg.len() {
        let alen = u16::from_ne_bytes(msg[off..off + 2].try_into().ok()?) as usize;
        let aty = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().ok()?);
        if alen < 4 || off + alen > msg.len() {
            break;
        }
        let data = &msg[off + 4..off + alen];
        match aty {
            UNIX_DIAG_PEER if data.len() >= 4 => {
                let p = u32::from_ne_bytes(data[..4].try_into().ok()?);
                if p != 0 {
                    info.peer = Some(p as u64);
                }
            }
            // A listener's pending connections: the inodes of the connecting (client) sockets.
            UNIX_DIAG_ICONS => {
                info.pending = data
                    .chunks_exact(4)
                    .filter_map(|c| Some(u32::from_ne_bytes(c.try_into().ok()?) as u64))
                    .filter(|i| *i != 0)
                    .collect();
            }
            UNIX_DIAG_RQLEN if data.len() >= 4 => {
                info.rqueue = Some(u32::from_ne_bytes(data[..4].try_into().ok()?));
            }
            UNIX_DIAG_NAME if !data.is_empty() => {
                let (abstract_, bytes) = if data[0] == 0 {
                    (true, &data[1..])
                } else {
                    (false, data)
                };
                let s = String::from_utf8_lossy(bytes)
                    .trim_end_matches('\0')
                    .to_string();
                info.path = Some(if abstract_ { format!("@{s}") } else { s });
            }
            _ => {}
        }
        off += (alen + 3) & !3;
    }
    Some((ino, info))
}

struct Fd(i32);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it exactly once.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn socketpair_peers_are_found() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        use std::os::unix::fs::MetadataExt;
        let ino = |s: &std::os::unix::net::UnixStream| {
            use std::os::fd::AsRawFd;
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .expect("stat")
                .ino()
        };
        let (ia, ib) = (ino(&a), ino(&b));
        let all = dump_unix().expect("sock_diag");
        assert_eq!(all.get(&ia).and_then(|i| i.peer), Some(ib));
        assert_eq!(all.get(&ib).and_then(|i| i.peer), Some(ia));
    }

    #[test]
    fn loopback_tcp_connection_is_listed_from_both_ends() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("stat")
                .ino()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        std::io::Write::write_all(&mut &client, b"abc").expect("write");
        let all = dump_tcp().expect("inet_diag");
        let l = &all[&ino(listener.as_raw_fd())];
        assert_eq!(l.state, TcpState::Listen);
        assert_eq!(l.remote, None);
        let c = &all[&ino(client.as_raw_fd())];
        let s = &all[&ino(server.as_raw_fd())];
        assert_eq!(c.state, TcpState::Established);
        assert_eq!(c.local, s.remote);
        assert_eq!(c.remote, s.local);
        // The 3 bytes reach the server's receive queue (loopback delivers at once).
        let mut tries = 0;
        while dump_tcp().expect("dump")[&ino(server.as_raw_fd())].rqueue != 3 && tries < 100 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            tries += 1;
        }
        let s = &dump_tcp().expect("dump")[&ino(server.as_raw_fd())];
        assert_eq!(s.rqueue, 3);
        assert_eq!(s.bytes_received, Some(3));
        // The active opener's acknowledged bytes include its SYN (analysis::tcp::quiet).
        let c = &dump_tcp().expect("dump")[&ino(client.as_raw_fd())];
        assert_eq!(c.bytes_acked.map(|a| a + u64::from(c.wqueue)), Some(4));
        assert_eq!(
            s.bytes_acked.map(|a| a + u64::from(s.wqueue)),
            c.bytes_received
        );
        assert_eq!(
            proto_name(std::process::id() as i32, client.as_raw_fd()).as_deref(),
            Some("TCP")
        );
    }
}
