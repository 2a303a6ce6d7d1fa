//! Unix socket peers through `NETLINK_SOCK_DIAG` (`/proc/net/unix` has no peer column).

use std::collections::HashMap;

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

/// Dumps every AF_UNIX socket of mphang's network namespace: inode -> info.
pub fn dump_unix() -> std::io::Result<HashMap<u64, UnixInfo>> {
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

    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8); // sdiag_family
    req.push(0); // sdiag_protocol
    req.extend_from_slice(&0u16.to_ne_bytes()); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // states: all
    req.extend_from_slice(&0u32.to_ne_bytes()); // ino
    req.extend_from_slice(
        &(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN).to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]); // cookie: none
                                       // SAFETY: `req` is a valid buffer of `req.len()` bytes and `sock.0` an open socket.
    let sent = unsafe { libc::send(sock.0, req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }

    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            break;
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or([0; 2]));
            if len < 16 || off + len > n {
                return Ok(out);
            }
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(out);
            }
            if ty == libc::NLMSG_ERROR as u16 {
                return Err(std::io::Error::other("sock_diag returned an error"));
            }
            if ty == SOCK_DIAG_BY_FAMILY {
                if let Some((ino, info)) = parse_msg(&buf[off + 16..off + len]) {
                    out.insert(ino, info);
                }
            }
            off += (len + 3) & !3;
        }
    }
    Ok(out)
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
}
