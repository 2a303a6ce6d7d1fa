//! Exit statuses of every descendant, from the kernel's proc connector (netlink
//! `NETLINK_CONNECTOR`, `CN_IDX_PROC`): `PROC_EVENT_FORK` tells which new processes descend from
//! mphang and `PROC_EVENT_EXIT` gives their wait status, even for processes whose parent (not
//! mphang) reaps them, such as a Pool worker killed by SIGKILL.
//!
//! Listening needs CAP_NET_ADMIN in the initial user and PID namespaces (root on a CI runner VM,
//! not an unprivileged container). When the kernel refuses, `Listener::start` fails and `run`
//! falls back to polling `/proc` (see `tree`).

use super::tree::{now_ms, read_cmdline, RawStatus};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Exits remembered at most (a long job can start hundreds of thousands of processes).
const MAX_EXITS: usize = 4096;
/// `struct nlmsghdr` and `struct cn_msg` sizes.
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;

/// How a descendant ended, as the connector saw it.
#[derive(Debug, Clone)]
pub struct Exit {
    pub pid: i32,
    pub ppid: Option<i32>,
    pub cmdline: Vec<String>,
    pub status: RawStatus,
    pub at_ms: u64,
}

#[derive(Default)]
struct State {
    /// Thread-group ids descending from mphang (mphang included).
    members: HashSet<i32>,
    /// Parent and command line of each member, read at fork and exec.
    born: HashMap<i32, (i32, Vec<String>)>,
    exits: HashMap<i32, Exit>,
    /// Told the pid of every exit as it is reported (the stack history's look for a sender).
    notify: Option<std::sync::mpsc::Sender<i32>>,
}

/// A running listener thread; stops and unsubscribes on Drop.
pub struct Listener {
    sock: Arc<OwnedFd>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Subscribes to process events; fails when the kernel refuses (no CAP_NET_ADMIN, not the
    /// initial namespaces) or does not acknowledge within 500 ms.
    pub fn start() -> io::Result<Listener> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let big: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: `big` outlives the call and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&big as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `timeout` outlives the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // SAFETY: all-zero is a valid sockaddr_nl; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: `addr` is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        send_op(fd, PROC_CN_MCAST_LISTEN)?;
        wait_for_ack(fd)?;

        let me = std::process::id() as i32;
        let mut state = State::default();
        state.members.insert(me);
        let sock = Arc::new(sock);
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let (sock2, state2, stop2) = (Arc::clone(&sock), Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("proc-connector".into())
            .spawn(move || listen(&sock2, &state2, &stop2))?;
        Ok(Listener {
            sock,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The exit of `pid`, if it was a descendant and has ended.
    pub fn exit_of(&self, pid: i32) -> Option<Exit> {
        self.state.lock().ok()?.exits.get(&pid).cloned()
    }

    /// Sends the pid of every later exit of a descendant to `tx`.
    pub fn notify(&self, tx: std::sync::mpsc::Sender<i32>) {
        if let Ok(mut s) = self.state.lock() {
            s.notify = Some(tx);
        }
    }

    /// Every descendant that ended.
    pub fn ended(&self) -> Vec<Exit> {
        self.state
            .lock()
            .map(|s| s.exits.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = send_op(self.sock.as_raw_fd(), PROC_CN_MCAST_IGNORE);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `PROC_CN_MCAST_LISTEN` or `_IGNORE` to the kernel.
fn send_op(fd: i32, op: u32) -> io::Result<()> {
    let mut msg = Vec::with_capacity(NLMSG_HDR + CN_MSG + 4);
    msg.extend_from_slice(&((NLMSG_HDR + CN_MSG + 4) as u32).to_ne_bytes());
    msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&op.to_ne_bytes());
    // SAFETY: `msg` is a valid buffer of the given length for the duration of the call.
    let rc = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Receives one datagram; `None` on timeout.
fn recv(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOBUFS) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(n as usize))
}

/// The proc events (`what`, event data) in one datagram.
fn events(buf: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(buf, at) {
        let len = len as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            break;
        }
        let cn = &buf[at + NLMSG_HDR..at + len];
        let is_proc = u32_at(cn, 0) == Some(CN_IDX_PROC) && u32_at(cn, 4) == Some(CN_VAL_PROC);
        if let (true, Some(what), Some(data)) = (is_proc, u32_at(cn, CN_MSG), cn.get(CN_MSG + 16..))
        {
            out.push((what, data));
        }
        at += (len + 3) & !3;
    }
    out
}

/// Waits for the kernel's acknowledgement of the subscription (a `PROC_EVENT_NONE` whose first
/// data word is the error number).
fn wait_for_ack(fd: i32) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let Some(n) = recv(fd, &mut buf)? else {
            continue;
        };
        for (what, data) in events(&buf[..n]) {
            if what == PROC_EVENT_NONE {
                return match u32_at(data, 0) {
                    Some(0) => Ok(()),
                    Some(err) => Err(io::Error::from_raw_os_error(err as i32)),
                    None => Err(io::Error::other("short proc connector ack")),
                };
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the proc connector did not acknowledge",
    ))
}

fn listen(sock: &OwnedFd, state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let n = match recv(sock.as_raw_fd(), &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(_) => break,
        };
        let Ok(mut st) = state.lock() else { break };
        for (what, d) in events(&buf[..n]) {
            handle(&mut st, what, d);
        }
    }
}

fn handle(st: &mut State, what: u32, d: &[u8]) {
    let word = |i: usize| u32_at(d, i * 4).map(|v| v as i32);
    match what {
        PROC_EVENT_FORK => {
            let (Some(ptgid), Some(cpid), Some(ctgid)) = (word(1), word(2), word(3)) else {
                return;
            };
            if cpid == ctgid && st.members.contains(&ptgid) {
                st.members.insert(ctgid);
                // A fork that has not exec'd runs its parent's command line; read the parent's
                // when the child is already gone.
                let mut cmdline = read_cmdline(ctgid);
                if cmdline.is_empty() {
                    cmdline = st.born.get(&ptgid).map(|b| b.1.clone()).unwrap_or_default();
                }
                st.born.insert(ctgid, (ptgid, cmdline));
            }
        }
        PROC_EVENT_EXEC => {
            if let (Some(pid), Some(tgid)) = (word(0), word(1)) {
                if pid == tgid && st.members.contains(&tgid) {
                    let cmdline = read_cmdline(tgid);
                    if let Some(b) = st.born.get_mut(&tgid) {
                        b.1 = cmdline;
                    }
                }
            }
        }
        PROC_EVENT_EXIT => {
            let (Some(pid), Some(tgid), Some(code)) = (word(0), word(1), word(2)) else {
                return;
            };
            if pid == tgid && st.members.contains(&tgid) {
                st.members.remove(&tgid);
                if st.exits.len() >= MAX_EXITS {
                    // Keep what a report needs most: abnormal ends first, then the latest.
                    st.exits.retain(|_, e| e.status.0 != 0);
                    if st.exits.len() >= MAX_EXITS {
                        let mut times: Vec<u64> = st.exits.values().map(|e| e.at_ms).collect();
                        times.sort_unstable();
                        let cut = times[times.len() / 2];
                        st.exits.retain(|_, e| e.at_ms > cut);
                    }
                }
                if let Some(tx) = &st.notify {
                    let _ = tx.send(tgid);
                }
                let (ppid, cmdline) = st.born.remove(&tgid).unzip();
                st.exits.insert(
                    tgid,
                    Exit {
                        pid: tgid,
                        ppid,
                        cmdline: cmdline.unwrap_or_default(),
                        status: RawStatus(code),
                        at_ms: now_ms(),
                    },
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink datagram carrying one proc event with the given data words.
    fn datagram(what: u32, words: &[u32]) -> Vec<u8> {
        let len = NLMSG_HDR + CN_MSG + 16 + 4 * words.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        b.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&what.to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]);
        for w in words {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b
    }

    #[test]
    fn fork_then_exit_of_a_member_is_recorded() {
        let mut st = State::default();
        st.members.insert(100);
        // A thread of 100 (child_pid != child_tgid) is not a new process.
        let thread = datagram(PROC_EVENT_FORK, &[100, 100, 101, 100]);
        for (what, d) in events(&thread) {
            handle(&mut st, what, d);
        }
        assert!(!st.members.contains(&101));
        let fork = datagram(PROC_EVENT_FORK, &[100, 100, 4_000_000, 4_000_000]);
        let stranger = datagram(PROC_EVENT_EXIT, &[7, 7, 0, 17, 1, 1]);
        let exit = datagram(PROC_EVENT_EXIT, &[4_000_000, 4_000_000, 9, 17, 100, 100]);
        let mut both = fork.clone();
        both.extend_from_slice(&stranger);
        for buf in [both, exit] {
            for (what, d) in events(&buf) {
                handle(&mut st, what, d);
            }
        }
        let e = st.exits.get(&4_000_000).expect("exit recorded");
        assert_eq!(e.ppid, Some(100));
        assert_eq!(e.status.describe(), "signal 9 (SIGKILL)");
        assert!(
            !st.exits.contains_key(&7),
            "a process outside the tree is ignored"
        );
    }

    #[test]
    fn truncated_datagrams_are_ignored() {
        let mut d = datagram(PROC_EVENT_EXIT, &[1, 1, 0, 17, 1, 1]);
        d.truncate(30);
        assert!(events(&d).is_empty());
    }
}
