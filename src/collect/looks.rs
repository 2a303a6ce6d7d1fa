//! Later looks: what progress is judged on. Each look reads `/proc` and target memory only
//! (nothing is stopped): per thread `stat`, `syscall`, `schedstat` (how often it was scheduled),
//! the time left of a timed wait, and the Python top frame (py-spy, non-blocking) of processes
//! with a running or timed-waiting thread; per pipe its fill; per process the threads and
//! children that appeared. The judgement itself is `analysis::progress`.

use super::{fds, memory, procfs, python, read_text, tree};
use crate::model::{
    Appeared, Inode, Pid, ProcessSnap, Snapshot, SyscallState, ThreadLook, Tid, TimedWait,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// What later looks need from the first one: layouts (for py-spy discovery reuse) and one fd
/// per pipe to query.
pub struct Looker {
    pub(super) layouts: HashMap<i32, Option<String>>,
    pub(super) libcs: HashMap<i32, super::abi::GlibcLayout>,
    pub(super) pipe_refs: BTreeMap<Inode, (i32, i32)>,
    pub(super) first_done: Instant,
    pub(super) python: bool,
    pub(super) workers: usize,
}

impl Looker {
    /// Takes one more look at every thread, pipe and process of `snap`.
    pub fn look(&self, snap: &mut Snapshot) {
        let after_ms = self.first_done.elapsed().as_millis() as u64;
        threads(&mut snap.processes, after_ms);
        appeared(&mut snap.processes, after_ms);
        if self.python {
            restack(
                &mut snap.processes,
                &self.layouts,
                &self.libcs,
                self.workers,
            );
        }
        for p in &mut snap.pipes {
            let again = self
                .pipe_refs
                .get(&p.inode)
                .and_then(|(pid, fd)| fds::query_pipe(*pid, *fd, p.inode).buffered);
            p.later_buffered.push(again);
        }
        snap.looks += 1;
    }

    /// Milliseconds since the first look ended.
    pub fn elapsed_ms(&self) -> u64 {
        self.first_done.elapsed().as_millis() as u64
    }
}

/// How often the thread was scheduled onto a CPU: `schedstat`'s count (read once with the
/// rest of `schedstat`, [`super::read_sched`]), else the context switches in `status`.
fn switches(task: &str, sched: Option<&crate::model::SchedStat>) -> Option<u64> {
    if let Some(n) = sched.and_then(|s| s.slices) {
        return Some(n);
    }
    let st = read_text(&format!("{task}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// Reads a `struct timespec` (or `timeval` when `usec`) in target memory as nanoseconds.
fn timespec_ns(pid: i32, ptr: u64, usec: bool) -> Option<u64> {
    if ptr == 0 {
        return None;
    }
    let b = memory::read(pid, ptr, 16).ok()?;
    let s = memory::u64_at(&b, 0)?;
    let frac = memory::u64_at(&b, 8)?;
    let frac = if usec {
        frac.saturating_mul(1000)
    } else {
        frac
    };
    Some(s.saturating_mul(1_000_000_000).saturating_add(frac))
}

/// `clock_gettime(clock)` in nanoseconds.
fn now_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn left(deadline_ns: Option<u64>, clock: libc::clockid_t) -> Option<u64> {
    Some(deadline_ns?.saturating_sub(now_ns(clock)?) / 1_000_000)
}

fn relative(ns: Option<u64>) -> Option<u64> {
    ns.map(|n| n / 1_000_000)
}

/// Whether a blocked system call has a timeout, and how much of it can be left at most. For
/// `restart_syscall` (219) the original call is told from `wchan`.
pub fn timed_wait(pid: i32, task: &str, nr: i64, a: &[u64; 6]) -> Option<TimedWait> {
    let ms = |v: u64| -> Option<TimedWait> {
        let v = v as i32;
        (v >= 0).then_some(TimedWait {
            left_ms: Some(v as u64),
        })
    };
    let t = |left_ms: Option<u64>| Some(TimedWait { left_ms });
    match nr {
        // nanosleep(req, rem): relative.
        35 => t(relative(timespec_ns(pid, a[0], false))),
        // clock_nanosleep(clock, flags, req, rem): TIMER_ABSTIME = 1.
        230 => {
            let d = timespec_ns(pid, a[2], false);
            if a[1] & 1 != 0 {
                t(left(d, a[0] as libc::clockid_t))
            } else {
                t(relative(d))
            }
        }
        7 => ms(a[2]),
        271 => (a[2] != 0).then(|| TimedWait {
            left_ms: relative(timespec_ns(pid, a[2], false)),
        }),
        23 => (a[4] != 0).then(|| TimedWait {
            left_ms: relative(timespec_ns(pid, a[4], true)),
        }),
        270 => (a[4] != 0).then(|| TimedWait {
            left_ms: relative(timespec_ns(pid, a[4], false)),
        }),
        232 | 281 => ms(a[3]),
        441 => (a[3] != 0).then(|| TimedWait {
            left_ms: relative(timespec_ns(pid, a[3], false)),
        }),
        202 => {
            let cmd = a[1] & 0x7f;
            if a[3] == 0 || !matches!(cmd, 0 | 9) {
                return None;
            }
            let d = timespec_ns(pid, a[3], false);
            if cmd == 0 {
                t(relative(d))
            } else if a[1] & 0x100 != 0 {
                t(left(d, libc::CLOCK_REALTIME))
            } else {
                t(left(d, libc::CLOCK_MONOTONIC))
            }
        }
        219 => {
            let w = read_text(&format!("{task}/wchan"))
                .ok()
                .and_then(|w| procfs::clean_wchan(&w))
                .unwrap_or_default();
            if w.starts_with("futex") {
                // A restarted futex wait is always a timed one.
                timed_wait(pid, task, 202, a).or(t(None))
            } else if w.starts_with("poll_schedule_timeout") || w == "do_sys_poll" {
                ms(a[2])
            } else if w == "hrtimer_nanosleep" {
                t(None)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A look at every thread: state, CPU, system call, schedule count, timeout.
fn threads(processes: &mut [ProcessSnap], after_ms: u64) {
    for p in processes.iter_mut() {
        for t in &mut p.threads {
            let tb = format!("/proc/{}/task/{}", p.pid.0, t.tid.0);
            let look = match read_text(&format!("{tb}/stat"))
                .ok()
                .and_then(|s| procfs::parse_stat(&s))
            {
                Some(st) => {
                    let raw = read_text(&format!("{tb}/syscall"))
                        .ok()
                        .and_then(|s| procfs::parse_syscall(&s));
                    let (syscall, timed) = match raw {
                        Some(procfs::RawSyscall::Blocked { nr, args, .. }) => (
                            Some((nr, args[0], args[1], args[2])),
                            timed_wait(p.pid.0, &tb, nr, &args),
                        ),
                        _ => (None, None),
                    };
                    let sched = super::read_sched(&tb);
                    ThreadLook {
                        after_ms,
                        alive: st.state != 'Z' && st.state != 'X',
                        state: st.state,
                        cpu_ticks: st.utime + st.stime,
                        syscall,
                        py_top: None,
                        switches: switches(&tb, sched.as_ref()),
                        sched,
                        timed,
                        owns_gil: false,
                    }
                }
                None => ThreadLook {
                    after_ms,
                    alive: false,
                    state: 'X',
                    cpu_ticks: t.later.last().map(|l| l.cpu_ticks).unwrap_or(t.cpu_ticks),
                    syscall: None,
                    py_top: None,
                    switches: None,
                    sched: None,
                    timed: None,
                    owns_gil: false,
                },
            };
            t.later.push(look);
        }
    }
}

/// Threads and child processes not seen before, recorded on the process that started them.
fn appeared(processes: &mut [ProcessSnap], after_ms: u64) {
    let known: HashSet<i32> = processes.iter().map(|p| p.pid.0).collect();
    for p in processes.iter_mut() {
        if p.state == 'Z' {
            continue;
        }
        let seen: HashSet<(i32, i32)> = p
            .appeared
            .iter()
            .map(|a| (a.pid.0, a.tid.0))
            .chain(p.threads.iter().map(|t| (p.pid.0, t.tid.0)))
            .collect();
        let mut new = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", p.pid.0)) {
            for e in rd.flatten() {
                if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                    if !seen.contains(&(p.pid.0, tid)) {
                        new.push((p.pid.0, tid));
                    }
                }
            }
        }
        for c in tree::children_of(p.pid.0) {
            if !known.contains(&c) && !seen.contains(&(c, c)) {
                new.push((c, c));
            }
        }
        new.sort_unstable();
        p.appeared
            .extend(new.into_iter().map(|(pid, tid)| Appeared {
                after_ms,
                pid: Pid(pid),
                tid: Tid(tid),
            }));
    }
}

/// Re-reads the Python stacks of processes with a running or timed-waiting thread (or one that
/// held the GIL in the first look) and records each thread's innermost frame and GIL ownership
/// in its latest look: a busy loop shows the same frame every time, a periodic thread the same
/// line, a GIL holder stays the holder.
fn restack(
    processes: &mut [ProcessSnap],
    layouts: &HashMap<i32, Option<String>>,
    libcs: &HashMap<i32, super::abi::GlibcLayout>,
    workers: usize,
) {
    let wanted = |p: &ProcessSnap| {
        p.threads.iter().any(|t| {
            t.state == 'R'
                || t.py.as_ref().is_some_and(|py| py.owns_gil)
                || t.later
                    .last()
                    .is_some_and(|l| l.state == 'R' || l.timed.is_some())
        })
    };
    let targets: Vec<python::Target> = processes
        .iter()
        .filter(|p| p.python_version.is_some() && p.state != 'Z' && wanted(p))
        .map(|p| python::Target {
            pid: p.pid.0,
            tids: p.threads.iter().map(|t| t.tid.0).collect(),
            layout: layouts.get(&p.pid.0).cloned().flatten(),
            libc: libcs
                .get(&p.pid.0)
                .copied()
                .unwrap_or_else(|| super::abi::glibc(None)),
            forkserver: false,
            // A spinning loop shows its head line (see python::Target::extra_reads).
            extra_reads: 3,
            ns_tids: super::ns_tids(p),
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let results = python::collect(&targets, workers);
    for p in processes.iter_mut() {
        let Some(Ok(pp)) = results.get(&p.pid.0) else {
            continue;
        };
        for (tid, py) in &pp.threads {
            let Some(t) = tid.and_then(|tid| p.threads.iter_mut().find(|t| t.tid.0 == tid)) else {
                continue;
            };
            if let Some(l) = t.later.last_mut() {
                l.py_top = py.frames.first().map(|f| f.top_key());
                l.owns_gil = py.owns_gil;
            }
        }
    }
}

/// A cheap look at a tree already collected: true when anything a full look would show as
/// movement differs from `prev` (a process or thread came or went, or a thread's state, CPU
/// time or system call changed). Reads only `stat` and `syscall` per thread and the tree's
/// `children` files, so `attach` can skip full collections while a hung tree stays hung.
pub fn quick_changed(prev: &Snapshot) -> bool {
    let mut roots = vec![prev.root.0];
    roots.extend(
        prev.processes
            .iter()
            .filter(|p| prev.process(p.ppid).is_none() && p.pid != prev.root)
            .map(|p| p.pid.0),
    );
    let mut now = tree::walk(&roots);
    now.sort_unstable();
    let mut before: Vec<i32> = prev.processes.iter().map(|p| p.pid.0).collect();
    before.sort_unstable();
    if now != before {
        return true;
    }
    for p in &prev.processes {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", p.pid.0)) else {
            return true;
        };
        if rd.count() != p.threads.len() {
            return true;
        }
        for t in &p.threads {
            let base = format!("/proc/{}/task/{}", p.pid.0, t.tid.0);
            let Some(st) = read_text(&format!("{base}/stat"))
                .ok()
                .and_then(|s| procfs::parse_stat(&s))
            else {
                return true;
            };
            if st.state != t.state || st.utime + st.stime != t.cpu_ticks {
                return true;
            }
            let raw = read_text(&format!("{base}/syscall"))
                .ok()
                .and_then(|s| procfs::parse_syscall(&s));
            let same = match (&t.syscall, raw) {
                (SyscallState::Blocked(s), Some(procfs::RawSyscall::Blocked { nr, args, .. })) => {
                    s.nr == nr && s.args == args
                }
                (SyscallState::Running, Some(procfs::RawSyscall::Running)) => true,
                (SyscallState::UserStopped, Some(procfs::RawSyscall::UserStopped)) => true,
                (SyscallState::Unknown, None) => true,
                _ => false,
            };
            if !same {
                return true;
            }
        }
    }
    false
}
