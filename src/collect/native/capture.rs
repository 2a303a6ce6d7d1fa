//! The stop itself: seize a thread, wait for the stop, copy its registers and the top of its
//! stack, detach. Used in two places: on a dedicated thread of mphang (the in-process
//! [`Stopper::InProcess`](super::Stopper), for library callers and [`StopMode::AllAtOnce`]) and
//! in the ptrace helper process (`helper.rs`, what `report`, `run` and `attach` use).
//!
//! In-process, job-control stops are deferred: while a thread is held, SIGTSTP, SIGTTIN and
//! SIGTTOU sent to mphang are recorded by a handler and honoured right after the detach
//! ([`JobControlGuard`]), so Ctrl-Z never stops mphang while it holds a thread. SIGSTOP cannot
//! be caught; only the helper process protects against it.

use super::ptrace::{self, AttachError, Attached, Hold, Regs, WaitHow};
use super::unwind::StackCopy;
use super::{SampleOptions, StopMode};
use crate::model::{Pid, Tid};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// What one stop brings back.
#[derive(Debug)]
pub struct Capture {
    pub tid: Tid,
    pub regs: Regs,
    pub stack: StackCopy,
    pub held: Hold,
}

/// `[start, end)` of every mapping of the process, sorted: a stack copy never reads past the
/// end of the mapping that holds the stack pointer.
pub type Ranges = [(u64, u64)];

fn stack_end(ranges: &Ranges, sp: u64) -> Option<u64> {
    let i = ranges.partition_point(|r| r.0 <= sp);
    let r = ranges.get(i.checked_sub(1)?)?;
    (sp < r.1).then_some(r.1)
}

fn read_stopped(
    pid: Pid,
    g: &Attached,
    ranges: &Ranges,
    opts: &SampleOptions,
) -> Result<(Regs, StackCopy), AttachError> {
    let regs = g.regs()?;
    let end = stack_end(ranges, regs.sp);
    let stack = ptrace::copy_stack(pid, regs.sp, end, opts.stack_bytes);
    if !opts.extra_hold.is_zero() {
        std::thread::sleep(opts.extra_hold);
    }
    Ok((regs, stack))
}

/// Releases every thread in `pending` (given up on earlier) that has stopped since.
pub fn serve_pending(pending: &mut Vec<Attached>) {
    pending.retain_mut(|g| !g.try_release());
}

/// Stops, reads and releases one thread. A thread that does not stop in time is kept in
/// `pending` (seized, its interrupt still pending: it stops as soon as it runs) and released by
/// [`serve_pending`] once it has, never left stopped until the tracer exits.
pub fn capture_one(
    pid: Pid,
    tid: Tid,
    ranges: &Ranges,
    opts: &SampleOptions,
    how: WaitHow,
    pending: &mut Vec<Attached>,
) -> Result<Capture, AttachError> {
    let mut g = Attached::seize(tid)?;
    let deadline = Instant::now() + opts.stop_timeout;
    match g.wait_stopped_serving(deadline, how, &mut || serve_pending(pending)) {
        Ok(()) => {}
        Err(e @ AttachError::Timeout(_)) => {
            if !g.try_release() {
                pending.push(g);
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    let read = read_stopped(pid, &g, ranges, opts);
    let exiting = g.exiting();
    let held = g.detach();
    let (regs, stack) = read?;
    if exiting {
        return Err(AttachError::Gone);
    }
    Ok(Capture {
        tid,
        regs,
        stack,
        held,
    })
}

fn capture_together(
    pid: Pid,
    tids: &[Tid],
    ranges: &Ranges,
    opts: &SampleOptions,
) -> Vec<(Tid, Result<Capture, AttachError>)> {
    let mut guards: Vec<(Tid, Result<Attached, AttachError>)> =
        tids.iter().map(|&t| (t, Attached::seize(t))).collect();
    let deadline = Instant::now() + opts.stop_timeout;
    for (_, g) in guards.iter_mut() {
        if let Ok(a) = g {
            if let Err(e) = a.wait_stopped(deadline) {
                *g = Err(e);
            }
        }
    }
    let mut reads = Vec::new();
    for (_, g) in &guards {
        reads.push(match g {
            Ok(a) if a.exiting() => Err(AttachError::Gone),
            Ok(a) => read_stopped(pid, a, ranges, opts),
            Err(e) => Err(e.clone()),
        });
    }
    let mut held = Vec::new();
    for (_, g) in guards {
        held.push(g.map(|a| a.detach()).unwrap_or_default());
    }
    tids.iter()
        .zip(reads)
        .zip(held)
        .map(|((&tid, r), h)| {
            (
                tid,
                r.map(|(regs, stack)| Capture {
                    tid,
                    regs,
                    stack,
                    held: h,
                }),
            )
        })
        .collect()
}

/// Runs every ptrace call on one dedicated thread of this process and returns what it captured.
/// Job-control stops of mphang wait until no thread is held (see the module docs).
pub fn in_process(
    pid: Pid,
    tids: &[Tid],
    ranges: &Ranges,
    opts: &SampleOptions,
) -> Vec<(Tid, Result<Capture, AttachError>)> {
    if tids.is_empty() {
        return Vec::new();
    }
    let joined = std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("mphang-ptrace".into())
            .spawn_scoped(s, || {
                // Tighter sleeps while polling for the stop (the target waits on us).
                // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
                }
                match opts.mode {
                    StopMode::OneAtATime => {
                        let mut pending = Vec::new();
                        let out = tids
                            .iter()
                            .map(|&t| {
                                let _held = JobControlGuard::hold();
                                let r =
                                    capture_one(pid, t, ranges, opts, WaitHow::Poll, &mut pending);
                                serve_pending(&mut pending);
                                (t, r)
                            })
                            .collect::<Vec<_>>();
                        // Whatever is still pending is cleared when this thread exits.
                        serve_pending(&mut pending);
                        out
                    }
                    StopMode::AllAtOnce => {
                        let _held = JobControlGuard::hold();
                        capture_together(pid, tids, ranges, opts)
                    }
                }
            });
        match h {
            Ok(h) => h.join().ok(),
            Err(_) => None,
        }
    });
    joined.unwrap_or_else(|| {
        tids.iter()
            .map(|&t| (t, Err(AttachError::Other("ptrace thread failed".into()))))
            .collect()
    })
}

/// Bit 0: a thread is held. Bits 8..16: a job-control signal that arrived meanwhile.
static JOB_STATE: AtomicU32 = AtomicU32::new(0);
const HOLDING: u32 = 1;

/// The job-control signals whose default action is to stop the process.
const JOB_SIGNALS: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// Stops this process with `sig` the default way, then puts the deferring handler back.
/// Async-signal-safe (sigaction, sigprocmask and raise only).
fn honour(sig: libc::c_int) {
    // SAFETY: plain sigaction/sigprocmask/raise calls on structures we own; all three are
    // async-signal-safe, so this may run inside the handler.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut ours: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &dfl, &mut ours);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, &mut old);
        libc::raise(sig); // stops here until SIGCONT
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::sigaction(sig, &ours, std::ptr::null_mut());
    }
}

extern "C" fn on_job_signal(sig: libc::c_int) {
    let mut cur = JOB_STATE.load(Ordering::SeqCst);
    loop {
        if cur & HOLDING == 0 {
            honour(sig);
            return;
        }
        let want = cur | ((sig as u32 & 0xff) << 8);
        match JOB_STATE.compare_exchange(cur, want, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return, // the holder honours it right after its detach
            Err(now) => cur = now,
        }
    }
}

/// Installs the deferring handler for the job-control signals, once, where their disposition is
/// still the default (a program embedding mphang keeps its own handlers).
fn install_job_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in JOB_SIGNALS {
            // SAFETY: sigaction with structures we own; `on_job_signal` is async-signal-safe
            // (atomics, sigaction, sigprocmask, raise).
            unsafe {
                let mut cur: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut cur) != 0
                    || cur.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_job_signal as extern "C" fn(libc::c_int) as usize;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        }
    });
}

/// Marks "a thread is held" for its lifetime; a job-control stop of mphang that arrives
/// meanwhile is honoured when the guard drops (after the detach, since the guard is created
/// before the seize and dropped after the detach).
pub struct JobControlGuard(());

impl JobControlGuard {
    pub fn hold() -> JobControlGuard {
        install_job_handlers();
        JOB_STATE.fetch_or(HOLDING, Ordering::SeqCst);
        JobControlGuard(())
    }
}

impl Drop for JobControlGuard {
    fn drop(&mut self) {
        let prev = JOB_STATE.swap(0, Ordering::SeqCst);
        let sig = (prev >> 8) & 0xff;
        if sig != 0 {
            honour(sig as libc::c_int);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_end_is_the_end_of_the_mapping_holding_sp() {
        let r = [(0x1000, 0x2000), (0x3000, 0x5000)];
        assert_eq!(stack_end(&r, 0x1fff), Some(0x2000));
        assert_eq!(stack_end(&r, 0x3000), Some(0x5000));
        assert_eq!(stack_end(&r, 0x2800), None);
        assert_eq!(stack_end(&r, 0x500), None);
    }
}
