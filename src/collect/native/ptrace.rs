//! ptrace for one short look at a thread: the RAII [`Attached`] guard (PTRACE_SEIZE +
//! PTRACE_INTERRUPT, never PTRACE_ATTACH; detach on Drop), register reads, and memory copies
//! with `process_vm_readv`. Nothing here symbolizes or unwinds: the thread is stopped only while
//! registers and a stack copy are taken.
//!
//! Every function here must run on the sampler's dedicated ptrace thread (see `mod.rs`): the
//! kernel makes the *thread* that seized a tracee its tracer, and when that thread exits, even by
//! panic, the kernel detaches and resumes every tracee it still holds.

use super::unwind::{StackCopy, StartRegs};
use crate::model::{Pid, Tid};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;
use std::time::{Duration, Instant};

/// Why a thread could not be looked at. None of these is fatal to a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The thread exited (ESRCH, ECHILD, an exit status, or EPERM on a dying thread).
    Gone,
    /// The kernel refused: other uid, no CAP_SYS_PTRACE, Yama, or another tracer holds it.
    PermissionDenied(String),
    /// It did not reach a stop in time (uninterruptible sleep, or a loaded machine).
    Timeout(Duration),
    /// Anything else the kernel said.
    Other(String),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::Gone => write!(f, "thread exited"),
            AttachError::PermissionDenied(m) => write!(f, "permission denied: {m}"),
            AttachError::Timeout(d) => write!(f, "did not stop within {} ms", d.as_millis()),
            AttachError::Other(m) => write!(f, "{m}"),
        }
    }
}

/// The registers mphang keeps from `PTRACE_GETREGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// `pthread_self()` of the thread (the TLS base).
    pub fs_base: u64,
    /// Syscall number when stopped inside a syscall, else -1.
    pub orig_rax: i64,
    /// Return value / restart code (-512 ERESTARTSYS, -516 ERESTART_RESTARTBLOCK, …).
    pub rax: i64,
}

impl Regs {
    /// Where an unwind starts.
    pub fn start(&self) -> StartRegs {
        StartRegs {
            ip: self.ip,
            sp: self.sp,
            bp: self.bp,
        }
    }
}

fn classify(tid: Tid, e: Errno) -> AttachError {
    match e {
        Errno::ESRCH | Errno::ECHILD => AttachError::Gone,
        // EPERM on a thread that is exiting (zombie or dead) is not a permission problem.
        Errno::EPERM if !task_alive(tid) => AttachError::Gone,
        // A thread has one tracer: gdb, strace, or py-spy's own lock may hold it.
        Errno::EPERM if tracer_of(tid).is_some_and(|t| t != 0) => AttachError::Other(format!(
            "thread {tid} is already traced by pid {}",
            tracer_of(tid).unwrap_or(0)
        )),
        Errno::EPERM | Errno::EACCES => {
            AttachError::PermissionDenied(format!("ptrace(PTRACE_SEIZE, {tid}): {e}"))
        }
        other => AttachError::Other(format!("ptrace on thread {tid}: {other}")),
    }
}

/// The state letter of `/proc/TID/stat` (`R`, `S`, `D`, `Z`, `t`, …), if the thread exists.
pub fn task_state(tid: Tid) -> Option<char> {
    crate::collect::procfs::read_stat(tid.0).map(|s| s.state)
}

/// `TracerPid` of `/proc/TID/status` (0 = not traced).
pub fn tracer_of(tid: Tid) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", tid.0)).ok()?;
    let line = s.lines().find(|l| l.starts_with("TracerPid:"))?;
    line["TracerPid:".len()..].trim().parse().ok()
}

fn task_alive(tid: Tid) -> bool {
    !matches!(task_state(tid), None | Some('Z') | Some('X') | Some('x'))
}

/// A seized thread. While this value lives the thread is traced by the current OS thread;
/// dropping it detaches (and restarts) the thread if it is stopped. Never leaks a stop: if the
/// thread never stopped, nothing can be detached yet, and the exit of the ptrace thread clears
/// the pending interrupt (see the module docs).
#[derive(Debug)]
pub struct Attached {
    tid: Tid,
    stopped: bool,
    /// A signal that arrived while we held the thread, re-delivered on detach.
    inject: Option<Signal>,
    /// The thread stopped at PTRACE_EVENT_EXIT: it is exiting.
    exiting: bool,
    /// When PTRACE_INTERRUPT was issued: the pause the thread sees is at most
    /// `interrupted_at..detach`, an upper bound that includes our wait for the stop.
    interrupted_at: Instant,
    /// When `waitpid` reported the stop: `stopped_at..detach` is a lower bound of the pause.
    stopped_at: Option<Instant>,
    /// The last `waitpid` that found the thread not yet stopped: `last_check..detach` is an
    /// upper bound of the pause that excludes the time before it (the thread's wait for a CPU).
    last_check: Instant,
    /// Detached, or the thread is gone: nothing is held any more.
    done: bool,
}

/// How long a thread was held, measured by the tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hold {
    /// From PTRACE_INTERRUPT to PTRACE_DETACH: an upper bound of the pause, which includes the
    /// time the thread needed to reach the stop (on a busy machine: its wait for a CPU).
    pub total: Duration,
    /// From the moment the stop was reported to PTRACE_DETACH: what mphang itself added (a
    /// lower bound of the pause).
    pub after_stop: Duration,
    /// From the last look that found the thread not yet stopped to PTRACE_DETACH: an upper
    /// bound of the pause without the thread's wait to reach the stop (tight when the tracer
    /// looks often; the helper looks at least every 250 µs while it waits).
    pub since_check: Duration,
}

/// How [`Attached::wait_stopped_how`] waits for the stop to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitHow {
    /// Poll `waitpid(WNOHANG)`, yielding and then sleeping 20 µs between polls. Works on any
    /// thread of any process.
    Poll,
    /// Sleep in `sigtimedwait(SIGCHLD)` between polls: the kernel sends the tracer SIGCHLD when
    /// the tracee stops, so the tracer takes no CPU while it waits (needed when it runs at a
    /// real-time priority). Only for a single-threaded tracer that blocks SIGCHLD (the helper).
    Sigchld,
}

impl Attached {
    /// PTRACE_SEIZE with PTRACE_O_TRACEEXIT, then PTRACE_INTERRUPT. Does not wait.
    pub fn seize(tid: Tid) -> Result<Attached, AttachError> {
        let p = NixPid::from_raw(tid.0);
        ptrace::seize(p, ptrace::Options::PTRACE_O_TRACEEXIT).map_err(|e| classify(tid, e))?;
        let mut guard = Attached {
            tid,
            stopped: false,
            inject: None,
            exiting: false,
            interrupted_at: Instant::now(),
            stopped_at: None,
            last_check: Instant::now(),
            done: false,
        };
        ptrace::interrupt(p).map_err(|e| classify(tid, e))?;
        guard.interrupted_at = Instant::now();
        guard.last_check = guard.interrupted_at;
        Ok(guard)
    }

    /// Waits until the thread reports a stop, polling until `deadline`.
    pub fn wait_stopped(&mut self, deadline: Instant) -> Result<(), AttachError> {
        self.wait_stopped_how(deadline, WaitHow::Poll)
    }

    /// Waits until the thread reports a stop, until `deadline`, the way `how` says.
    pub fn wait_stopped_how(&mut self, deadline: Instant, how: WaitHow) -> Result<(), AttachError> {
        self.wait_stopped_serving(deadline, how, &mut || {})
    }

    /// [`Self::wait_stopped_how`], calling `serve` whenever the wait wakes up without the stop
    /// (the caller releases threads given up on earlier that have stopped since).
    pub fn wait_stopped_serving(
        &mut self,
        deadline: Instant,
        how: WaitHow,
        serve: &mut dyn FnMut(),
    ) -> Result<(), AttachError> {
        let p = NixPid::from_raw(self.tid.0);
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            match waitpid(p, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    self.last_check = Instant::now();
                    serve();
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(AttachError::Timeout(now - started));
                    }
                    match how {
                        WaitHow::Sigchld => wait_sigchld((deadline - now).min(MAX_SIGCHLD_WAIT)),
                        WaitHow::Poll => {
                            spins += 1;
                            if spins < 200 {
                                std::thread::yield_now();
                            } else {
                                std::thread::sleep(Duration::from_micros(20));
                            }
                        }
                    }
                }
                Ok(WaitStatus::PtraceEvent(_, sig, ev)) => {
                    self.mark_stopped();
                    if ev == libc::PTRACE_EVENT_EXIT {
                        self.exiting = true;
                    } else if ev == libc::PTRACE_EVENT_STOP && sig != Signal::SIGTRAP {
                        // A group-stop (SIGSTOP/SIGTSTP… sent by someone else) reported to us:
                        // detaching leaves the thread in that group-stop, as the sender wanted.
                    }
                    return Ok(());
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    // Signal-delivery-stop: a signal arrived before our interrupt. The thread is
                    // stopped, so look now, and hand the signal back on detach.
                    self.mark_stopped();
                    self.inject = Some(sig);
                    return Ok(());
                }
                Ok(WaitStatus::PtraceSyscall(_)) => {
                    self.mark_stopped();
                    return Ok(());
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    return Err(AttachError::Gone)
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(e) => return Err(classify(self.tid, e)),
            }
        }
    }

    fn mark_stopped(&mut self) {
        self.stopped = true;
        self.stopped_at.get_or_insert_with(Instant::now);
    }

    /// True when the thread stopped on its way out (PTRACE_EVENT_EXIT).
    pub fn exiting(&self) -> bool {
        self.exiting
    }

    /// PTRACE_GETREGS.
    pub fn regs(&self) -> Result<Regs, AttachError> {
        let r = ptrace::getregs(NixPid::from_raw(self.tid.0)).map_err(|e| classify(self.tid, e))?;
        Ok(Regs {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
            fs_base: r.fs_base,
            orig_rax: r.orig_rax as i64,
            rax: r.rax as i64,
        })
    }

    /// Detaches now and returns how long the thread may have been stopped (zero if it never
    /// stopped).
    pub fn detach(mut self) -> Hold {
        self.release()
    }

    /// For a thread given up on (it did not stop in time): releases it if it has stopped since
    /// (or is gone). True when nothing is held any more. A seized thread with an interrupt
    /// pending stops as soon as it runs, so the holder calls this until it returns true.
    pub fn try_release(&mut self) -> bool {
        if !self.done {
            self.release();
        }
        if !self.done {
            // Gone meanwhile?
            match waitpid(
                NixPid::from_raw(self.tid.0),
                Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => {
                    self.done = true
                }
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {
                    // A stop reported just now.
                    self.mark_stopped();
                    self.release();
                }
            }
        }
        self.done
    }

    fn release(&mut self) -> Hold {
        let mut held = Hold::default();
        if self.done {
            return held;
        }
        if !self.stopped {
            // Given up on (timeout, error)? It may have stopped since: one last look, so that
            // it is released now rather than when the ptrace thread exits.
            let p = NixPid::from_raw(self.tid.0);
            match waitpid(p, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::PtraceSyscall(_)) => {
                    self.mark_stopped();
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.mark_stopped();
                    self.inject = Some(sig);
                }
                _ => {}
            }
        }
        if self.stopped {
            // Errors are ignored on purpose: ESRCH means the thread died (nothing to restart).
            let _ = ptrace::detach(NixPid::from_raw(self.tid.0), self.inject.take());
            self.done = true;
            let now = Instant::now();
            held = Hold {
                total: now - self.interrupted_at,
                after_stop: self.stopped_at.map(|t| now - t).unwrap_or_default(),
                since_check: now - self.last_check,
            };
            self.stopped = false;
        }
        held
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.release();
    }
}

/// The longest single `sigtimedwait` in [`WaitHow::Sigchld`]: a SIGCHLD consumed elsewhere
/// costs at most this much, and the last look before a stop is at most this old.
const MAX_SIGCHLD_WAIT: Duration = Duration::from_micros(250);

/// Sleeps until SIGCHLD is pending (then consumes it) or `d` passes. SIGCHLD must be blocked.
fn wait_sigchld(d: Duration) {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(Signal::SIGCHLD);
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the signal set and timeout we own; a null siginfo is allowed.
    unsafe {
        libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts);
    }
}

/// Copies up to `len` bytes at `addr` from process `pid`. Stops at the first unreadable page,
/// so the result may be shorter; an error only if nothing could be read.
pub fn read_memory(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    usize::try_from(addr).map_err(|_| Errno::EFAULT)?;
    let mut buf = vec![0u8; len];
    let n = crate::collect::memory::read_into(pid.0, addr, &mut buf)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EFAULT)))?;
    buf.truncate(n);
    Ok(buf)
}

/// Copies the stack of a stopped thread: `[sp, min(sp + max, stack_end))`.
pub fn copy_stack(pid: Pid, sp: u64, stack_end: Option<u64>, max: usize) -> StackCopy {
    let len = match stack_end {
        Some(end) if end > sp => usize::try_from(end - sp).unwrap_or(max).min(max),
        _ => max,
    };
    let bytes = read_memory(pid, sp, len).unwrap_or_default();
    StackCopy { base: sp, bytes }
}
