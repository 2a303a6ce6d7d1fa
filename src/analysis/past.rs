//! The past, linked to findings: a traceback the tree printed, or the last stack of a process
//! that died, often names the line to fix when no live stack does (a consumer that crashed, a
//! worker killed mid-task or that called `sys.exit()` in one, an exception class that cannot
//! be unpickled). Pure: reads
//! `snapshot.tracebacks`, `snapshot.gone[].last_stack` and `snapshot.gone_threads` (written by
//! `run`) and rewrites the culprit of the findings they explain, quoting the exception.

use super::types::{CodeLine, Finding};
use super::PatternId;
use crate::model::{GoneProcess, LastStack, Pid, PyFrame, Snapshot, Tid, Traceback, TracebackKind};

/// How close (ms) a traceback and the exit of the process that printed it are: the traceback
/// is printed just before the process ends (`exit 1`).
const PRINTED_BEFORE_EXIT_MS: u64 = 3000;

/// The process that printed each traceback, when one can be told, with why.
pub fn attribute(snap: &Snapshot) -> Vec<Option<(Pid, String)>> {
    snap.tracebacks
        .iter()
        .map(|t| {
            if let Some(p) = t.pid {
                return Some((p, t.attributed.clone().unwrap_or_default()));
            }
            match t.kind {
                TracebackKind::Process | TracebackKind::Uncaught => {
                    died_after(snap, t).or_else(|| only_zombie(snap, t))
                }
                TracebackKind::Thread => thread_owner(snap, t),
                _ => None,
            }
        })
        .collect()
}

/// The process that exited with `exit 1` soonest after the traceback was printed.
fn died_after(snap: &Snapshot, t: &Traceback) -> Option<(Pid, String)> {
    snap.gone
        .iter()
        .filter(|g| g.ended.as_deref() == Some("exit 1"))
        .filter_map(|g| {
            let end = g.ended_at_ms?;
            let lag = end.checked_sub(t.at_ms.saturating_sub(100))?;
            (lag <= PRINTED_BEFORE_EXIT_MS).then_some((lag, g))
        })
        .min_by_key(|(lag, _)| *lag)
        .map(|(_, g)| {
            let lag = g.ended_at_ms.unwrap_or(0).saturating_sub(t.at_ms);
            (
                g.pid,
                format!(
                    "{} ended ({}) {lag} ms after it was printed",
                    g.pid,
                    g.ended.as_deref().unwrap_or("?")
                ),
            )
        })
}

/// The only zombie of the tree, for a `Process NAME:` traceback when no recorded exit fits
/// (a zombie's end time is not known).
fn only_zombie(snap: &Snapshot, t: &Traceback) -> Option<(Pid, String)> {
    if t.kind != TracebackKind::Process {
        return None;
    }
    let mut z = snap.processes.iter().filter(|p| p.state == 'Z');
    match (z.next(), z.next()) {
        (Some(p), None) => Some((
            p.pid,
            format!(
                "{} is the only process that exited (a zombie, not yet joined)",
                p.pid
            ),
        )),
        _ => None,
    }
}

/// The process whose thread of that name went away.
fn thread_owner(snap: &Snapshot, t: &Traceback) -> Option<(Pid, String)> {
    let name = t.thread_name.as_deref()?;
    snap.gone_threads
        .iter()
        .find(|g| {
            g.last
                .threads
                .iter()
                .any(|th| th.name.as_deref() == Some(name))
        })
        .map(|g| (g.pid, format!("its thread {name} went away")))
}

fn code_line(pid: Pid, f: &PyFrame) -> CodeLine {
    CodeLine {
        pid,
        tid: Tid(pid.0),
        file: f.file.clone(),
        line: f.line,
        function: f.function.clone(),
    }
}

/// `12 ms`, `1.5 s`.
fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Gives findings the culprit their past names, and the evidence for it.
pub fn link(snap: &Snapshot, findings: &mut [Finding]) {
    let owners = attribute(snap);
    let gone_pids: Vec<Pid> = snap
        .gone
        .iter()
        .map(|g| g.pid)
        .chain(
            snap.processes
                .iter()
                .filter(|p| p.state == 'Z')
                .map(|p| p.pid),
        )
        .collect();
    for f in findings.iter_mut() {
        let tb = match f.pattern {
            PatternId::PoolResultHandlerDied => {
                snap.tracebacks.iter().enumerate().rfind(|(_, t)| {
                    t.kind == TracebackKind::Thread
                        && (t
                            .thread_name
                            .as_deref()
                            .is_some_and(|n| n.contains("_handle_results"))
                            || t.frames.iter().any(|fr| fr.named("_handle_results")))
                })
            }
            PatternId::PeerExited
            | PatternId::NoLiveWriter
            | PatternId::PoolWorkerDied
            | PatternId::OrphanedLock
            | PatternId::Stuck
            | PatternId::Deadlock => {
                // A traceback of a process that died, else (no_live_writer: the producer is
                // alive, its thread died) one of a process of the finding.
                let of_gone = snap.tracebacks.iter().enumerate().rfind(|(i, t)| {
                    t.kind != TracebackKind::Ignored
                        && owners[*i]
                            .as_ref()
                            .is_some_and(|(p, _)| gone_pids.contains(p))
                });
                of_gone.or_else(|| {
                    snap.tracebacks.iter().enumerate().rfind(|(i, t)| {
                        matches!(t.kind, TracebackKind::Thread | TracebackKind::Process)
                            && owners[*i].as_ref().is_none_or(|(p, _)| f.pids.contains(p))
                            && matches!(f.pattern, PatternId::NoLiveWriter | PatternId::PeerExited)
                    })
                })
            }
            _ => None,
        };
        if let Some((i, t)) = tb {
            let owner = owners[i].clone();
            let who = match (&owner, &t.process_name, &t.thread_name) {
                (Some((p, _)), Some(n), _) => format!("{p} ({n})"),
                (Some((p, _)), None, Some(n)) => format!("{p} (thread {n})"),
                (Some((p, _)), None, None) => p.to_string(),
                (None, Some(n), _) => format!("process {n}"),
                (None, None, Some(n)) => format!("thread {n}"),
                (None, None, None) => "a process".into(),
            };
            let pid = owner.as_ref().map(|o| o.0).unwrap_or(Pid(0));
            let mut line = format!("{who} printed a traceback: {}", t.exception);
            if let Some(u) = t.user_frame() {
                let place = if t.fix_at.is_some() {
                    format!(
                        "the exception class's {}() at {}",
                        u.function,
                        u.short_location()
                    )
                } else {
                    format!("{} in {}()", u.short_location(), u.function)
                };
                line.push_str(&format!(" (from {place})"));
                set_culprit(f, code_line(pid, u));
            }
            if let Some((_, why)) = &owner {
                line.push_str(&format!("; {why}"));
            }
            f.evidence.insert(0, line);
            continue;
        }
        // No traceback: the last stack of a process of the finding's story that died.
        if matches!(
            f.pattern,
            PatternId::PoolWorkerDied
                | PatternId::PeerExited
                | PatternId::OrphanedLock
                | PatternId::NoLiveWriter
                | PatternId::Stuck
        ) {
            if let Some((g, line)) = last_seen(snap) {
                f.evidence.insert(0, line);
                let last = g.last_stack.as_ref();
                let sender = last.and_then(|l| l.sender.as_ref());
                // Where it ended itself, else who signalled it, else where it was last seen.
                let at = last
                    .and_then(|l| l.exit_at.as_ref().map(|e| code_line(g.pid, e)))
                    .or_else(|| {
                        sender.and_then(|s| s.user_line.as_ref().map(|u| code_line(s.pid, u)))
                    })
                    .or_else(|| {
                        let (_, u) = g.last_stack.as_ref()?.user_frame()?;
                        Some(code_line(g.pid, u))
                    });
                if let Some(c) = at {
                    set_culprit(f, c);
                }
            }
        }
    }
}

/// Replaces the culprit, keeping the old one among the user lines.
fn set_culprit(f: &mut Finding, c: CodeLine) {
    if let Some(old) = f.culprit.take() {
        if !f.user_lines.contains(&old) {
            f.user_lines.push(old);
        }
    }
    if !f.user_lines.contains(&c) {
        f.user_lines.insert(0, c.clone());
    }
    f.culprit = Some(c);
}

/// True when a thread of the stack was inside a Pool task: a user frame above (called from)
/// multiprocessing's `pool.py` `worker()`. A worker retired by `maxtasksperchild` exits 0 from
/// `worker()`'s loop, not from inside a task.
fn in_pool_task(l: &LastStack) -> bool {
    l.threads.iter().any(|t| {
        let own = t.own_frames();
        own.iter()
            .position(|f| f.is("multiprocessing/pool.py", "worker"))
            .is_some_and(|w| own[..w].iter().any(|f| f.is_user_code()))
    })
}

/// How strongly a gone process's end explains a hang: 2 for an abnormal end (a signal, a
/// nonzero exit) or an `exit 0` from inside a Pool task at a known exit call, 1 for an `exit 0`
/// from inside a Pool task whose exit call is not known, `None` for any other `exit 0` (a
/// normal end, e.g. a worker retired by `maxtasksperchild`).
fn abnormal(g: &GoneProcess) -> Option<u8> {
    if g.ended.as_deref() != Some("exit 0") {
        return Some(2);
    }
    let l = g.last_stack.as_ref()?;
    in_pool_task(l).then_some(if l.exit_at.is_some() { 2 } else { 1 })
}

/// The process that ended abnormally most recently (not `exit 0`, or `exit 0` from inside a
/// Pool task: [`abnormal`]) and was seen alive with a user line or has a known sender, and the
/// sentence saying so: "4242 was last seen at worker.py:20 in task(), 80 ms before it ended
/// (signal 9 (SIGKILL)); likely signalled by 4240 in Pool.terminate at app.py:9 in main() (how
/// it was found)", or for a process that ended itself: "...(exit 0) from inside a Pool task,
/// not from the pool's loop as a worker retired by maxtasksperchild does; it most likely ended
/// itself at worker.py:21 in task(), the first exit call after that line in the source (...)".
pub fn last_seen(snap: &Snapshot) -> Option<(&GoneProcess, String)> {
    last_seen_of(&snap.gone)
}

fn last_seen_of(gone: &[GoneProcess]) -> Option<(&GoneProcess, String)> {
    let g = gone
        .iter()
        .filter(|g| {
            g.last_stack.as_ref().is_some_and(|l| {
                l.user_frame().is_some() || l.sender.as_ref().is_some_and(|s| s.user_line.is_some())
            })
        })
        .filter_map(|g| Some((abnormal(g)?, g)))
        .max_by_key(|(rank, g)| (*rank, g.ended_at_ms))?
        .1;
    let last = g.last_stack.as_ref()?;
    let ended = g.ended.as_deref().unwrap_or("status unknown");
    let mut line = match last.user_frame() {
        Some((_, u)) => {
            let before = g
                .ended_at_ms
                .map(|e| {
                    format!(
                        ", {} before it ended",
                        ago(e.saturating_sub(last.seen_at_ms))
                    )
                })
                .unwrap_or_default();
            format!(
                "{} was last seen at {} in {}(){before} ({ended})",
                g.pid,
                u.short_location(),
                u.function,
            )
        }
        None => format!("{} ended ({ended}) before a stack of it was read", g.pid),
    };
    if g.ended.as_deref() == Some("exit 0") {
        line.push_str(
            " from inside a Pool task, not from the pool's loop as a worker retired by \
             maxtasksperchild does",
        );
    }
    if let Some(e) = &last.exit_at {
        line.push_str(&format!(
            "; it most likely ended itself at {} in {}(), the first exit call after that line \
             in the source (no look caught the call)",
            e.short_location(),
            e.function
        ));
    }
    if let Some(s) = &last.sender {
        line.push_str(&format!("; likely signalled by {} in {}", s.pid, s.call));
        if let Some(u) = &s.user_line {
            line.push_str(&format!(" at {} in {}()", u.short_location(), u.function));
        }
        line.push_str(&format!(" ({})", s.method));
    }
    Some((g, line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PyThread;

    fn frame(function: &str, file: &str, line: i32) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: file.into(),
            line,
            entry: false,
        }
    }

    /// A Pool worker's last stack: `top` (innermost first) above `worker()` and `_bootstrap`.
    fn worker(pid: i32, ended: &str, at: u64, top: Vec<PyFrame>) -> GoneProcess {
        let lib = "/usr/lib/python3.12/multiprocessing";
        let mut frames = top;
        frames.push(frame("worker", &format!("{lib}/pool.py"), 125));
        frames.push(frame("BaseProcess.run", &format!("{lib}/process.py"), 108));
        frames.push(frame(
            "BaseProcess._bootstrap",
            &format!("{lib}/process.py"),
            314,
        ));
        frames.push(frame("main", "/app/job.py", 30));
        GoneProcess {
            pid: Pid(pid),
            ppid: Some(Pid(1)),
            cmdline: vec![],
            ended: Some(ended.into()),
            ended_at_ms: Some(at),
            last_stack: Some(LastStack {
                seen_at_ms: at - 300,
                threads: vec![PyThread {
                    thread_id: 1,
                    name: Some("MainThread".into()),
                    owns_gil: false,
                    active: false,
                    frames,
                }],
                sender: None,
                exit_at: None,
            }),
        }
    }

    fn in_task() -> Vec<PyFrame> {
        vec![
            frame("Event.wait", "/usr/lib/python3.12/threading.py", 655),
            frame("task", "/app/job.py", 12),
            frame("mapstar", "/usr/lib/python3.12/multiprocessing/pool.py", 48),
        ]
    }

    fn in_loop() -> Vec<PyFrame> {
        vec![frame(
            "Queue.get",
            "/usr/lib/python3.12/multiprocessing/queues.py",
            100,
        )]
    }

    #[test]
    fn exit_0_inside_a_task_is_seen_and_a_retired_worker_is_not() {
        // Retired by maxtasksperchild: exit 0 from the pool's loop (no user frame: skipped).
        let retired = worker(10, "exit 0", 1_000, in_loop());
        assert!(last_seen_of(std::slice::from_ref(&retired)).is_none());
        // sys.exit(0) in a task: exit 0, last seen inside the task.
        let mut exited = worker(11, "exit 0", 2_000, in_task());
        let gone = [retired.clone(), exited.clone()];
        let (g, line) = last_seen_of(&gone).expect("seen");
        assert_eq!(g.pid, Pid(11));
        assert!(line.contains("job.py:12 in task()"), "{line}");
        assert!(line.contains("(exit 0) from inside a Pool task"), "{line}");
        // With the exit call found in the source, it is named, and it outranks an older
        // signal death.
        let killed = worker(12, "signal 9 (SIGKILL)", 1_500, in_task());
        if let Some(l) = exited.last_stack.as_mut() {
            l.exit_at = Some(frame("task", "/app/job.py", 13));
        }
        let gone = [killed.clone(), retired, exited.clone()];
        let (g, line) = last_seen_of(&gone).expect("seen");
        assert_eq!(g.pid, Pid(11));
        assert!(
            line.contains("ended itself at job.py:13 in task()"),
            "{line}"
        );
        // Without it, the signal death is the surer explanation.
        if let Some(l) = exited.last_stack.as_mut() {
            l.exit_at = None;
        }
        let gone = [killed, exited];
        let (g, _) = last_seen_of(&gone).expect("seen");
        assert_eq!(g.pid, Pid(12));
    }

    #[test]
    fn a_nonzero_exit_names_its_exit_call() {
        let mut g = worker(20, "exit 3", 2_000, in_task());
        if let Some(l) = g.last_stack.as_mut() {
            l.exit_at = Some(frame("task", "/app/job.py", 13));
        }
        let (_, line) = last_seen_of(std::slice::from_ref(&g)).expect("seen");
        assert!(
            line.contains("(exit 3); it most likely ended itself at job.py:13"),
            "{line}"
        );
        assert!(!line.contains("Pool task"), "{line}");
    }

    #[test]
    fn exit_0_outside_a_pool_is_still_skipped() {
        let mut g = worker(30, "exit 0", 2_000, in_task());
        if let Some(l) = g.last_stack.as_mut() {
            for t in &mut l.threads {
                t.frames.retain(|f| !f.named("worker"));
            }
        }
        assert!(last_seen_of(std::slice::from_ref(&g)).is_none());
    }
}
