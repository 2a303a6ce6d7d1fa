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
    let version = spy.version.to_string();
    if let Some(k) = &t.layout {
        spies.insert(k.clone(), spy);
    }
    let traces = traces.ok_or_else(|| classify(&last_err))?;
    let threads = traces
        .into_iter()
        .map(|tr| {
            let tid = tr
                .os_thread_id
                .and_then(|x| t.host_tid(x as i32))
                .or_else(|| t.host_tid(pthread_tid(t.pid, tr.thread_id)?));
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
    Ok(ProcPython { version, threads })
}

/// `offsetof(struct pthread, tid)` in glibc 2.34–2.39 on x86_64 (field guide §3.4).
pub const PTHREAD_TID_OFFSET: u64 = 720;

/// The TID stored in the `struct pthread` at `pthread` (a `pthread_t`, = fs_base, =
/// `threading.get_ident()`), in the target's PID namespace; 0 for a parent's thread seen in a
/// fork child (glibc clears it at fork).
pub fn pthread_tid(pid: i32, pthread: u64) -> Option<i32> {
    if pthread == 0 {
        return None;
    }
    let b = memory::read(pid, pthread.checked_add(PTHREAD_TID_OFFSET)?, 4).ok()?;
    memory::i32_at(&b, 0)
}

/// Maps a `pthread_t` to a TID, accepted only if it names a live thread of the process
/// (`tids`). Needed before 3.11, whose thread state has no `native_thread_id`.
pub fn tid_of_pthread(pid: i32, pthread: u64, tids: &[i32]) -> Option<i32> {
    pthread_tid(pid, pthread).filter(|tid| tids.contains(tid))
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
