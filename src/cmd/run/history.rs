//! The stack history: while `run` watches, a thread reads every live process's Python stacks
//! every [`PERIOD`] without stopping them (py-spy non-blocking reads, one kept-open reader per
//! process), and keeps only the latest per process. What it is for is what is no longer there:
//! when a process ends, its last stack is kept (`gone[].last_stack`); a thread that vanished
//! from a live process is kept too (`gone_threads`). On each exit the proc connector reports,
//! the other processes are read at once: one inside `Pool.terminate`/`__exit__`,
//! `Process.terminate`/`kill`, `Popen.send_signal`, or at a line calling `os.kill` or right
//! after a `.terminate()`, is recorded as the likely sender of the signal.
//!
//! A process none of whose threads ran since its last read (per-thread `schedstat`) is not
//! read again: its stack cannot have moved, so the stack is only confirmed as of now. An idle
//! hung tree then costs a few `/proc` reads per process and period (docs/performance.md).
//!
//! Bounded: one [`LastStack`] per live process, at most [`MAX_DEAD`] of dead ones and
//! [`MAX_GONE_THREADS`] gone threads, each [`crate::model::past::bound_threads`]-bounded.

use super::tree::now_ms;
use crate::collect::python::Spy;
use crate::model::past::bound_threads;
use crate::model::{GoneThread, LastStack, Pid, PyFrame, PyThread, Sender};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often stacks are read.
pub const PERIOD: Duration = Duration::from_millis(500);
/// Last stacks of dead processes kept at most.
const MAX_DEAD: usize = 256;
/// Gone threads kept at most.
const MAX_GONE_THREADS: usize = 64;

#[derive(Default)]
struct Shared {
    /// Live non-zombie descendants (set by the watch loop after each poll).
    live: Vec<i32>,
    /// The latest stack of each process, live or dead.
    last: HashMap<i32, LastStack>,
    /// Dead pids in the order they ended (to bound `last`).
    dead: VecDeque<i32>,
    gone_threads: VecDeque<GoneThread>,
    stop: bool,
}

/// The running history thread.
pub struct History {
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl History {
    /// Starts the thread; `exits` (from the proc connector) wakes it for a look at each exit.
    pub fn start(exits: Option<Receiver<i32>>) -> Option<History> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || sample(&s2, exits))
            .ok()?;
        Some(History {
            shared,
            thread: Some(thread),
        })
    }

    /// The processes to read from now on.
    pub fn set_live(&self, live: Vec<i32>) {
        if let Ok(mut s) = self.shared.lock() {
            s.live = live;
        }
    }

    /// The last stack seen of `pid`.
    pub fn last(&self, pid: i32) -> Option<LastStack> {
        self.shared.lock().ok()?.last.get(&pid).cloned()
    }

    /// Threads that went away from live processes.
    pub fn gone_threads(&self) -> Vec<GoneThread> {
        self.shared
            .lock()
            .map(|s| s.gone_threads.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.lock() {
            s.stop = true;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(shared: &Mutex<Shared>, exits: Option<Receiver<i32>>) {
    let mut spies: HashMap<i32, Spy> = HashMap::new();
    let mut failed: HashSet<i32> = HashSet::new();
    // What each process had run (per thread) when it was last read.
    let mut ran_at: HashMap<i32, Option<Vec<(i32, u64)>>> = HashMap::new();
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let exited = match &exits {
            Some(rx) => match rx.recv_timeout(wait) {
                Ok(pid) => Some(pid),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    None
                }
            },
            None => {
                std::thread::sleep(wait);
                None
            }
        };
        let live = match shared.lock() {
            Ok(s) if s.stop => return,
            Ok(s) => s.live.clone(),
            Err(_) => return,
        };
        if let Some(dead) = exited {
            spies.remove(&dead);
            let sender = find_sender(&live, dead, &mut spies, &mut failed);
            if let Ok(mut s) = shared.lock() {
                if let Some(sender) = sender {
                    // A process too short-lived to be read still gets its sender.
                    s.last
                        .entry(dead)
                        .or_insert_with(|| LastStack {
                            seen_at_ms: now_ms(),
                            threads: Vec::new(),
                            sender: None,
                            exit_at: None,
                        })
                        .sender = Some(sender);
                }
                s.dead.push_back(dead);
                while s.dead.len() > MAX_DEAD {
                    if let Some(old) = s.dead.pop_front() {
                        s.last.remove(&old);
                    }
                }
            }
            continue;
        }
        next = Instant::now() + PERIOD;
        spies.retain(|p, _| live.contains(p));
        failed.retain(|p| live.contains(p));
        if let Ok(mut s) = shared.lock() {
            // Without the connector nothing marks the dead: keep the latest MAX_DEAD of them.
            if s.last.len() > live.len() + MAX_DEAD {
                let mut old: Vec<(u64, i32)> = s
                    .last
                    .iter()
                    .filter(|(p, _)| !live.contains(p))
                    .map(|(p, l)| (l.seen_at_ms, *p))
                    .collect();
                old.sort_unstable();
                let extra = s.last.len() - live.len() - MAX_DEAD;
                for (_, p) in old.into_iter().take(extra) {
                    s.last.remove(&p);
                }
            }
        }
        ran_at.retain(|p, _| live.contains(p));
        for &pid in &live {
            // A process none of whose threads ran since the last read has the same stack: it
            // is not read again (a hung tree mostly sleeps), only confirmed as of now.
            let ran_now = ran(pid);
            if ran_now.is_some() && ran_now == ran_at.get(&pid).cloned().flatten() {
                let Ok(mut s) = shared.lock() else { return };
                if let Some(l) = s.last.get_mut(&pid) {
                    l.seen_at_ms = now_ms();
                    continue;
                }
            }
            let Some(mut threads) = read(pid, &mut spies, &mut failed) else {
                continue;
            };
            ran_at.insert(pid, ran_now);
            bound_threads(&mut threads);
            let now = now_ms();
            let Ok(mut s) = shared.lock() else { return };
            let s = &mut *s;
            if let Some(old) = s.last.get(&pid).cloned() {
                let gone: Vec<PyThread> = old
                    .threads
                    .iter()
                    .filter(|t| !threads.iter().any(|n| n.thread_id == t.thread_id))
                    .cloned()
                    .collect();
                for t in gone {
                    if s.gone_threads.len() >= MAX_GONE_THREADS {
                        s.gone_threads.pop_front();
                    }
                    let seen_at_ms = old.seen_at_ms;
                    s.gone_threads.push_back(GoneThread {
                        pid: Pid(pid),
                        gone_at_ms: now,
                        last: LastStack {
                            seen_at_ms,
                            threads: vec![t],
                            sender: None,
                            exit_at: None,
                        },
                    });
                }
            }
            s.last.insert(
                pid,
                LastStack {
                    seen_at_ms: now,
                    threads,
                    sender: None,
                    exit_at: None,
                },
            );
        }
    }
}

/// Each thread of `pid` with the CPU time it has run (`schedstat`, in ns), by TID; None when
/// the kernel does not tell (then the process is read every time).
fn ran(pid: i32) -> Option<Vec<(i32, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        let sched = crate::collect::read_sched(&format!("/proc/{pid}/task/{tid}"))?;
        out.push((tid, sched.run_ns));
    }
    out.sort_unstable();
    Some(out)
}

/// Reads `pid` with its kept-open reader (opening one the first time).
fn read(
    pid: i32,
    spies: &mut HashMap<i32, Spy>,
    failed: &mut HashSet<i32>,
) -> Option<Vec<PyThread>> {
    if failed.contains(&pid) {
        return None;
    }
    if let std::collections::hash_map::Entry::Vacant(e) = spies.entry(pid) {
        match Spy::open(pid) {
            Some(s) => {
                e.insert(s);
            }
            None => {
                failed.insert(pid);
                return None;
            }
        }
    }
    let spy = spies.get_mut(&pid)?;
    // A read that tears is retried once; a hung target does not move.
    spy.read().or_else(|| spy.read())
}

/// Python calls that send a signal to another process, by (file suffix, function), with the
/// name a report gives them. The outermost one on a stack wins (`Pool.__exit__` over the
/// `Process.terminate` it calls).
const SENDING: &[(&str, &str, &str)] = &[
    (
        "multiprocessing/popen_fork.py",
        "_send_signal",
        "Process.terminate/kill",
    ),
    (
        "multiprocessing/process.py",
        "terminate",
        "Process.terminate",
    ),
    ("multiprocessing/process.py", "kill", "Process.kill"),
    (
        "multiprocessing/pool.py",
        "_terminate_pool",
        "Pool.terminate",
    ),
    ("multiprocessing/pool.py", "terminate", "Pool.terminate"),
    (
        "multiprocessing/pool.py",
        "__exit__",
        "Pool.__exit__ (terminate)",
    ),
    ("subprocess.py", "send_signal", "Popen.send_signal"),
    ("subprocess.py", "terminate", "Popen.terminate"),
    ("subprocess.py", "kill", "Popen.kill"),
];

/// The signal-sending call a thread is in, by its frames, and its user frame.
fn sending_call(t: &PyThread) -> Option<(String, Option<PyFrame>)> {
    let call = t.own_frames().iter().rev().find_map(|f| {
        SENDING
            .iter()
            .find(|(file, func, _)| f.is(file, func))
            .map(|s| s.2)
    });
    if let Some(call) = call {
        return Some((call.to_string(), t.user_frame().cloned()));
    }
    // `os.kill(...)` is C: the user frame's own line says it. Right after `p.terminate()`,
    // the caller is usually in `p.join()` on the next line.
    let u = t.user_frame()?;
    let text = std::fs::read_to_string(&u.file).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(usize::try_from(u.line).ok()?.checked_sub(1)?)?;
    let kills = |l: &str| {
        ["os.kill(", "os.killpg(", ".send_signal("]
            .iter()
            .any(|k| l.contains(k))
    };
    if kills(here) {
        return Some(("os.kill".into(), Some(u.clone())));
    }
    let joining = t.has_frame("multiprocessing/process.py", "join");
    let before = (1..=3)
        .filter_map(|back| {
            let i = usize::try_from(u.line).ok()?.checked_sub(1 + back)?;
            lines.get(i).map(|l| (i, *l))
        })
        .find(|(_, l)| !l.trim().is_empty())?;
    let ends = [".terminate()", ".kill()"].iter().find(|k| {
        before
            .1
            .split('#')
            .next()
            .unwrap_or("")
            .trim_end()
            .ends_with(*k)
    });
    match ends {
        Some(k) if joining || kills(before.1) => Some((
            format!(
                "Process.join right after {}",
                k.trim_start_matches('.').trim_end_matches("()")
            ),
            Some(PyFrame {
                line: before.0 as i32 + 1,
                ..u.clone()
            }),
        )),
        _ => None,
    }
}

/// A look at every other live process the moment `dead` was reported to exit.
fn find_sender(
    live: &[i32],
    dead: i32,
    spies: &mut HashMap<i32, Spy>,
    failed: &mut HashSet<i32>,
) -> Option<Sender> {
    for &pid in live.iter().filter(|&&p| p != dead) {
        let Some(threads) = read(pid, spies, failed) else {
            continue;
        };
        for t in &threads {
            if let Some((call, user_line)) = sending_call(t) {
                return Some(Sender {
                    pid: Pid(pid),
                    call,
                    user_line,
                    method: "its Python stack the moment the proc connector reported the exit"
                        .into(),
                });
            }
        }
    }
    None
}
