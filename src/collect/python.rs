//! Python stacks through the `py-spy` library: the only module that names `py_spy`.
//!
//! py-spy's `PythonSpy::new` repeats interpreter discovery (ELF symbols, version, interpreter
//! address) for every process, about 9 ms each. Forked children share their parent's binary and
//! address layout, so each worker thread keeps one discovered `PythonSpy` per layout and
//! retargets it (`pid`, `process`) at every other process with the same layout. `PythonSpy` is
//! not `Send`, so spies are built and used inside their worker thread only.

use super::memory;
use crate::model::{DiagKind, PyFrame, PyThread};
use py_spy::config::LockingStrategy;
use std::collections::HashMap;
use std::sync::Mutex;

/// One process to read: its pid, its live TIDs, and a key equal for processes that share an
/// address layout (same exe and same load addresses), None when unknown.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: i32,
    pub tids: Vec<i32>,
    pub layout: Option<String>,
    /// glibc layouts, for the `pthread_t` -> TID read before 3.11.
    pub libc: super::abi::GlibcLayout,
    /// A forkserver: also read its main loop's `pid_to_fd` (py-spy's locals support).
    pub forkserver: bool,
    /// Extra quick reads whose innermost frames only lower each thread's top line when they are
    /// in the same function: a loop then shows its head line (3.12+ attribute the backward jump
    /// of `while cond: pass` to the body's line, so one read sees either line).
    pub extra_reads: u32,
    /// For a process in another PID namespace: its threads' namespace TIDs (what Python's
    /// memory holds) mapped to mphang's TIDs, from `NSpid`. Empty otherwise.
    pub ns_tids: HashMap<i32, i32>,
}

impl Target {
    /// A TID read from the target (py-spy's native thread id, a `struct pthread`'s tid) as a
    /// live thread of the process in mphang's PID namespace.
    fn host_tid(&self, tid: i32) -> Option<i32> {
        if self.ns_tids.is_empty() {
            Some(tid).filter(|t| self.tids.contains(t))
        } else {
            self.ns_tids.get(&tid).copied()
        }
    }
}

/// The Python side of one process.
#[derive(Debug, Clone)]
pub struct ProcPython {
    pub version: String,
    /// Each Python thread with the OS TID it runs on, when that could be told.
    pub threads: Vec<(Option<i32>, PyThread)>,
    /// A forkserver's live children and the fd of each one's status pipe.
    pub status_fds: Vec<(i32, i32)>,
}

pub type Outcome = Result<ProcPython, (DiagKind, String)>;

fn config() -> py_spy::Config {
    py_spy::Config {
        blocking: LockingStrategy::NonBlocking,
        native: false,
        subprocesses: false,
        ..py_spy::Config::default()
    }
}

/// Reads Python stacks of all targets with `workers` threads. Returns outcomes by pid.
pub fn collect(targets: &[Target], workers: usize) -> HashMap<i32, Outcome> {
    let queue = Mutex::new(targets.iter().collect::<Vec<_>>());
    let results = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(targets.len().max(1)) {
            s.spawn(|| {
                let config = config();
                let mut spies: HashMap<String, py_spy::PythonSpy> = HashMap::new();
                loop {
                    let next = match queue.lock() {
                        Ok(mut q) => q.pop(),
                        Err(_) => None,
                    };
                    let Some(t) = next else { break };
                    let outcome = read_one(t, &config, &mut spies);
                    if let Ok(mut r) = results.lock() {
                        r.insert(t.pid, outcome);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

fn read_one(
    t: &Target,
    config: &py_spy::Config,
    spies: &mut HashMap<String, py_spy::PythonSpy>,
) -> Outcome {
    let reused = t.layout.as_ref().and_then(|k| spies.remove(k));
    let mut spy = match reused {
        Some(mut spy) => match remoteprocess::Process::new(t.pid) {
            Ok(process) => {
                spy.pid = t.pid;
                spy.process = process;
                spy.python_thread_ids.clear();
                spy.python_thread_names.clear();
                spy
            }
            Err(e) => return Err(classify(&e.to_string())),
        },
        None => py_spy::PythonSpy::new(t.pid, config).map_err(|e| classify(&format!("{e:#}")))?,
    };
    // Locals cost a read per variable: only for the forkserver, whose `pid_to_fd` maps each
    // child to the status pipe its client's `Process.join` polls (a 64-worker Pool needs
    // about 700 characters of repr).
    spy.config.dump_locals = if t.forkserver { 64 } else { 0 };
    // Non-blocking reads can tear while a thread runs; a hung thread does not move, so a retry
    // or two settles it.
    let mut last_err = String::new();
    let mut traces = None;
    for _ in 0..3 {
        match spy.get_stack_traces() {
            Ok(tr) => {
                traces = Some(tr);
                break;
            }
            Err(e) => last_err = format!("{e:#}"),
        }
    }
    let mut traces = traces.ok_or_else(|| classify(&last_err))?;
    for _ in 0..t.extra_reads {
        let Ok(more) = spy.get_stack_traces() else {
            continue;
        };
        for tr in &mut traces {
            let again = more.iter().find(|m| m.thread_id == tr.thread_id);
            let (Some(top), Some(other)) =
                (tr.frames.first_mut(), again.and_then(|m| m.frames.first()))
            else {
                continue;
            };
            if other.filename == top.filename && other.name == top.name && other.line < top.line {
                top.line = other.line;
            }
        }
    }
    let version = spy.version.to_string();
    if let Some(k) = &t.layout {
        spies.insert(k.clone(), spy);
    }
    let status_fds = traces
        .iter()
        .flat_map(|tr| &tr.frames)
        .filter(|f| f.name == "main" && f.filename.ends_with("multiprocessing/forkserver.py"))
        .flat_map(|f| f.locals.iter().flatten())
        .find(|l| l.name == "pid_to_fd")
        .and_then(|l| l.repr.as_deref())
        .map(parse_int_dict)
        .unwrap_or_default();
    let threads = traces
        .into_iter()
        .map(|tr| {
            let tid = tr
                .os_thread_id
                .and_then(|x| t.host_tid(x as i32))
                .or_else(|| {
                    let raw = t.libc.pthread_tid(&memory::Remote(t.pid), tr.thread_id)?;
                    t.host_tid(raw)
                });
            let py = PyThread {
                thread_id: tr.thread_id,
                name: tr.thread_name.clone(),
                owns_gil: tr.owns_gil,
                active: tr.active,
                frames: tr
                    .frames
                    .iter()
                    .map(|f| PyFrame {
                        function: f.name.clone(),
                        file: f.filename.clone(),
                        line: f.line,
                        entry: f.is_entry || f.is_shim_entry,
                    })
                    .collect(),
            };
            (tid, py)
        })
        .collect();
    Ok(ProcPython {
        version,
        threads,
        status_fds,
    })
}

/// One process's Python stacks read again and again without stopping it (py-spy's
/// non-blocking mode; a read can tear while a thread runs, and then fails or is a little off).
/// For `run`'s stack history. Not `Send`: open and read it on one thread.
pub struct Spy(py_spy::PythonSpy);

impl Spy {
    /// Discovers the interpreter of `pid` (about 9 ms); None when it is not Python.
    pub fn open(pid: i32) -> Option<Spy> {
        py_spy::PythonSpy::new(pid, &config()).ok().map(Spy)
    }

    /// Every Python thread's stack now, without locals.
    pub fn read(&mut self) -> Option<Vec<PyThread>> {
        let traces = self.0.get_stack_traces().ok()?;
        Some(
            traces
                .into_iter()
                .map(|tr| PyThread {
                    thread_id: tr.thread_id,
                    name: tr.thread_name,
                    owns_gil: tr.owns_gil,
                    active: tr.active,
                    frames: tr
                        .frames
                        .into_iter()
                        .map(|f| PyFrame {
                            function: f.name,
                            file: f.filename,
                            line: f.line,
                            entry: f.is_entry || f.is_shim_entry,
                        })
                        .collect(),
                })
                .collect(),
        )
    }
}

/// `{12345: 7, 12346: 8}` (py-spy's repr of a dict of ints) as pairs; a truncated tail
/// (`...`) and anything not an int pair is skipped.
pub fn parse_int_dict(repr: &str) -> Vec<(i32, i32)> {
    repr.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .collect()
}

fn classify(msg: &str) -> (DiagKind, String) {
    let m = msg.to_lowercase();
    let kind = if m.contains("permission") || m.contains("operation not permitted") {
        DiagKind::PermissionDenied
    } else if m.contains("no such process") || m.contains("no such file") {
        DiagKind::Gone
    } else if m.contains("python version")
        || m.contains("python interpreter")
        || m.contains("not a python")
        || m.contains("failed to find python")
    {
        DiagKind::NotPython
    } else {
        DiagKind::Failed
    };
    (kind, msg.lines().next().unwrap_or(msg).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn int_dict_reprs() {
        assert_eq!(
            super::parse_int_dict("{4113: 7, 4120: 9}"),
            vec![(4113, 7), (4120, 9)]
        );
        assert_eq!(super::parse_int_dict("{}"), vec![]);
        assert_eq!(
            super::parse_int_dict("{1: 5, 2: 6, ...}"),
            vec![(1, 5), (2, 6)]
        );
    }
}
