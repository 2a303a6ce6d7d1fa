//! The watched tree: every descendant of `mphang run` (which is a child subreaper, so orphans and
//! daemonised grandchildren stay below it), found by polling `/proc/PID/task/*/children`; or, for
//! `mphang watch`, a process mphang did not start and its descendants ([`Tracker::watching`]).
//!
//! Each poll reaps what was reparented to mphang (`waitpid(-1, WNOHANG)`, which gives their exit
//! status), lists the descendants, notes the CPU time they used (for `--stall`) and moves the ones
//! that vanished to the `gone` list. A non-child's status is only visible to its parent; it is
//! taken from the proc connector when that runs (see `connector`), else from a pidfd held on the
//! process (Linux 6.15+, see `pidfd`), else from `/proc/PID/stat` if a poll caught it as a
//! zombie, else recorded as unknown.

use super::connector::Listener;
use super::pidfd;
use crate::model::{GoneProcess, Pid};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A wait(2) status word, as `waitpid`, `/proc/PID/stat` and the proc connector report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStatus(pub i32);

impl RawStatus {
    fn from_wait(ws: WaitStatus) -> Option<(i32, RawStatus)> {
        match ws {
            WaitStatus::Exited(pid, code) => Some((pid.as_raw(), RawStatus((code & 0xff) << 8))),
            WaitStatus::Signaled(pid, sig, core) => Some((
                pid.as_raw(),
                RawStatus(sig as i32 | if core { 0x80 } else { 0 }),
            )),
            _ => None,
        }
    }

    /// The signal that ended the process, if a signal did.
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }

    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self.signal() {
            Some(sig) => 128 + sig,
            None => (self.0 >> 8) & 0xff,
        }
    }

    /// `exit 3`, `signal 9 (SIGKILL)`, `signal 11 (SIGSEGV), core dumped`.
    pub fn describe(self) -> String {
        match self.signal() {
            None => format!("exit {}", (self.0 >> 8) & 0xff),
            Some(sig) => {
                let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
                let core = if self.0 & 0x80 != 0 {
                    ", core dumped"
                } else {
                    ""
                };
                format!("signal {sig} ({name}){core}")
            }
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

use crate::collect::procfs::read_stat;

/// The start time of `pid` (clock ticks since boot) while it lives; None once it is gone or a
/// zombie. Two reads giving the same value mean the same process (pids are reused).
pub fn start_ticks(pid: i32) -> Option<u64> {
    read_stat(pid)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .map(|s| s.start_ticks)
}

/// `/proc/PID/cmdline` split at NULs (empty for zombies and kernel threads).
pub fn read_cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid` (all its threads'), in the kernel's order.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// At most this many ended processes are kept (a long job can start hundreds of thousands);
/// beyond it the oldest clean exits (`exit 0`) go first, then the oldest.
pub const MAX_GONE: usize = 1000;

/// Drops entries from `gone` until at most `max` remain: the oldest `exit 0` first, then the
/// oldest (entries are in the order they ended).
pub fn prune_gone(gone: &mut Vec<GoneProcess>, max: usize) {
    while gone.len() > max {
        let clean = gone
            .iter()
            .position(|g| g.ended.as_deref() == Some("exit 0"));
        gone.remove(clean.unwrap_or(0));
    }
}

/// At most this many pidfds are held (one per live descendant), far below the usual 1024 limit.
const MAX_PIDFDS: usize = 512;

/// A live descendant as last seen.
#[derive(Debug)]
struct Seen {
    ppid: i32,
    cmdline: Vec<String>,
    start_ticks: u64,
    cpu_ticks: u64,
    /// When a poll first saw it (an exit recorded earlier belongs to an older process).
    first_seen_ms: u64,
    /// Set once it was seen as a zombie, with the status `/proc/PID/stat` gave.
    zombie: Option<Option<RawStatus>>,
    /// Held while it lives, to ask for its exit status afterwards (pidfd mode only).
    pidfd: Option<OwnedFd>,
}

/// Every descendant of mphang (or of the watched process), alive and gone.
pub struct Tracker {
    me: i32,
    /// Whose descendants are tracked: mphang itself (`run`), or the watched process, which is
    /// then tracked too (`watch`).
    top: i32,
    /// Signal the command's process group too (`run`: CMD has a group of its own; a watched
    /// process shares its group with whatever the shell started alongside it).
    group: bool,
    child: i32,
    child_status: Option<RawStatus>,
    live: BTreeMap<i32, Seen>,
    gone: Vec<GoneProcess>,
    /// Statuses reaped by mphang itself, by pid, with the time.
    reaped: HashMap<i32, (RawStatus, u64)>,
    /// When each process in `gone` was first seen, by pid.
    first_seen: HashMap<i32, u64>,
    exits: Option<Listener>,
    /// Hold pidfds for exit statuses (no connector, kernel 6.15+).
    pidfds: bool,
}

impl Tracker {
    /// Tracks `child`'s tree; exit statuses from `exits` when given, else from pidfds when
    /// `pidfds` allows and the kernel supports them, else from polling.
    pub fn new(child: i32, exits: Option<Listener>, pidfds: bool) -> Tracker {
        let pidfds = pidfds && exits.is_none() && pidfd::supported();
        let me = std::process::id() as i32;
        Tracker {
            pidfds,
            me,
            top: me,
            group: true,
            child,
            child_status: None,
            live: BTreeMap::new(),
            gone: Vec::new(),
            reaped: HashMap::new(),
            first_seen: HashMap::new(),
            exits,
        }
    }

    /// Tracks `root` (a process mphang did not start, e.g. a pytest worker) and its
    /// descendants. Exit statuses are not needed there, so only `/proc` is read; nothing is
    /// signalled by process group.
    pub fn watching(root: i32) -> Tracker {
        Tracker {
            top: root,
            group: false,
            ..Tracker::new(root, None, false)
        }
    }

    /// Live tracked processes started at or after `ticks` (clock ticks since boot, as
    /// [`now_ticks`]), the watched process itself excepted.
    pub fn started_since(&self, ticks: u64) -> Vec<Pid> {
        self.live
            .iter()
            .filter(|(&pid, s)| pid != self.top && s.start_ticks >= ticks)
            .map(|(&pid, _)| Pid(pid))
            .collect()
    }

    /// The command's own status once mphang reaped it.
    pub fn child_status(&self) -> Option<RawStatus> {
        self.child_status
    }

    /// Which source gives exit statuses of processes mphang did not start.
    pub fn status_source(&self) -> &'static str {
        if self.exits.is_some() {
            "proc connector"
        } else if self.pidfds {
            "pidfds"
        } else {
            "/proc polling"
        }
    }

    /// Live descendants (zombies included), by pid.
    pub fn live_pids(&self) -> Vec<Pid> {
        self.live.keys().map(|&p| Pid(p)).collect()
    }

    /// Live descendants that are not zombies, with the CPU ticks they used.
    pub fn live_cpu(&self) -> Vec<(i32, u64)> {
        self.live
            .iter()
            .filter(|(_, s)| s.zombie.is_none())
            .map(|(&pid, s)| (pid, s.cpu_ticks))
            .collect()
    }

    /// Subscribes `tx` to the pids of exits the proc connector reports (false without it).
    pub fn notify_exits(&self, tx: std::sync::mpsc::Sender<i32>) -> bool {
        match &self.exits {
            Some(l) => {
                l.notify(tx);
                true
            }
            None => false,
        }
    }

    /// Live processes reparented to mphang other than the command: the extra roots to collect.
    pub fn orphans(&self) -> Vec<Pid> {
        self.live
            .iter()
            .filter(|(&pid, s)| s.ppid == self.me && pid != self.child)
            .map(|(&pid, _)| Pid(pid))
            .collect()
    }

    /// Reaps whatever mphang may reap without blocking; records the command's status.
    fn reap(&mut self) {
        loop {
            match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    if let Some((pid, status)) = RawStatus::from_wait(ws) {
                        if pid == self.child {
                            self.child_status = Some(status);
                        }
                        self.reaped.insert(pid, (status, now_ms()));
                    }
                }
            }
        }
    }

    /// One poll: reap, list descendants, retire the vanished. Returns the CPU ticks used by the
    /// tree since the previous poll plus the number of processes that appeared or vanished, so
    /// zero means no progress anywhere.
    pub fn poll(&mut self) -> u64 {
        self.reap();
        let mut activity = 0u64;
        let mut found: BTreeMap<i32, Seen> = BTreeMap::new();
        // The watched process is tracked like its descendants (it is "found" first).
        let mut queue = vec![self.me];
        let mut first = (self.top != self.me).then_some(vec![self.top]);
        while let Some(parent) = queue.pop() {
            let pids = first.take().unwrap_or_else(|| children_of(parent));
            for pid in pids {
                // mphang's own ptrace helper is not part of the tree.
                if pid == self.me
                    || found.contains_key(&pid)
                    || crate::collect::native::helper::is_helper(pid)
                {
                    continue;
                }
                let Some(stat) = read_stat(pid) else { continue };
                let zombie = (stat.state == 'Z').then(|| stat.exit_code.map(RawStatus));
                let seen = match self.live.remove(&pid) {
                    Some(old) if old.start_ticks == stat.start_ticks => {
                        activity += stat.cpu_ticks().saturating_sub(old.cpu_ticks);
                        Seen {
                            ppid: stat.ppid,
                            cpu_ticks: stat.cpu_ticks(),
                            zombie: zombie.or(old.zombie),
                            ..old
                        }
                    }
                    reused => {
                        if let Some(old) = reused {
                            self.retire(pid, old);
                        }
                        activity += 1;
                        let held = self.live.values().filter(|s| s.pidfd.is_some()).count()
                            + found.values().filter(|s| s.pidfd.is_some()).count();
                        let pidfd = (self.pidfds && zombie.is_none() && held < MAX_PIDFDS)
                            .then(|| pidfd::open(pid))
                            .flatten()
                            // The pid could have been reused between the stat and the open.
                            .filter(|_| {
                                read_stat(pid).map(|s| s.start_ticks) == Some(stat.start_ticks)
                            });
                        // A status reaped earlier under this pid was another process's.
                        self.reaped.remove(&pid);
                        Seen {
                            ppid: stat.ppid,
                            cmdline: read_cmdline(pid),
                            start_ticks: stat.start_ticks,
                            cpu_ticks: stat.cpu_ticks(),
                            first_seen_ms: now_ms(),
                            zombie,
                            pidfd,
                        }
                    }
                };
                found.insert(pid, seen);
                queue.push(pid);
            }
        }
        let vanished = std::mem::replace(&mut self.live, found);
        for (pid, old) in vanished {
            activity += 1;
            self.retire(pid, old);
        }
        activity
    }

    fn retire(&mut self, pid: i32, old: Seen) {
        let from_pidfd = old.pidfd.as_ref().and_then(pidfd::exit_status);
        let (ended, at) = match (
            self.reaped.remove(&pid),
            from_pidfd.or(old.zombie.flatten()),
        ) {
            (Some((status, at)), _) => (Some(status.describe()), Some(at)),
            (None, Some(status)) => (Some(status.describe()), Some(now_ms())),
            (None, None) => (None, Some(now_ms())),
        };
        self.gone.push(GoneProcess {
            pid: Pid(pid),
            ppid: Some(Pid(old.ppid)),
            cmdline: old.cmdline,
            ended,
            ended_at_ms: at,
            last_stack: None,
        });
        self.first_seen.insert(pid, old.first_seen_ms);
        prune_gone(&mut self.gone, MAX_GONE);
        let kept: std::collections::HashSet<i32> = self.gone.iter().map(|g| g.pid.0).collect();
        self.first_seen.retain(|p, _| kept.contains(p));
    }

    /// Every descendant that ended so far, with the best status known; processes only the proc
    /// connector saw (born and dead between two polls) are included too.
    pub fn gone(&self) -> Vec<GoneProcess> {
        let mut out = self.gone.clone();
        if let Some(exits) = &self.exits {
            for g in out.iter_mut().filter(|g| g.ended.is_none()) {
                let seen_at = self.first_seen.get(&g.pid.0).copied().unwrap_or(0);
                if let Some(e) = exits.exit_of(g.pid.0).filter(|e| e.at_ms >= seen_at) {
                    g.ended = Some(e.status.describe());
                    g.ended_at_ms = Some(e.at_ms);
                }
            }
            for e in exits.ended() {
                let known = out.iter().any(|g| g.pid.0 == e.pid)
                    || self.live.contains_key(&e.pid)
                    || e.pid == self.me
                    || crate::collect::native::helper::is_helper_cmdline(&e.cmdline);
                if !known {
                    out.push(GoneProcess {
                        pid: Pid(e.pid),
                        ppid: e.ppid.map(Pid),
                        cmdline: e.cmdline,
                        ended: Some(e.status.describe()),
                        ended_at_ms: Some(e.at_ms),
                        last_stack: None,
                    });
                }
            }
        }
        for g in out.iter_mut().filter(|g| g.ended.is_none()) {
            g.ended = Some("exited (status unknown)".into());
        }
        out.sort_by_key(|g| g.ended_at_ms);
        prune_gone(&mut out, MAX_GONE);
        out
    }

    /// Sends `sig` to the command's process group (while its leader is unreaped, so the group id
    /// cannot have been reused) and to every live descendant, zombies excepted.
    pub fn signal_all(&self, sig: Signal) {
        if self.group && self.child_status.is_none() {
            let _ = killpg(NixPid::from_raw(self.child), sig);
        }
        for (&pid, seen) in &self.live {
            if seen.zombie.is_none() {
                let _ = kill(NixPid::from_raw(pid), sig);
            }
        }
    }

    /// Forwards a signal to the command's process group only.
    pub fn forward(&self, sig: Signal) {
        if self.group && self.child_status.is_none() {
            let _ = killpg(NixPid::from_raw(self.child), sig);
        }
    }

    /// Ends the whole tree: SIGTERM (and SIGCONT, for stopped ones) to everything, up to `grace`
    /// for it to exit, then SIGKILL to what is left, until nothing below mphang remains (or 10 s
    /// more passed: a process in uninterruptible sleep can outlive SIGKILL for a while).
    /// The grace period is cut short when `hurry` turns true (a second SIGINT). Returns how
    /// many processes still had to be SIGKILLed.
    pub fn end_all(&mut self, grace: Duration, hurry: &dyn Fn() -> bool) -> usize {
        self.poll();
        if self.live.is_empty() && self.child_status.is_some() {
            return 0;
        }
        self.signal_all(Signal::SIGTERM);
        self.signal_all(Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !hurry() {
            std::thread::sleep(Duration::from_millis(50));
            self.poll();
            if self.live.is_empty() && self.child_status.is_some() {
                return 0;
            }
        }
        let killed = self.live.values().filter(|s| s.zombie.is_none()).count();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.signal_all(Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
            self.poll();
            if self.live.is_empty() && self.child_status.is_some() {
                break;
            }
        }
        killed
    }

    /// Ends exactly `pids` (those still alive as the same processes): SIGTERM and SIGCONT, up
    /// to `grace` for them to exit, then SIGKILL until they are gone (or 10 s more passed).
    /// A zombie counts as ended: its parent reaps it. Returns how many had to be SIGKILLed.
    pub fn end(&mut self, pids: &[Pid], grace: Duration) -> usize {
        self.poll();
        let chosen: HashMap<i32, u64> = pids
            .iter()
            .filter_map(|p| self.live.get(&p.0).map(|s| (p.0, s.start_ticks)))
            .collect();
        let alive = |t: &Tracker| -> Vec<i32> {
            chosen
                .iter()
                .filter(|(pid, start)| {
                    t.live
                        .get(pid)
                        .is_some_and(|s| s.start_ticks == **start && s.zombie.is_none())
                })
                .map(|(&pid, _)| pid)
                .collect()
        };
        let send = |pids: &[i32], sig: Signal| {
            for &pid in pids {
                let _ = kill(NixPid::from_raw(pid), sig);
            }
        };
        let left = alive(self);
        send(&left, Signal::SIGTERM);
        send(&left, Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            self.poll();
            if alive(self).is_empty() {
                return 0;
            }
        }
        let killed = alive(self).len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let left = alive(self);
            if left.is_empty() {
                break;
            }
            send(&left, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
            self.poll();
        }
        killed
    }
}

/// Clock ticks since boot now (the unit of `start_ticks` in `/proc/PID/stat`).
pub fn now_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to. CLOCK_BOOTTIME is what stat's start time
    // counts from.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    ticks_of_boot_ns(secs * 1_000_000_000 + nanos)
}

/// A CLOCK_BOOTTIME reading in nanoseconds as clock ticks (rounded down, as the kernel rounds a
/// process's start time: a process started after the reading never has fewer ticks).
pub fn ticks_of_boot_ns(ns: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    (u128::from(ns) * u128::from(hz) / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1000 100 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let s = crate::collect::procfs::parse_stat(text).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks(), 10);
        assert_eq!(s.start_ticks, 555);
        assert_eq!(s.exit_code, Some(0));
    }

    #[test]
    fn pruning_drops_clean_exits_first() {
        let g = |pid: i32, ended: &str| GoneProcess {
            pid: Pid(pid),
            ppid: None,
            cmdline: Vec::new(),
            ended: Some(ended.into()),
            ended_at_ms: None,
            last_stack: None,
        };
        let mut gone = vec![
            g(1, "signal 9 (SIGKILL)"),
            g(2, "exit 0"),
            g(3, "exit 1"),
            g(4, "exit 0"),
        ];
        prune_gone(&mut gone, 3);
        assert_eq!(gone.iter().map(|g| g.pid.0).collect::<Vec<_>>(), [1, 3, 4]);
        prune_gone(&mut gone, 1);
        assert_eq!(gone.iter().map(|g| g.pid.0).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn statuses() {
        assert_eq!(RawStatus(3 << 8).describe(), "exit 3");
        assert_eq!(RawStatus(3 << 8).shell_code(), 3);
        assert_eq!(RawStatus(9).describe(), "signal 9 (SIGKILL)");
        assert_eq!(RawStatus(9).shell_code(), 137);
        assert_eq!(
            RawStatus(11 | 0x80).describe(),
            "signal 11 (SIGSEGV), core dumped"
        );
    }
}
