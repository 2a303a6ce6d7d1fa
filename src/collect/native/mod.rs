//! Native stacks below the Python frames: stop each thread of a process for a moment with
//! ptrace (SEIZE + INTERRUPT), copy its registers and the top of its stack, let it go, then
//! unwind (framehop, CFI) and symbolize (ELF symbols, build-id debug files, DWARF) from the copy.
//!
//! Inputs: a pid and the TIDs the caller read from `/proc/PID/task`. Output: [`NativeSample`],
//! per-thread [`NativeThread`]s plus [`Diagnostic`]s for threads that exited, appeared, or could
//! not be stopped. Nothing here returns an error, and no thread is left stopped on any path:
//! all ptrace calls run on one short-lived thread, each stop is held by an RAII guard
//! ([`ptrace::Attached`]), and the kernel detaches everything if that thread dies.
//!
//! Also here: [`merge`] (Python + native frames, like `py-spy dump --native`) and the lock-owner
//! helpers in [`locks`].

mod capture;
pub mod elf;
pub mod helper;
pub mod locks;
pub mod maps;
pub mod ptrace;
pub mod symbols;
mod symcache;
pub mod unwind;

pub use crate::model::merge::{self, merge, merge_with_entries, MergedFrame};
pub use locks::{mutex_owner, ns_tid_map, read_futex_word, waits_for_gil, MutexKind, MutexOwner};

use crate::model::{DiagKind, Diagnostic, NativeFrame, Pid, Stage, Tid};
use capture::Capture;
use elf::ElfFile;
use maps::MapEntry;
use ptrace::{AttachError, Hold};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use symbols::FileSymbols;
use unwind::{ProcessUnwinder, UnwindCache, UnwindEnd};

/// Identity of a mapped file: `major:minor` and inode from `/proc/PID/maps`
/// (the vdso, which has neither, is keyed by its name and size).
type FileKey = (String, u64);

fn file_key(m: &MapEntry) -> FileKey {
    if m.is_vdso() {
        ("[vdso]".to_string(), m.end - m.start)
    } else {
        (m.dev.clone(), m.inode)
    }
}

/// Per-binary caches (unwind sections + symbol tables), shared by every process of a tree:
/// forked children share their parent's mappings, so each file is loaded once.
pub struct NativeCache {
    /// Parsed ELF files; `None` records a file that could not be read (not retried).
    files: HashMap<FileKey, Option<Arc<ElfFile>>>,
    /// Symbol tables, built on first symbolization.
    symbols: HashMap<FileKey, FileSymbols>,
    /// One unwinder per distinct set of executable mappings (forked children reuse it).
    unwinders: HashMap<u64, ProcessUnwinder>,
    unwind_cache: UnwindCache,
}

impl Default for NativeCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for NativeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCache")
            .field("files", &self.files.len())
            .field("symbols", &self.symbols.len())
            .field("unwinders", &self.unwinders.len())
            .finish()
    }
}

impl NativeCache {
    pub fn new() -> Self {
        NativeCache {
            files: HashMap::new(),
            symbols: HashMap::new(),
            unwinders: HashMap::new(),
            unwind_cache: UnwindCache::new(),
        }
    }

    /// The parsed file behind mapping `m` of process `pid`, loading it on first use.
    fn file(&mut self, pid: Pid, m: &MapEntry) -> Option<Arc<ElfFile>> {
        let key = file_key(m);
        if let Some(f) = self.files.get(&key) {
            return f.clone();
        }
        let name = m.file_path().unwrap_or_default().to_string();
        let loaded = if m.is_vdso() {
            // Same kernel, same vdso: copied out of the first process that maps it.
            let len = usize::try_from(m.end - m.start).unwrap_or(0);
            ptrace::read_memory(pid, m.start, len)
                .ok()
                .and_then(|b| ElfFile::from_bytes(&name, &b).ok())
                .map(Arc::new)
        } else {
            m.open_candidates(pid.0)
                .iter()
                .find_map(|p| ElfFile::load(&name, p).ok())
                .map(Arc::new)
        };
        self.files.insert(key, loaded.clone());
        loaded
    }

    /// The unwinder for a process with these mappings (built once per distinct layout).
    fn unwinder_for(&mut self, pid: Pid, maps: &[MapEntry]) -> u64 {
        let exec: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.executable() && m.is_code_object())
            .collect();
        let mut h = DefaultHasher::new();
        for m in &exec {
            (m.start, m.end, m.offset, &m.dev, m.inode).hash(&mut h);
        }
        let sig = h.finish();
        if !self.unwinders.contains_key(&sig) {
            let mut u = ProcessUnwinder::new();
            for m in exec {
                if let Some(f) = self.file(pid, m) {
                    framehop::Unwinder::add_module(&mut u, unwind::module_for(&f, m));
                }
            }
            self.unwinders.insert(sig, u);
        }
        sig
    }

    /// Symbolizes one frame address of process `pid` into one or more frames (inlined first).
    fn symbolize(
        &mut self,
        pid: Pid,
        maps: &[MapEntry],
        fa: framehop::FrameAddress,
    ) -> Vec<NativeFrame> {
        let addr = fa.address();
        let bare = |module: Option<String>| NativeFrame {
            addr,
            module,
            function: None,
            file: None,
            line: None,
        };
        let Some(m) = maps::find(maps, addr) else {
            return vec![bare(None)];
        };
        let module = m
            .file_path()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
        if !m.is_code_object() {
            return vec![bare(module)];
        }
        let Some(file) = self.file(pid, m) else {
            return vec![bare(module)];
        };
        let key = file_key(m);
        let roots = [
            PathBuf::from(format!("/proc/{}/root/", pid.0)),
            PathBuf::from("/"),
        ];
        let syms = self
            .symbols
            .entry(key)
            .or_insert_with(|| FileSymbols::new(file.clone(), &roots, true));
        let svma = fa
            .address_for_lookup()
            .wrapping_sub(file.bias(m.start, m.offset));
        syms.resolve(svma)
            .into_iter()
            .map(|r| NativeFrame {
                addr,
                module: module.clone(),
                function: r.function,
                file: r.file,
                line: r.line,
            })
            .collect()
    }
}

/// The native side of one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeThread {
    pub tid: Tid,
    /// fs_base == pthread_self() == threading.get_ident(): maps RLock/SemLock owners to TIDs.
    pub fs_base: u64,
    /// Innermost first.
    pub frames: Vec<NativeFrame>,
    /// The syscall line (/proc/PID/task/TID/syscall) read *before* the thread was stopped.
    pub syscall_before: Option<String>,
}

/// One look at the native stacks of one process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NativeSample {
    pub threads: Vec<NativeThread>,
    pub diagnostics: Vec<Diagnostic>,
    /// The longest time any thread of the process was held stopped.
    pub max_stop: Duration,
    /// How long each thread that was stopped was held (for the stop-time distribution).
    pub holds: Vec<Hold>,
}

impl NativeSample {
    /// `pthread_self()` (fs_base) -> TID, for RLock/SemLock owners and `PyThread.thread_id`.
    pub fn tid_by_pthread(&self) -> HashMap<u64, Tid> {
        self.threads.iter().map(|t| (t.fs_base, t.tid)).collect()
    }
}

/// How threads are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Stop, read and release one thread before the next: each thread pauses for tens of
    /// microseconds and the process never stops as a whole. The default.
    OneAtATime,
    /// Stop every thread, read them all, release them all: a consistent cut of the process,
    /// at the price of a pause that grows with the thread count.
    AllAtOnce,
}

/// Tuning knobs of [`sample_with`].
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub mode: StopMode,
    /// Bytes of stack copied above the stack pointer (bounded by the stack mapping).
    pub stack_bytes: usize,
    /// Give up on a thread that has not stopped after this long.
    pub stop_timeout: Duration,
    /// Keep each thread stopped this much longer than needed. Zero in production; the
    /// SIGKILL safety test raises it so that its kills land while threads are stopped.
    pub extra_hold: Duration,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            mode: StopMode::OneAtATime,
            stack_bytes: 128 * 1024,
            stop_timeout: Duration::from_millis(100),
            extra_hold: Duration::ZERO,
        }
    }
}

fn diag(pid: Pid, tid: Option<Tid>, kind: DiagKind, message: String) -> Diagnostic {
    Diagnostic {
        pid: Some(pid),
        tid,
        stage: Stage::Native,
        kind,
        message,
    }
}

fn attach_diag(pid: Pid, tid: Tid, e: &AttachError) -> Diagnostic {
    let kind = match e {
        AttachError::Gone => DiagKind::Gone,
        AttachError::PermissionDenied(_) => DiagKind::PermissionDenied,
        _ => DiagKind::Failed,
    };
    diag(
        pid,
        Some(tid),
        kind,
        format!("native stack of thread {tid}: {e}"),
    )
}

/// Stops each thread of `pid` briefly (PTRACE_SEIZE + PTRACE_INTERRUPT, never PTRACE_ATTACH), reads registers,
/// unwinds with CFI, detaches. Threads that exit or appear meanwhile, and EPERM on exiting threads, become
/// diagnostics, never errors. No thread is ever left stopped: detach on every path, panics included (RAII guard).
pub fn sample(pid: Pid, tids: &[Tid], cache: &mut NativeCache) -> NativeSample {
    sample_with(pid, tids, cache, &SampleOptions::default())
}

/// [`sample`] with explicit options.
pub fn sample_with(
    pid: Pid,
    tids: &[Tid],
    cache: &mut NativeCache,
    opts: &SampleOptions,
) -> NativeSample {
    let mut out = NativeSample::default();
    if pid.0 == std::process::id() as i32 {
        // A thread cannot trace its own process (EPERM); say so plainly.
        out.diagnostics.push(diag(
            pid,
            None,
            DiagKind::Failed,
            "mphang does not sample its own process".into(),
        ));
        return out;
    }
    let maps = match std::fs::read_to_string(format!("/proc/{}/maps", pid.0)) {
        Ok(t) => maps::parse_maps(&t),
        Err(e) => {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => DiagKind::Gone,
                std::io::ErrorKind::PermissionDenied => DiagKind::PermissionDenied,
                _ => DiagKind::Failed,
            };
            out.diagnostics
                .push(diag(pid, None, kind, format!("/proc/{}/maps: {e}", pid.0)));
            return out;
        }
    };
    sample_with_maps(pid, tids, &maps, cache, opts)
}

/// [`sample_with`] for a caller that has just read and parsed `/proc/PID/maps` itself, so the
/// file is not read twice. Threads are stopped on a thread of this process.
pub fn sample_with_maps(
    pid: Pid,
    tids: &[Tid],
    maps: &[MapEntry],
    cache: &mut NativeCache,
    opts: &SampleOptions,
) -> NativeSample {
    sample_with_stopper(pid, tids, maps, cache, opts, &mut Stopper::InProcess)
}

/// Who stops the threads.
pub enum Stopper {
    /// A dedicated thread of this process (library callers; `StopMode::AllAtOnce`).
    InProcess,
    /// mphang's ptrace helper process (see [`helper`]): a stopped mphang never holds a thread.
    /// Replaced by a new helper when one is killed; `None` after too many failures.
    Helper {
        helper: Option<helper::Helper>,
        restarts: u32,
    },
}

impl Stopper {
    /// The helper when [`helper::set_program`] was called and it starts, else in-process.
    pub fn for_collection() -> Stopper {
        match helper::Helper::start() {
            Some(h) => Stopper::Helper {
                helper: Some(h),
                restarts: 0,
            },
            None => Stopper::InProcess,
        }
    }

    /// True when stops run in a helper at a real-time priority.
    pub fn realtime(&self) -> bool {
        matches!(self, Stopper::Helper { helper: Some(h), .. } if h.realtime)
    }
}

/// A helper killed more often than this in one collection is not restarted.
const MAX_HELPER_RESTARTS: u32 = 3;

/// [`sample_with_maps`] with an explicit [`Stopper`] (the collector passes its helper).
pub fn sample_with_stopper(
    pid: Pid,
    tids: &[Tid],
    maps: &[MapEntry],
    cache: &mut NativeCache,
    opts: &SampleOptions,
    stopper: &mut Stopper,
) -> NativeSample {
    let mut out = NativeSample::default();
    if pid.0 == std::process::id() as i32 {
        out.diagnostics.push(diag(
            pid,
            None,
            DiagKind::Failed,
            "mphang does not sample its own process".into(),
        ));
        return out;
    }
    // Everything slow happens before any thread is stopped: files, unwind tables.
    let sig = cache.unwinder_for(pid, maps);

    let mut syscall_before = HashMap::new();
    let mut todo = Vec::new();
    for &tid in tids {
        let path = format!("/proc/{}/task/{}/syscall", pid.0, tid.0);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                syscall_before.insert(tid, s.trim_end().to_string());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.diagnostics.push(diag(
                    pid,
                    Some(tid),
                    DiagKind::Gone,
                    format!("thread {tid} exited before its native stack was read"),
                ));
                continue;
            }
            Err(_) => {}
        }
        if ptrace::task_state(tid) == Some('D') {
            out.diagnostics.push(diag(
                pid,
                Some(tid),
                DiagKind::Failed,
                format!("thread {tid} is in uninterruptible sleep (D); not stopped"),
            ));
            continue;
        }
        todo.push(tid);
    }

    let ranges: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    let results = capture_all(pid, &todo, &ranges, opts, stopper);
    for (tid, mut r) in results {
        // A TID listed earlier may have exited and been reused by another process before the
        // seize; then what we read belongs elsewhere. The task is gone from pid in that case.
        if r.is_ok() && !std::path::Path::new(&format!("/proc/{}/task/{}", pid.0, tid.0)).exists() {
            r = Err(AttachError::Gone);
        }
        match r {
            Ok(c) => {
                out.max_stop = out.max_stop.max(c.held.total);
                out.holds.push(c.held);
                let frames = cache
                    .unwinders
                    .get(&sig)
                    .map(|u| unwind::unwind(u, &mut cache.unwind_cache, c.regs.start(), &c.stack));
                let (addrs, end) = frames.unwrap_or((Vec::new(), UnwindEnd::Complete));
                let mut native = Vec::new();
                for fa in addrs {
                    native.extend(cache.symbolize(pid, maps, fa));
                }
                if let UnwindEnd::Truncated(why) = end {
                    // Normal at the outermost frame of many threads; only worth a note when short.
                    if native.len() < 3 {
                        out.diagnostics.push(diag(
                            pid,
                            Some(tid),
                            DiagKind::Failed,
                            format!("native unwind of thread {tid} stopped early: {why}"),
                        ));
                    }
                }
                out.threads.push(NativeThread {
                    tid: c.tid,
                    fs_base: c.regs.fs_base,
                    frames: native,
                    syscall_before: syscall_before.remove(&tid),
                });
            }
            Err(e) => out.diagnostics.push(attach_diag(pid, tid, &e)),
        }
    }

    // Threads that appeared while we looked.
    let known: HashSet<Tid> = tids.iter().copied().collect();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", pid.0)) {
        for e in rd.flatten() {
            if let Some(t) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if !known.contains(&Tid(t)) {
                    out.diagnostics.push(diag(
                        pid,
                        Some(Tid(t)),
                        DiagKind::Failed,
                        format!("thread {t} appeared during sampling; no native stack"),
                    ));
                }
            }
        }
    }
    out
}

/// Captures every thread in `tids`: in-process, or one request per thread to the helper
/// (restarting it when it was killed; a thread whose helper died becomes a diagnostic).
fn capture_all(
    pid: Pid,
    tids: &[Tid],
    ranges: &[(u64, u64)],
    opts: &SampleOptions,
    stopper: &mut Stopper,
) -> Vec<(Tid, Result<Capture, AttachError>)> {
    let (slot, restarts) = match stopper {
        Stopper::Helper { helper, restarts } if opts.mode == StopMode::OneAtATime => {
            (helper, restarts)
        }
        _ => return capture::in_process(pid, tids, ranges, opts),
    };
    let mut out = Vec::with_capacity(tids.len());
    for &tid in tids {
        if slot.is_none() && *restarts < MAX_HELPER_RESTARTS {
            *restarts += 1;
            *slot = helper::Helper::start();
        }
        let Some(h) = slot.as_mut() else {
            out.push((
                tid,
                Err(AttachError::Other("no ptrace helper; not stopped".into())),
            ));
            continue;
        };
        match h.capture(pid, tid, ranges, opts) {
            Ok(c) => out.push((tid, Ok(c))),
            Err(helper::Failure::Attach(e)) => out.push((tid, Err(e))),
            Err(helper::Failure::Helper(why)) => {
                *slot = None;
                out.push((tid, Err(AttachError::Other(why))));
            }
        }
    }
    // A helper still holding threads given up on must not sit idle while mphang unwinds: were
    // it stopped (SIGSTOP) then, nobody would notice and such a thread would stay stopped. Its
    // exit releases them. A fresh one (holding nothing) takes its place: not a restart.
    if slot.as_ref().is_some_and(|h| h.pending > 0) {
        drop(slot.take());
        *slot = helper::Helper::start();
    }
    out
}

/// `MPHANG_TRACE`: the distribution of per-thread stop times on stderr;
/// `MPHANG_TRACE_STOPS=FILE`: every stop appended to FILE, one line each (`total after_stop
/// since_check` in µs; `scripts/bench.py --stops` reads it).
pub fn trace_holds(holds: &[Hold], stopper: &Stopper) {
    if let Some(path) = std::env::var_os("MPHANG_TRACE_STOPS") {
        let lines: String = holds
            .iter()
            .map(|h| {
                format!(
                    "{} {} {}\n",
                    h.total.as_micros(),
                    h.after_stop.as_micros(),
                    h.since_check.as_micros()
                )
            })
            .collect();
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()));
    }
    if std::env::var_os("MPHANG_TRACE").is_none() {
        return;
    }
    let pct = |mut v: Vec<u128>| -> String {
        if v.is_empty() {
            return "-".into();
        }
        v.sort_unstable();
        let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
        format!("{}/{}/{}", at(50), at(95), v[v.len() - 1])
    };
    let total = pct(holds.iter().map(|h| h.total.as_micros()).collect());
    let after = pct(holds.iter().map(|h| h.after_stop.as_micros()).collect());
    let since = pct(holds.iter().map(|h| h.since_check.as_micros()).collect());
    let who = match stopper {
        Stopper::InProcess => "in-process",
        Stopper::Helper { .. } if stopper.realtime() => "helper, SCHED_FIFO",
        Stopper::Helper { .. } => "helper",
    };
    eprintln!(
        "stops: {} threads ({who}); us p50/p95/max: interrupt->detach {total}; \
         last check->detach {since}; stop reported->detach {after}",
        holds.len()
    );
}
