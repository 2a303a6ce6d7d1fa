//! Progress: the one rule for "did this thread move between looks?", and which threads are
//! periodic waiters.
//!
//! Movement is judged by what the program achieved, never by a changed register: the thread
//! exited; it used CPU beyond one tick of slack when mphang stopped threads (the kernel may
//! charge the restart of an interrupted call); it ran between two later looks; its Python line
//! or frame changed; it left its system call for another one (`restart_syscall` and a write
//! resumed with the rest of its message in a new buffer, both caused by mphang's own ptrace
//! stop, are the same call); it was woken while blocked (its schedule count grew between two
//! later looks, which are taken after native sampling and so stop nothing); or bytes left or
//! entered the pipe it waits on.
//!
//! A thread in a timed wait (sleep, timed lock/Event/Condition wait, poll/select/epoll with a
//! timeout) at the same Python line in every look is *periodic*: confirmed when it was seen to
//! wake and come back to the same wait, or when its stack is a known library timer or monitor
//! loop; unconfirmed otherwise (a long sleep of user code, which may still go on to provide).

use crate::model::{
    Inode, PipeSnap, ProcessSnap, PyFrame, PyThread, Snapshot, SyscallState, ThreadLook, ThreadSnap,
};
use foldhash::{HashMap, HashSet};

use super::types::BlockedOn;

/// What the looks say about one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Motion {
    /// Seen doing work between looks; why, in words.
    Moved(String),
    /// In the same timed wait at the same Python line in every look.
    Periodic(Periodic),
    /// Nothing it achieved was seen.
    Still,
}

/// A thread in the same timed wait at the same line in every look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periodic {
    /// Why it is known to loop (seen to wake and come back, or a known library loop); None
    /// when it was not seen to wake yet.
    pub confirmed: Option<String>,
    /// At most this many milliseconds were left in its wait at the last look, when known.
    pub left_ms: Option<u64>,
    /// `heartbeat, sleeping at app.py:40`.
    pub what: String,
}

/// Pipes whose fill changed between any two looks.
pub fn moved_pipes(snap: &Snapshot) -> HashSet<Inode> {
    snap.pipes
        .iter()
        .filter(|p| moved_fill(p))
        .map(|p| p.inode)
        .collect()
}

fn moved_fill(p: &PipeSnap) -> bool {
    let mut seen = std::iter::once(p.buffered).chain(p.later_buffered.iter().copied());
    let first = seen.next().flatten();
    seen.any(|b| b.is_some() && b != first)
}

/// Threads and processes that appeared during the later looks, per process that started them.
pub fn appeared(snap: &Snapshot) -> HashMap<crate::model::Pid, String> {
    snap.processes
        .iter()
        .filter_map(|p| {
            let a = p.appeared.first()?;
            let what = if a.pid == p.pid {
                format!("started thread {}", a.tid)
            } else {
                format!("started process {}", a.pid)
            };
            Some((p.pid, format!("{what} within {} ms", a.after_ms)))
        })
        .collect()
}

/// A known library loop that wakes periodically and provides nothing by waking: a
/// `threading.Timer` (pytest-timeout's thread method), tqdm's monitor, a Manager's
/// `serve_forever`, a Pool's worker handler. Only the process's own frames count (frames below
/// multiprocessing's `_bootstrap` were inherited at fork).
pub fn known_loop(py: &PyThread) -> Option<&'static str> {
    let own = py.own_frames();
    let is = |f: &PyFrame, file: &str, func: &str| f.is(file, func);
    for (i, f) in own.iter().enumerate() {
        if is(f, "multiprocessing/managers.py", "serve_forever") {
            return Some("a Manager's serve_forever loop");
        }
        if is(f, "multiprocessing/pool.py", "_handle_workers") {
            return Some("a Pool's worker handler");
        }
        if is(f, "tqdm/_monitor.py", "run") {
            return Some("tqdm's monitor (TMonitor)");
        }
        // Timer.run waits on its `finished` Event directly: the frame inside run is
        // threading's Event.wait (3.11+ also names it `Timer.run`).
        let timer = f.function == "Timer.run"
            || (f.is("threading.py", "run")
                && i > 0
                && own[i - 1].is("threading.py", "wait")
                && !own[..i - 1].iter().any(|g| g.is_user_code()));
        if timer {
            return Some("a threading.Timer (as pytest-timeout's timer)");
        }
    }
    None
}

/// `heartbeat, sleeping at app.py:40`: a thread's name and where it waits.
pub fn describe_wait(t: &ThreadSnap, b: &BlockedOn) -> String {
    if let Some(k) = t.py.as_ref().and_then(known_loop) {
        return format!("{}, {k}", t.display_name());
    }
    let verb = match b {
        BlockedOn::Timed { what } if what.contains("sleep") => "sleeping",
        _ => "waiting",
    };
    let at =
        t.py.as_ref()
            .and_then(|py| py.user_frame().or_else(|| py.frames.first()))
            .map(|f| format!(" at {}", f.short_location()))
            .unwrap_or_default();
    format!("{}, {verb}{at}", t.display_name())
}

/// The syscall of the first look as a later look records it.
fn first_call(t: &ThreadSnap) -> Option<(i64, u64, u64, u64)> {
    match &t.syscall {
        SyscallState::Blocked(s) => Some((s.nr, s.args[0], s.args[1], s.args[2])),
        _ => None,
    }
}

/// Calls whose first argument names what the thread waits on (an fd, a child, a futex word).
fn keyed_by_first_arg(nr: i64) -> bool {
    matches!(
        nr,
        0 | 1 | 17 | 19 | 20 | 43 | 44 | 45 | 46 | 47 | 61 | 202 | 247 | 288
    )
}

/// The same blocking call: the same number (`restart_syscall`, 219, continues whatever was
/// interrupted) on the same fd, child or futex word. Buffer and count may differ: a write cut
/// short by a stop goes on with the rest of the message, for messages up to 16 KiB in a new
/// bytes object.
fn same_call(a: Option<(i64, u64, u64, u64)>, b: Option<(i64, u64, u64, u64)>) -> bool {
    match (a, b) {
        (Some((n1, a1, ..)), Some((n2, a2, ..))) => {
            n1 == 219 || n2 == 219 || (n1 == n2 && (!keyed_by_first_arg(n1) || a1 == a2))
        }
        (None, None) => true,
        _ => false,
    }
}

/// Judges one thread (of process `p`) from its looks. `b` is what it waits on in the first look;
/// `stopped` says mphang stopped threads for native stacks during the first look.
pub fn judge(
    p: &ProcessSnap,
    t: &ThreadSnap,
    b: &BlockedOn,
    stopped: bool,
    pipes: &HashSet<Inode>,
) -> Motion {
    if t.state == 'Z' || t.state == 'X' || p.state == 'Z' {
        return Motion::Still;
    }
    if let Some(l) = t.later.iter().find(|l| !l.alive) {
        return Motion::Moved(format!("exited within {} ms", l.after_ms));
    }
    let top =
        t.py.as_ref()
            .and_then(|py| py.frames.first())
            .map(|f| f.top_key());
    if let Some(why) = moved_line(top.as_deref(), &t.later) {
        return Motion::Moved(why);
    }
    if matches!(b, BlockedOn::Timed { .. }) {
        return timed(t, b);
    }
    if matches!(b, BlockedOn::Running) {
        if let Some(per) = caught_between_waits(t, b, top.as_deref()) {
            return Motion::Periodic(per);
        }
    }
    if matches!(b, BlockedOn::Running | BlockedOn::Gil) {
        // Running is progress by itself; a GIL waiter wakes every 5 ms and accrues CPU ticks, so
        // only a new Python line (above) says it ran.
        return Motion::Still;
    }
    if let Some(why) = blocked_moved(t, stopped) {
        return Motion::Moved(why);
    }
    if let Some(ino) = pipes_of(b).into_iter().find(|i| pipes.contains(i)) {
        return Motion::Moved(format!("pipe:[{ino}] changed fill between looks"));
    }
    Motion::Still
}

/// A thread running at the first look and, in every later look, in a timed wait at the same
/// Python line: a loop caught between two of its waits (a ticker's `Event.wait(0.5)` that had
/// just returned), as `timed` counts a running look between two waits as a wake. It is a
/// periodic thread, and a confirmed one (it woke and came back), not a running seed that could
/// provide anything: a busy machine catches such threads running often.
fn caught_between_waits(t: &ThreadSnap, b: &BlockedOn, top: Option<&str>) -> Option<Periodic> {
    let top = top?;
    let last = t.later.last()?;
    let every = t
        .later
        .iter()
        .all(|l| l.syscall.is_some() && l.timed.is_some() && l.py_top.as_deref() == Some(top));
    if !every {
        return None;
    }
    Some(Periodic {
        confirmed: Some(format!(
            "caught running at {top} and then back in its timed wait at the same line"
        )),
        left_ms: last.timed.and_then(|w| w.left_ms),
        what: describe_wait(t, b),
    })
}

/// A changed innermost Python frame between the first look and a later one, or between later
/// looks.
fn moved_line(first: Option<&str>, later: &[ThreadLook]) -> Option<String> {
    let mut prev = first;
    for l in later {
        if let (Some(a), Some(b)) = (prev, l.py_top.as_deref()) {
            if a != b {
                return Some(format!("moved from {a} to {b} within {} ms", l.after_ms));
            }
        }
        if l.py_top.is_some() {
            prev = l.py_top.as_deref();
        }
    }
    None
}

/// Evidence that a thread blocked without a timeout did something between looks.
fn blocked_moved(t: &ThreadSnap, stopped: bool) -> Option<String> {
    let slack = u64::from(stopped);
    let mut prev_call = first_call(t);
    let mut prev_cpu = t.cpu_ticks;
    let mut prev_sw: Option<u64> = None;
    for (i, l) in t.later.iter().enumerate() {
        let allowed = if i == 0 { slack } else { 0 };
        if l.cpu_ticks > prev_cpu + allowed || l.cpu_ticks < prev_cpu {
            return Some(format!(
                "used {} CPU ticks within {} ms",
                l.cpu_ticks.saturating_sub(t.cpu_ticks),
                l.after_ms
            ));
        }
        if l.state == 'R' {
            return Some(format!("was running within {} ms", l.after_ms));
        }
        if !same_call(prev_call, l.syscall) || l.timed.is_some() {
            return Some(format!("changed system call within {} ms", l.after_ms));
        }
        // Schedule counts are compared between later looks only: the first look's native
        // sampling itself wakes every thread once.
        if let (Some(a), Some(b)) = (prev_sw, l.switches) {
            if b > a {
                return Some(format!(
                    "was woken {} time(s) while blocked, within {} ms",
                    b - a,
                    l.after_ms
                ));
            }
        }
        prev_call = l.syscall.or(prev_call);
        prev_cpu = l.cpu_ticks;
        prev_sw = l.switches.or(prev_sw);
    }
    None
}

/// A timed wait: periodic (same timed wait at the same line in every look) or moved.
fn timed(t: &ThreadSnap, b: &BlockedOn) -> Motion {
    let mut woke = 0u64;
    let mut prev_sw: Option<u64> = None;
    let mut left_ms = None;
    for (i, l) in t.later.iter().enumerate() {
        match (l.syscall, l.timed) {
            // Caught between two waits of its loop: a wake, as it came back to the same wait
            // (the line check above holds for every look that read the stack).
            (None, _) if i + 1 < t.later.len() => woke += 1,
            // Running at the last look: back to the same wait, or off to do something else?
            // Not known yet: only an earlier wake makes it periodic; else one more look
            // settles it (left: 0 ms).
            (None, _) if l.py_top.is_some() => left_ms = Some(0),
            (None, _) => return Motion::Moved(format!("was running within {} ms", l.after_ms)),
            // A look recorded before looks said whether a call is timed: the same call is.
            (Some(c), None) if l.switches.is_none() && same_call(first_call(t), Some(c)) => {}
            (Some(_), None) => {
                return Motion::Moved(format!("left its timed wait within {} ms", l.after_ms))
            }
            (Some(_), Some(w)) => left_ms = w.left_ms,
        }
        // Woke and came back: the count grew and this look is in the same timed wait again.
        if let (Some(a), Some(b), Some(_)) = (prev_sw, l.switches, l.timed) {
            woke += b.saturating_sub(a);
        }
        prev_sw = l.switches.or(prev_sw);
    }
    let known = t.py.as_ref().and_then(known_loop);
    let confirmed = if woke > 0 {
        Some(format!(
            "woke {woke} time(s) between looks and went back to the same wait"
        ))
    } else {
        known.map(|k| format!("{k}: a known periodic loop"))
    };
    Motion::Periodic(Periodic {
        confirmed,
        left_ms,
        what: describe_wait(t, b),
    })
}

/// The pipes a wait is on (a poll set may have several).
pub fn pipes_of(b: &BlockedOn) -> Vec<Inode> {
    match b {
        BlockedOn::PipeRead { inode } | BlockedOn::PipeWrite { inode, .. } => vec![*inode],
        BlockedOn::Any { of } => of.iter().flat_map(pipes_of).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pid, Role, Syscall, Tid, TimedWait};

    fn thread(nr: i64, a0: u64) -> ThreadSnap {
        ThreadSnap {
            tid: Tid(10),
            comm: "python3".into(),
            state: 'S',
            wchan: None,
            syscall: SyscallState::Blocked(Syscall {
                nr,
                name: crate::model::syscall_name(nr),
                args: [a0, 0x1000, 4096, 0, 0, 0],
                sp: 0,
                pc: 0,
                decoded: crate::model::Decoded::Other,
            }),
            cpu_ticks: 5,
            py: None,
            native: None,
            native_as: None,
            later: Vec::new(),
            sched: None,
        }
    }

    fn look(after_ms: u64, call: Option<(i64, u64, u64, u64)>, sw: u64) -> ThreadLook {
        ThreadLook {
            after_ms,
            alive: true,
            state: 'S',
            cpu_ticks: 5,
            syscall: call,
            py_top: None,
            switches: Some(sw),
            sched: None,
            timed: None,
            owns_gil: false,
        }
    }

    fn process() -> ProcessSnap {
        ProcessSnap {
            pid: Pid(10),
            ppid: Pid(1),
            ns_pid: None,
            comm: "python3".into(),
            cmdline: Vec::new(),
            exe: None,
            uid: None,
            state: 'S',
            start_ticks: 0,
            cpu_ticks: 0,
            num_threads: 1,
            nofile_limit: None,
            fd_count: 0,
            python_version: None,
            role: Role::Main,
            threads: Vec::new(),
            fds: Vec::new(),
            sem_maps: Vec::new(),
            appeared: Vec::new(),
            status_fds: Vec::new(),
            fds_as: None,
            net_ns: None,
            rank: None,
        }
    }

    const WRITE: BlockedOn = BlockedOn::PipeWrite {
        inode: Inode(7),
        pending: 4096,
    };

    #[test]
    fn a_write_resumed_in_a_new_buffer_is_not_progress() {
        let mut t = thread(1, 4);
        // mphang's stop cut the write short; Python wrote the rest from a new bytes object.
        t.later = vec![
            look(500, Some((1, 4, 0x7f00_0000, 1904)), 3),
            look(700, Some((1, 4, 0x7f00_0000, 1904)), 3),
        ];
        let m = judge(&process(), &t, &WRITE, true, &HashSet::default());
        assert_eq!(m, Motion::Still);
    }

    #[test]
    fn a_restarted_call_and_one_tick_of_our_own_stop_are_not_progress() {
        let mut t = thread(7, 0x1234);
        t.later = vec![look(500, Some((219, 0x1234, 3, 0)), 1)];
        t.later[0].cpu_ticks = 6;
        assert_eq!(
            judge(&process(), &t, &WRITE, true, &HashSet::default()),
            Motion::Still
        );
        t.later[0].cpu_ticks = 7;
        assert!(matches!(
            judge(&process(), &t, &WRITE, true, &HashSet::default()),
            Motion::Moved(_)
        ));
    }

    #[test]
    fn woken_between_later_looks_or_another_fd_is_progress() {
        let mut t = thread(0, 3);
        t.later = vec![
            look(500, Some((0, 3, 0, 4)), 3),
            look(700, Some((0, 3, 0, 4)), 4),
        ];
        let read = BlockedOn::PipeRead { inode: Inode(7) };
        assert!(matches!(
            judge(&process(), &t, &read, true, &HashSet::default()),
            Motion::Moved(w) if w.contains("woken")
        ));
        // The first look's wake (our own stop) is not compared.
        let mut t = thread(0, 3);
        t.later = vec![look(500, Some((0, 3, 0, 4)), 9)];
        assert_eq!(
            judge(&process(), &t, &read, true, &HashSet::default()),
            Motion::Still
        );
        let mut t = thread(0, 3);
        t.later = vec![look(500, Some((0, 5, 0, 4)), 3)];
        assert!(matches!(
            judge(&process(), &t, &read, true, &HashSet::default()),
            Motion::Moved(_)
        ));
    }

    #[test]
    fn fill_change_is_progress() {
        let t = thread(1, 4);
        let pipes = HashSet::from_iter([Inode(7)]);
        assert!(matches!(
            judge(&process(), &t, &WRITE, false, &pipes),
            Motion::Moved(_)
        ));
    }

    #[test]
    fn a_timed_wait_seen_to_wake_is_periodic_else_unconfirmed() {
        let sleep = BlockedOn::Timed {
            what: "sleep".into(),
        };
        let mut t = thread(230, 1);
        let timed = Some(TimedWait { left_ms: Some(400) });
        t.later = vec![
            look(500, Some((230, 1, 1, 0)), 7),
            look(900, Some((230, 1, 1, 0)), 7),
        ];
        for l in &mut t.later {
            l.timed = timed;
        }
        match judge(&process(), &t, &sleep, true, &HashSet::default()) {
            Motion::Periodic(p) => {
                assert!(p.confirmed.is_none());
                assert_eq!(p.left_ms, Some(400));
            }
            m => panic!("{m:?}"),
        }
        t.later[1].switches = Some(8);
        match judge(&process(), &t, &sleep, true, &HashSet::default()) {
            Motion::Periodic(p) => assert!(p.confirmed.is_some()),
            m => panic!("{m:?}"),
        }
        // Running at the last look (count grown): not yet known to come back.
        let mut u = t.clone();
        u.later[1].switches = Some(8);
        u.later[1].syscall = None;
        u.later[1].timed = None;
        u.later[1].state = 'R';
        u.later[1].py_top = Some("app.py:40 heartbeat".into());
        match judge(&process(), &u, &sleep, true, &HashSet::default()) {
            Motion::Periodic(p) => {
                assert!(p.confirmed.is_none());
                assert_eq!(p.left_ms, Some(0));
            }
            m => panic!("{m:?}"),
        }
        // Leaving the timed wait for an untimed one is movement.
        t.later[1].timed = None;
        assert!(matches!(
            judge(&process(), &t, &sleep, true, &HashSet::default()),
            Motion::Moved(_)
        ));
    }
}
