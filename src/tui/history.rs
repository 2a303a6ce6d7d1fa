//! What the live view remembers across refreshes: CPU %, how long each thread has been blocked
//! in the same place, when each process last made progress, and processes that went away.
//!
//! Input: successive [`Report`]s (one look each). Output: per-process and per-thread tracks the
//! views read. Times come from the snapshots' `taken_at_ms`, never from the wall clock, so a
//! recorded sequence of reports always renders the same way.

use crate::analysis::{BlockedOn, Progress};
use crate::model::{NativeFrame, Pid, ProcessSnap, SyscallState, ThreadRef, ThreadSnap};
use crate::render::Report;
use std::collections::{BTreeMap, HashMap};

/// What a thread looks like from outside; equal across refreshes means "still blocked there".
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    /// Syscall number and first three arguments, when blocked in one.
    syscall: Option<(i64, [u64; 3])>,
    wchan: Option<String>,
    /// Python frames as (function, file, line), innermost first.
    stack: Vec<(String, String, i32)>,
}

impl Signature {
    fn of(t: &ThreadSnap) -> Option<Signature> {
        let SyscallState::Blocked(s) = &t.syscall else {
            return None;
        };
        let stack =
            t.py.as_ref()
                .map(|p| {
                    p.frames
                        .iter()
                        .map(|f| (f.function.clone(), f.file.clone(), f.line))
                        .collect()
                })
                .unwrap_or_default();
        Some(Signature {
            syscall: Some((s.nr, [s.args[0], s.args[1], s.args[2]])),
            wchan: t.wchan.clone(),
            stack,
        })
    }
}

/// Still blocked in the same call, at the same wait channel, with the same Python stack. A look
/// that could not read the stack (py-spy raced the interpreter) does not count as a move.
fn same_place(old: Option<&Signature>, new: Option<&Signature>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            a.syscall == b.syscall
                && a.wchan == b.wchan
                && (a.stack == b.stack || a.stack.is_empty() || b.stack.is_empty())
        }
        _ => false,
    }
}

/// One thread followed across refreshes.
#[derive(Debug, Clone)]
struct ThreadTrack {
    sig: Option<Signature>,
    /// `taken_at_ms` of the first refresh that saw it blocked with `sig`.
    since_ms: u64,
    /// The last native stack read for it while it stayed in this place, and the look number
    /// that read it (native stacks are not read at every look; see `cmd::attach`).
    native: Option<(Vec<NativeFrame>, u64)>,
}

/// How a process is doing, as shown in the tree's status column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// At least one thread on a CPU or runnable.
    Running,
    /// Blocked, but the analysis did not prove it stuck (or there is no verdict yet).
    Waiting,
    /// A thread of it was proven unable to progress.
    Stuck,
    /// It was seen earlier and is not there any more.
    Gone,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Stuck => "stuck",
            Status::Gone => "gone",
        }
    }
}

/// One process followed across refreshes.
#[derive(Debug, Clone)]
pub struct ProcTrack {
    pub pid: Pid,
    pub ppid: Option<Pid>,
    /// The last look at it while it was alive (None for a process only known from `gone`).
    pub last: Option<ProcessSnap>,
    /// CPU use between the last two refreshes, in percent of one CPU.
    pub cpu_pct: Option<f64>,
    /// `taken_at_ms` of the last refresh in which a thread moved (or of the first sighting).
    pub last_progress_ms: u64,
    /// Set once it has gone; the text is the exit info when known (`exit 0`, `signal 9`).
    pub gone: Option<Option<String>>,
    /// Command line, kept for gone processes.
    pub cmdline: Vec<String>,
}

/// Everything remembered across refreshes.
#[derive(Debug, Clone, Default)]
pub struct History {
    procs: BTreeMap<Pid, ProcTrack>,
    threads: HashMap<ThreadRef, ThreadTrack>,
    /// `taken_at_ms` of the newest report.
    pub latest_ms: u64,
    /// Number of reports observed.
    pub refreshes: u64,
    prev_ms: Option<u64>,
}

impl History {
    /// Folds one more report in.
    pub fn observe(&mut self, report: &Report) {
        let snap = &report.snapshot;
        let now = snap.taken_at_ms;
        let dt_s = self
            .prev_ms
            .map(|p| now.saturating_sub(p) as f64 / 1000.0)
            .filter(|d| *d > 0.0);
        let ticks = snap.clock_ticks.max(1) as f64;
        for p in &snap.processes {
            let mut moved = false;
            for t in &p.threads {
                let r = ThreadRef {
                    pid: p.pid,
                    tid: t.tid,
                };
                let sig = Signature::of(t);
                let native = t.native.clone().map(|n| (n, self.refreshes + 1));
                let housekeeping = report.verdict(r).is_some_and(|v| v.housekeeping);
                match self.threads.get_mut(&r) {
                    Some(track) if same_place(track.sig.as_ref(), sig.as_ref()) => {
                        // Keep the stacks we know when this look could not read them.
                        if let (Some(old), Some(new)) = (track.sig.as_mut(), sig) {
                            if !new.stack.is_empty() {
                                old.stack = new.stack;
                            }
                        }
                        if native.is_some() {
                            track.native = native;
                        }
                    }
                    Some(track) => {
                        moved |= !housekeeping;
                        *track = ThreadTrack {
                            sig,
                            since_ms: now,
                            native,
                        };
                    }
                    None => {
                        let track = ThreadTrack {
                            sig,
                            since_ms: now,
                            native,
                        };
                        self.threads.insert(r, track);
                    }
                }
                moved |= !housekeeping && matches!(t.syscall, SyscallState::Running);
            }
            let track = self.procs.entry(p.pid).or_insert_with(|| ProcTrack {
                pid: p.pid,
                ppid: Some(p.ppid),
                last: None,
                cpu_pct: None,
                last_progress_ms: now,
                gone: None,
                cmdline: Vec::new(),
            });
            track.cpu_pct = match (&track.last, dt_s) {
                (Some(prev), Some(dt)) if track.gone.is_none() => {
                    let d = p.cpu_ticks.saturating_sub(prev.cpu_ticks) as f64;
                    Some(d / ticks / dt * 100.0)
                }
                _ => None,
            };
            if moved {
                track.last_progress_ms = now;
            }
            track.ppid = Some(p.ppid);
            track.cmdline = p.cmdline.clone();
            track.last = Some(p.clone());
            track.gone = None;
        }
        // Processes seen before and missing now, plus those the snapshot reports as gone.
        for track in self.procs.values_mut() {
            if track.gone.is_none() && snap.process(track.pid).is_none() {
                track.gone = Some(None);
                track.cpu_pct = None;
            }
        }
        for g in &snap.gone {
            if snap.process(g.pid).is_some() {
                continue;
            }
            let track = self.procs.entry(g.pid).or_insert_with(|| ProcTrack {
                pid: g.pid,
                ppid: g.ppid,
                last: None,
                cpu_pct: None,
                last_progress_ms: g.ended_at_ms.unwrap_or(now),
                gone: None,
                cmdline: g.cmdline.clone(),
            });
            track.gone = Some(g.ended.clone());
            track.cpu_pct = None;
        }
        self.threads.retain(|r, _| {
            snap.process(r.pid)
                .is_some_and(|p| p.thread(r.tid).is_some())
        });
        self.prev_ms = Some(now);
        self.latest_ms = now;
        self.refreshes += 1;
    }

    /// Marks every process gone (the target itself went away).
    pub fn all_gone(&mut self) {
        for t in self.procs.values_mut() {
            if t.gone.is_none() {
                t.gone = Some(None);
                t.cpu_pct = None;
            }
        }
    }

    pub fn process(&self, pid: Pid) -> Option<&ProcTrack> {
        self.procs.get(&pid)
    }

    /// How long the thread has sat in the same blocking call with the same stack, in ms;
    /// None when it is not blocked.
    pub fn blocked_for_ms(&self, r: ThreadRef) -> Option<u64> {
        let t = self.threads.get(&r)?;
        t.sig.as_ref()?;
        Some(self.latest_ms.saturating_sub(t.since_ms))
    }

    /// The newest native stack read for the thread while it has stayed where it is now, with
    /// the number of the look that read it.
    pub fn native(&self, r: ThreadRef) -> Option<(&[NativeFrame], u64)> {
        let (frames, look) = self.threads.get(&r)?.native.as_ref()?;
        Some((frames.as_slice(), *look))
    }

    /// Milliseconds since the process last made progress.
    pub fn idle_ms(&self, pid: Pid) -> Option<u64> {
        let t = self.procs.get(&pid)?;
        Some(self.latest_ms.saturating_sub(t.last_progress_ms))
    }

    /// The status mark of a process under the latest report.
    pub fn status(&self, pid: Pid, report: Option<&Report>) -> Status {
        let Some(track) = self.procs.get(&pid) else {
            return Status::Gone;
        };
        if track.gone.is_some() {
            return Status::Gone;
        }
        let Some(p) = &track.last else {
            return Status::Gone;
        };
        let refs = p.threads.iter().map(|t| ThreadRef { pid, tid: t.tid });
        let stuck = report.is_some_and(|r| {
            refs.clone()
                .any(|t| r.verdict(t).is_some_and(|v| v.progress == Progress::Stuck))
        });
        if stuck {
            return Status::Stuck;
        }
        let running = p.threads.iter().any(|t| {
            matches!(t.syscall, SyscallState::Running)
                || t.state == 'R'
                || report.is_some_and(|r| {
                    r.verdict(ThreadRef { pid, tid: t.tid })
                        .is_some_and(|v| v.blocked_on == BlockedOn::Running)
                })
        });
        if running {
            Status::Running
        } else {
            Status::Waiting
        }
    }

    /// The process tree in display order: (pid, depth), parents before children, children by pid.
    /// Gone processes keep their place under their parent.
    pub fn rows(&self) -> Vec<(Pid, usize)> {
        let mut children: BTreeMap<Pid, Vec<Pid>> = BTreeMap::new();
        let mut roots = Vec::new();
        for t in self.procs.values() {
            match t
                .ppid
                .filter(|pp| self.procs.contains_key(pp) && *pp != t.pid)
            {
                Some(pp) => children.entry(pp).or_default().push(t.pid),
                None => roots.push(t.pid),
            }
        }
        let mut out = Vec::with_capacity(self.procs.len());
        let mut stack: Vec<(Pid, usize)> = roots.into_iter().rev().map(|p| (p, 0)).collect();
        while let Some((pid, depth)) = stack.pop() {
            if out.iter().any(|(p, _)| *p == pid) {
                continue; // a ppid loop in a hand-made snapshot; show each pid once
            }
            out.push((pid, depth));
            if let Some(kids) = children.get(&pid) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
        out
    }
}

/// `5s`, `3m07s`, `2h05m`: compact age for the tree.
pub fn short_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Go-style blocked time: `42 seconds`, `5 minutes`, `2 hours`; None under one second.
pub fn long_age(ms: u64) -> Option<String> {
    let s = ms / 1000;
    let (n, unit) = match s {
        0 => return None,
        1..=59 => (s, "second"),
        60..=7199 => (s / 60, "minute"),
        _ => (s / 3600, "hour"),
    };
    Some(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
}

/// A short wait reason for a thread, Go-style (`pipe write`, `wait child`, `lock`).
pub fn wait_reason(t: &ThreadSnap, verdict: Option<&BlockedOn>) -> String {
    let from_verdict = verdict.map(|b| match b {
        BlockedOn::Running => "running",
        BlockedOn::PipeRead { .. } => "pipe read",
        BlockedOn::PipeWrite { .. } => "pipe write",
        BlockedOn::SocketRead { .. } => "socket read",
        BlockedOn::SocketWrite { .. } => "socket write",
        BlockedOn::TcpRead { .. } => "tcp read",
        BlockedOn::TcpWrite { .. } => "tcp write",
        BlockedOn::Accept { .. } => "accept",
        BlockedOn::External { .. } => "io wait",
        BlockedOn::Semaphore { .. } => "semaphore",
        BlockedOn::Mutex { .. } => "mutex",
        BlockedOn::ThreadLock { .. } => "lock",
        BlockedOn::ParkingLot { .. } => "parking lot",
        BlockedOn::Gil => "GIL",
        BlockedOn::Child { .. } => "wait child",
        BlockedOn::Any { .. } => "poll",
        BlockedOn::Timed { .. } => "sleep",
        BlockedOn::Signal => "signal",
        BlockedOn::Unknown { .. } => "",
    });
    match (from_verdict, &t.syscall) {
        (Some(r), _) if !r.is_empty() => r.to_string(),
        (_, SyscallState::Blocked(s)) => s.name.clone(),
        (_, SyscallState::Running) => "running".into(),
        (_, SyscallState::UserStopped) => "stopped".into(),
        (_, SyscallState::Unknown) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(short_age(4_200), "4s");
        assert_eq!(short_age(187_000), "3m07s");
        assert_eq!(short_age(7_500_000), "2h05m");
        assert_eq!(long_age(500), None);
        assert_eq!(long_age(1_000).as_deref(), Some("1 second"));
        assert_eq!(long_age(300_000).as_deref(), Some("5 minutes"));
        assert_eq!(long_age(7_200_000).as_deref(), Some("2 hours"));
    }
}
