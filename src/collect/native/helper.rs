//! The ptrace helper: a small process of mphang's own (the same binary re-executed with the
//! hidden argument [`HELPER_ARG`]) that does every ptrace stop for a collection, so that a
//! stopped mphang never holds a target thread.
//!
//! Why: a tracee stays in tracing stop until its tracer detaches, and a stopped tracer detaches
//! nothing. Ctrl-Z (SIGTSTP to the terminal's foreground process group) or `kill -STOP` on
//! mphang used to leave a thread of a 1,000-thread target stopped in about 1 run in 15. The
//! helper is in a process group of its own (terminal job control never reaches it), ignores
//! SIGTSTP, SIGTTIN and SIGTTOU, and takes one request per thread: it stops, copies and
//! detaches that thread before it answers, so when mphang is stopped the helper finishes the
//! thread at hand and then waits, holding nothing. SIGSTOP sent to the helper itself cannot be
//! refused: mphang notices within [`WATCH`] that its helper is stopped while a request is
//! pending and SIGKILLs it (the kernel then detaches and resumes the thread), and a new helper
//! takes the remaining threads. The helper dies with mphang (`PR_SET_PDEATHSIG`), which also
//! releases any thread.
//!
//! It also runs at a real-time priority (SCHED_FIFO 1) when allowed, else at nice -10 when
//! allowed, so that it is not preempted while it holds a thread; it never spins (it sleeps in
//! `sigtimedwait(SIGCHLD)` until the stop is reported), so the priority costs the machine
//! nothing while it waits.
//!
//! Protocol (native-endian u64 words on the helper's stdin/stdout): a hello
//! `[MAGIC, flags]`; requests `[OP_RANGES, pid, n, (start, end) * n]` (the mappings of the next
//! pid) and `[OP_CAPTURE, pid, tid, stack_bytes, stop_timeout_ns, extra_hold_ns]`; each capture
//! is answered with a [`REPLY_WORDS`] header, then the message and the stack bytes.

use super::capture::{capture_one, serve_pending, Capture, Ranges};
use super::ptrace::{AttachError, Hold, Regs, WaitHow};
use super::unwind::StackCopy;
use super::SampleOptions;
use crate::model::{Pid, Tid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The hidden first argument that turns the mphang binary into the helper.
pub const HELPER_ARG: &str = "__mphang-ptrace-helper";

const MAGIC: u64 = 0x6d70_6861_6e67_0001;
const OP_RANGES: u64 = 1;
const OP_CAPTURE: u64 = 2;
/// status, exiting, ip, sp, bp, fs_base, orig_rax, rax, hold total ns, hold after-stop ns,
/// stack base, message length, stack length, hold since-check ns, threads still pending (given
/// up on: seized, their interrupt not yet delivered).
const REPLY_WORDS: usize = 15;
const FLAG_FIFO: u64 = 1;
const FLAG_NICE: u64 = 2;

/// How often mphang looks at its helper while a request is pending.
pub const WATCH: Duration = Duration::from_millis(20);
/// A helper that is running but has not answered after the stop timeout plus this is killed.
const SLACK: Duration = Duration::from_secs(2);

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Enables the helper: `program` is an executable that runs [`serve`] when its first argument
/// is [`HELPER_ARG`] (the mphang binary sets `/proc/self/exe`). Without it, or with
/// `MPHANG_PTRACE_HELPER=off`, stops happen on a thread of the calling process.
pub fn set_program(program: PathBuf) {
    let _ = PROGRAM.set(program);
}

/// True for the pid of a live helper (so `run` does not count it as part of the tree).
pub fn is_helper(pid: i32) -> bool {
    LIVE.lock().is_ok_and(|l| l.contains(&pid))
}

/// True for the command line of a helper (live or ended).
pub fn is_helper_cmdline(cmdline: &[String]) -> bool {
    cmdline.get(1).is_some_and(|a| a == HELPER_ARG)
}

/// Why a helper request failed.
#[derive(Debug)]
pub enum Failure {
    /// The thread could not be looked at (as in-process).
    Attach(AttachError),
    /// The helper is gone or was killed; this text says why. Start a new one.
    Helper(String),
}

/// A running helper; dropping it closes its stdin (it exits) and reaps it.
pub struct Helper {
    child: Child,
    pidfd: Option<OwnedFd>,
    tx: Option<ChildStdin>,
    rx: ChildStdout,
    /// Runs at SCHED_FIFO.
    pub realtime: bool,
    ranges_for: Option<Pid>,
    /// Threads the helper still holds seized after its last answer (given up on; each stops
    /// and is released as soon as it runs). A helper with some must not be left idle: if it were
    /// stopped then, such a thread would stay in tracing stop.
    pub pending: u64,
}

fn words(buf: &[u8]) -> impl Iterator<Item = u64> + '_ {
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
}

fn to_bytes(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

/// Waits until `fd` is readable or `d` passes.
fn readable(fd: i32, d: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll on one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

impl Helper {
    /// Starts a helper when one is configured ([`set_program`]) and usable here. `None` means:
    /// stop threads in-process.
    pub fn start() -> Option<Helper> {
        let program = PROGRAM.get()?;
        // `MPHANG_PTRACE_HELPER=off`: stop in-process (the benchmark's before/after switch).
        if std::env::var("MPHANG_PTRACE_HELPER").is_ok_and(|v| v == "off") {
            return None;
        }
        // Under Yama ptrace_scope 1 only ancestors may trace; the helper is not an ancestor of
        // anything mphang reads (e.g. `run`'s tree), so it would be refused.
        if super::super::perms::ptrace_scope() == Some(1)
            && !super::super::perms::has_cap_sys_ptrace()
        {
            return None;
        }
        let parent = std::process::id();
        let mut cmd = Command::new(program);
        cmd.arg(HELPER_ARG)
            .env("MPHANG_HELPER_PARENT", parent.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().ok()?;
        let pid = child.id() as i32;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = i32::try_from(pidfd)
            .ok()
            .filter(|&f| f >= 0)
            // SAFETY: a fresh descriptor nothing else owns.
            .map(|f| unsafe { OwnedFd::from_raw_fd(f) });
        let (Some(tx), Some(mut rx)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        let mut hello = [0u8; 16];
        let ok = readable(rx.as_raw_fd(), Duration::from_secs(5))
            && rx.read_exact(&mut hello).is_ok()
            && words(&hello).next() == Some(MAGIC);
        let mut h = Helper {
            child,
            pidfd,
            tx: Some(tx),
            rx,
            realtime: false,
            ranges_for: None,
            pending: 0,
        };
        if !ok {
            h.kill();
            return None;
        }
        h.realtime = words(&hello).nth(1).is_some_and(|f| f & FLAG_FIFO != 0);
        if let Ok(mut l) = LIVE.lock() {
            l.push(pid);
        }
        Some(h)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn state(&self) -> Option<char> {
        super::ptrace::task_state(Tid(self.pid()))
    }

    /// SIGKILL through the pidfd (no risk of hitting a reused pid), then reap.
    fn kill(&mut self) {
        match &self.pidfd {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }

    /// Reads exactly `buf.len()` bytes, watching the helper: an error when it was stopped by a
    /// signal (then it is killed) or gave no answer by `deadline`.
    fn read_watched(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
        let mut got = 0;
        while got < buf.len() {
            if readable(self.rx.as_raw_fd(), WATCH) {
                match self.rx.read(&mut buf[got..]) {
                    Ok(0) => return Err("the ptrace helper exited".into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("reading from the ptrace helper: {e}")),
                }
                continue;
            }
            if matches!(self.state(), Some('T' | 't')) {
                self.kill();
                return Err(format!(
                    "the ptrace helper (pid {}) was stopped by a signal; mphang killed it, \
                     which released any thread it held",
                    self.pid()
                ));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err("the ptrace helper did not answer in time; killed".into());
            }
        }
        Ok(())
    }

    /// Stops, reads and releases thread `tid` of `pid` in the helper.
    pub fn capture(
        &mut self,
        pid: Pid,
        tid: Tid,
        ranges: &Ranges,
        opts: &SampleOptions,
    ) -> Result<Capture, Failure> {
        let fail = |e: std::io::Error| Failure::Helper(format!("ptrace helper: {e}"));
        let Some(tx) = self.tx.as_mut() else {
            return Err(Failure::Helper("ptrace helper closed".into()));
        };
        if self.ranges_for != Some(pid) {
            let mut w = vec![OP_RANGES, pid.0 as u64, ranges.len() as u64];
            for &(a, b) in ranges {
                w.extend([a, b]);
            }
            tx.write_all(&to_bytes(&w)).map_err(fail)?;
            self.ranges_for = Some(pid);
        }
        let req = [
            OP_CAPTURE,
            pid.0 as u64,
            tid.0 as u64,
            opts.stack_bytes as u64,
            opts.stop_timeout.as_nanos() as u64,
            opts.extra_hold.as_nanos() as u64,
        ];
        tx.write_all(&to_bytes(&req)).map_err(fail)?;
        let deadline = Instant::now() + opts.stop_timeout + opts.extra_hold + SLACK;
        let mut head = [0u8; REPLY_WORDS * 8];
        self.read_watched(&mut head, deadline)
            .map_err(Failure::Helper)?;
        let w: Vec<u64> = words(&head).collect();
        self.pending = w[14];
        let msg_len = usize::try_from(w[11]).unwrap_or(0).min(4096);
        let stack_len = usize::try_from(w[12]).unwrap_or(0).min(opts.stack_bytes);
        let mut rest = vec![0u8; msg_len + stack_len];
        self.read_watched(&mut rest, deadline)
            .map_err(Failure::Helper)?;
        let msg = String::from_utf8_lossy(&rest[..msg_len]).into_owned();
        let err = match w[0] {
            0 => None,
            1 => Some(AttachError::Gone),
            2 => Some(AttachError::PermissionDenied(msg)),
            3 => Some(AttachError::Timeout(Duration::from_nanos(w[8]))),
            _ => Some(AttachError::Other(msg)),
        };
        if let Some(e) = err {
            return Err(Failure::Attach(e));
        }
        Ok(Capture {
            tid,
            regs: Regs {
                ip: w[2],
                sp: w[3],
                bp: w[4],
                fs_base: w[5],
                orig_rax: w[6] as i64,
                rax: w[7] as i64,
            },
            stack: StackCopy {
                base: w[10],
                bytes: rest[msg_len..].to_vec(),
            },
            held: Hold {
                total: Duration::from_nanos(w[8]),
                after_stop: Duration::from_nanos(w[9]),
                since_check: Duration::from_nanos(w[13]),
            },
        })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let pid = self.pid();
        // Closing stdin ends the helper's loop; between requests it holds nothing but threads
        // given up on, which its exit releases. A stopped helper would not exit: kill it at once.
        drop(self.tx.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None)
                    if Instant::now() < deadline && !matches!(self.state(), Some('T' | 't')) =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Ok(None) => {
                    self.kill();
                    break;
                }
            }
        }
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|&p| p != pid);
        }
    }
}

/// Reads exactly `n` u64 words from `r`; `None` at EOF or on an error.
fn read_words(r: &mut impl Read, n: usize) -> Option<Vec<u64>> {
    let mut buf = vec![0u8; n * 8];
    r.read_exact(&mut buf).ok()?;
    Some(words(&buf).collect())
}

/// Makes this process a good helper: dies with its parent, ignores job-control stops, blocks
/// SIGCHLD (it waits for stops in `sigtimedwait`), and raises its priority when allowed.
/// Returns the hello flags.
fn prepare() -> Option<u64> {
    let parent: i32 = std::env::var("MPHANG_HELPER_PARENT").ok()?.parse().ok()?;
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid have no memory arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            return None; // the parent died before the line above
        }
    }
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: setting a signal to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SIGCHLD must not be ignored (the kernel then sends no stop notice), and is blocked: the
    // helper takes it with sigtimedwait.
    // SAFETY: setting a signal to its default disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGCHLD);
    set.thread_block().ok()?;
    let mut flags = 0;
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on this process with a param we own.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) }
        == 0
    {
        flags |= FLAG_FIFO;
    // SAFETY: setpriority on this process.
    } else if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } == 0 {
        flags |= FLAG_NICE;
    }
    Some(flags)
}

/// The helper's main loop (the binary calls it when its first argument is [`HELPER_ARG`]):
/// answers capture requests on stdin/stdout until stdin closes. Returns the exit code.
pub fn serve() -> i32 {
    let Some(flags) = prepare() else {
        return 2;
    };
    // Unbuffered: whether a request is waiting is asked of the descriptor itself (poll).
    // SAFETY: fd 0 stays open for the life of the process; ManuallyDrop never closes it.
    let mut input = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if out.write_all(&to_bytes(&[MAGIC, flags])).is_err() || out.flush().is_err() {
        return 2;
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    // Threads given up on (they did not stop in time) stay seized until they stop; release them
    // as soon as they do, also while waiting for the next request.
    let mut pending = Vec::new();
    loop {
        while !pending.is_empty() && !readable(0, Duration::from_millis(1)) {
            serve_pending(&mut pending);
        }
        let Some(head) = read_words(&mut *input, 3) else {
            return 0; // mphang closed the pipe: done (exiting clears any pending interrupt)
        };
        match head[0] {
            OP_RANGES => {
                let n = usize::try_from(head[2]).unwrap_or(0).min(1 << 20);
                let Some(w) = read_words(&mut *input, 2 * n) else {
                    return 0;
                };
                ranges = w.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            }
            OP_CAPTURE => {
                let Some(more) = read_words(&mut *input, 3) else {
                    return 0;
                };
                let pid = Pid(head[1] as i32);
                let tid = Tid(head[2] as i32);
                let opts = SampleOptions {
                    stack_bytes: usize::try_from(more[0]).unwrap_or(0).min(1 << 24),
                    stop_timeout: Duration::from_nanos(more[1]),
                    extra_hold: Duration::from_nanos(more[2]),
                    ..SampleOptions::default()
                };
                let r = capture_one(pid, tid, &ranges, &opts, WaitHow::Sigchld, &mut pending);
                // The thread is released before anything is written.
                if out
                    .write_all(&reply(r, pending.len()))
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return 0;
                }
            }
            _ => return 2,
        }
    }
}

fn reply(r: Result<Capture, AttachError>, pending: usize) -> Vec<u8> {
    let mut w = [0u64; REPLY_WORDS];
    w[14] = pending as u64;
    let (msg, stack) = match r {
        Ok(c) => {
            w[2] = c.regs.ip;
            w[3] = c.regs.sp;
            w[4] = c.regs.bp;
            w[5] = c.regs.fs_base;
            w[6] = c.regs.orig_rax as u64;
            w[7] = c.regs.rax as u64;
            w[8] = c.held.total.as_nanos() as u64;
            w[9] = c.held.after_stop.as_nanos() as u64;
            w[13] = c.held.since_check.as_nanos() as u64;
            w[10] = c.stack.base;
            (String::new(), c.stack.bytes)
        }
        Err(e) => {
            let (code, msg) = match &e {
                AttachError::Gone => (1, String::new()),
                AttachError::PermissionDenied(m) => (2, m.clone()),
                AttachError::Timeout(d) => {
                    w[8] = d.as_nanos() as u64;
                    (3, String::new())
                }
                AttachError::Other(m) => (4, m.clone()),
            };
            w[0] = code;
            (msg, Vec::new())
        }
    };
    let msg: Vec<u8> = msg.into_bytes().into_iter().take(4096).collect();
    w[11] = msg.len() as u64;
    w[12] = stack.len() as u64;
    let mut out = to_bytes(&w);
    out.extend(msg);
    out.extend(stack);
    out
}
