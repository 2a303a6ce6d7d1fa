//! Collection: reads a live process tree into a [`Snapshot`]. The only module that touches the OS.
//!
//! Order: check the root -> walk the tree -> read every process in parallel (/proc, fds, maps,
//! decoded syscalls with their futex words and poll sets) -> Python stacks (py-spy, discovery
//! shared across forked children) -> native stacks (ptrace, a few ms per thread, unless
//! non-blocking) -> pipes (fill), unix sockets (peers), semaphores (value, holders on demand)
//! -> roles -> later looks for progress. A process that vanishes or refuses
//! becomes a diagnostic, never an abort.

pub mod abi;
pub mod breadth;
pub mod decode;
pub mod fds;
pub mod host;
pub mod locks;
pub mod looks;
pub mod memory;
pub mod native;
pub mod net;
mod objects;
pub mod outside;
pub mod perms;
pub mod procfs;
pub mod python;
pub mod select;
pub mod sems;
pub mod sockdiag;
mod stopped;
pub mod tree;

use crate::error::{Error, Result};
use crate::model::{
    DiagKind, Diagnostic, GoneProcess, Inode, Pid, PipeSnap, ProcessSnap, Role, SemMapping,
    Snapshot, Stage, SyscallState, ThreadSnap, Tid, SCHEMA,
};
use procfs::MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Number of looks (1 = a single look, no progress check).
    pub looks: u32,
    /// Time between looks.
    pub interval: Duration,
    /// Read Python stacks with py-spy.
    pub python: bool,
    /// Read native stacks (stops each thread briefly with ptrace); false = `--nonblocking`.
    pub native: bool,
    /// More trees to include (e.g. orphans reparented to `mphang run`, a subreaper).
    pub extra_roots: Vec<Pid>,
    /// Redact secret-looking arguments and paths (`model::safe`); false = `--no-redact`.
    /// Control characters in target strings are escaped either way.
    pub redact: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            looks: 2,
            interval: Duration::from_millis(500),
            python: true,
            native: true,
            extra_roots: Vec::new(),
            redact: true,
        }
    }
}

/// Everything read about one process before Python and cross-process joins.
struct Raw {
    snap: ProcessSnap,
    maps: Vec<MapEntry>,
    /// Memory layouts of this process's CPython build and glibc.
    abi: abi::Abi,
    diags: Vec<Diagnostic>,
}

fn diag(pid: i32, stage: Stage, err: &std::io::Error) -> Diagnostic {
    let kind = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => DiagKind::Gone,
        Some(libc::EACCES) | Some(libc::EPERM) => DiagKind::PermissionDenied,
        _ => DiagKind::Failed,
    };
    Diagnostic {
        pid: Some(Pid(pid)),
        tid: None,
        stage,
        kind,
        message: err.to_string(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks that `root` is a user process mphang may read; the errors of `report <pid>`.
pub fn check_root(root: Pid) -> Result<()> {
    if root.0 <= 0 {
        return Err(Error::NotAUserProcess(root));
    }
    let stat = match std::fs::read_to_string(format!("/proc/{}/stat", root.0)) {
        Ok(s) => s,
        Err(_) => return Err(Error::NoSuchProcess(root)),
    };
    let st = procfs::parse_stat(&stat).ok_or(Error::NoSuchProcess(root))?;
    if st.flags & procfs::PF_KTHREAD != 0 || root.0 == 2 || st.ppid == 2 {
        return Err(Error::NotAUserProcess(root));
    }
    if st.state == 'Z' {
        return Err(Error::NoSuchProcess(root));
    }
    match std::fs::read_to_string(format!("/proc/{}/syscall", root.0)) {
        Ok(_) => Ok(()),
        // ptrace-level access refused but /proc's read-level files open (e.g. Yama
        // ptrace_scope=1, same uid): go on with what /proc allows; each process records why.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
                && std::fs::read_dir(format!("/proc/{}/fd", root.0)).is_ok() =>
        {
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let uid = std::fs::read_to_string(format!("/proc/{}/status", root.0))
                .ok()
                .and_then(|s| procfs::parse_status(&s).uid);
            Err(Error::PermissionDenied {
                pid: root,
                why: perms::explain(uid),
            })
        }
        Err(_) => Err(Error::NoSuchProcess(root)),
    }
}

/// Runs `f` over `items` on up to `workers` threads, keeping order.
fn par_map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = Vec::with_capacity(items.len());
    slots.resize_with(items.len(), || None);
    let slots = std::sync::Mutex::new(slots);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut sl) = slots.lock() {
                    sl[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Collects the tree rooted at `root` (plus `opts.extra_roots`).
pub fn collect(root: Pid, opts: &CollectOptions) -> Result<Snapshot> {
    collect_with(root, opts).map(|(s, _)| s)
}

/// [`collect`], also returning the [`looks::Looker`] that takes further looks at the snapshot
/// (the caller extends the observation while a verdict still depends on them).
pub fn collect_with(root: Pid, opts: &CollectOptions) -> Result<(Snapshot, looks::Looker)> {
    check_root(root)?;
    let started = Instant::now();
    let taken_at_ms = now_ms();
    let mut roots = vec![root.0];
    roots.extend(opts.extra_roots.iter().map(|p| p.0));
    let pids = tree::walk(&roots);
    let n = workers();

    let trace = std::env::var_os("MPHANG_TRACE").is_some();
    let phase = |name: &str| {
        if trace {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "{:>7.1} ms {name}\n",
                    started.elapsed().as_secs_f64() * 1000.0
                ),
            );
        }
    };
    phase("tree");
    let raws = par_map(&pids, n, |&pid| read_process(pid));
    phase("proc");
    let mut diagnostics = Vec::new();
    let mut gone = Vec::new();
    let mut procs: Vec<Raw> = Vec::new();
    for (pid, r) in pids.iter().zip(raws) {
        match r {
            Ok(raw) => procs.push(raw),
            Err(d) => {
                if d.kind == DiagKind::Gone {
                    gone.push(GoneProcess {
                        pid: Pid(*pid),
                        ppid: None,
                        cmdline: Vec::new(),
                        ended: None,
                        ended_at_ms: None,
                        last_stack: None,
                    });
                }
                diagnostics.push(d);
            }
        }
    }

    translate_ns_owners(&mut procs);
    if opts.python {
        add_python(&mut procs, n);
    }
    phase("python");
    objects::add_lock_owners(&mut procs);
    let max_stop_us = if opts.native {
        let m = add_native(&mut procs);
        phase("native");
        Some(m)
    } else {
        None
    };
    for r in &mut procs {
        diagnostics.append(&mut r.diags);
    }

    let pipe_refs = pipe_refs(&procs);
    let mut pipes: Vec<PipeSnap> = pipe_refs
        .iter()
        .map(|(inode, (pid, fd))| fds::query_pipe(*pid, *fd, *inode))
        .collect();

    let net_ns = {
        let mut snaps: Vec<&mut ProcessSnap> = procs.iter_mut().map(|r| &mut r.snap).collect();
        net::resolve_sockets(&mut snaps, &mut diagnostics)
    };

    phase("pipes+sockets");
    let layouts: HashMap<i32, Option<String>> = procs
        .iter()
        .map(|r| (r.snap.pid.0, layout_key(r)))
        .collect();
    let semaphores = objects::semaphores(&procs, &layouts, n);
    phase("semaphores");
    assign_roles(&mut procs, root.0, &layouts);
    let libcs: HashMap<i32, abi::GlibcLayout> =
        procs.iter().map(|r| (r.snap.pid.0, r.abi.libc)).collect();

    let processes: Vec<ProcessSnap> = procs.into_iter().map(|r| r.snap).collect();
    let collect_ms = started.elapsed().as_millis() as u64;

    outside::lookup(&processes, &mut pipes);
    let looker = looks::Looker {
        layouts,
        libcs,
        pipe_refs,
        first_done: Instant::now(),
        python: opts.python,
        workers: n,
    };
    let mut snap = Snapshot {
        schema: SCHEMA.to_string(),
        mphang_version: env!("CARGO_PKG_VERSION").to_string(),
        taken_at_ms,
        root,
        clock_ticks: clock_ticks(),
        looks: 1,
        interval_ms: opts.interval.as_millis() as u64,
        collect_ms,
        max_stop_us,
        hosts: host::this_host(&net_ns).into_iter().collect(),
        processes,
        pipes,
        semaphores,
        gone,
        diagnostics,
        tracebacks: Vec::new(),
        gone_threads: Vec::new(),
    };
    for _ in 1..opts.looks.max(1) {
        std::thread::sleep(opts.interval);
        looker.look(&mut snap);
    }
    // Every target string is escaped (and secrets redacted) here, once, for every renderer
    // (the top frames of later looks are only compared, never printed).
    crate::model::safe::sanitize(&mut snap, opts.redact);
    Ok((snap, looker))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn read_text(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Reads one process: /proc files, threads with decoded syscalls, fds, maps.
fn read_process(pid: i32) -> std::result::Result<Raw, Diagnostic> {
    let base = format!("/proc/{pid}");
    let stat_text =
        read_text(&format!("{base}/stat")).map_err(|e| diag(pid, Stage::Process, &e))?;
    let st = procfs::parse_stat(&stat_text).ok_or_else(|| Diagnostic {
        pid: Some(Pid(pid)),
        tid: None,
        stage: Stage::Process,
        kind: DiagKind::Failed,
        message: "unparsable stat".into(),
    })?;
    let mut diags = Vec::new();
    let status_text = read_text(&format!("{base}/status")).unwrap_or_default();
    let status = procfs::parse_status(&status_text);
    if let Some(note) = stopped::note(pid, st.state, &status_text) {
        diags.push(note);
    }
    let cmdline: Vec<String> = std::fs::read(format!("{base}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("{base}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let nofile_limit = read_text(&format!("{base}/limits"))
        .ok()
        .and_then(|s| procfs::parse_nofile_limit(&s));
    let maps = match read_text(&format!("{base}/maps")) {
        Ok(t) => procfs::parse_maps(&t),
        Err(e) => {
            diags.push(diag(pid, Stage::Maps, &e));
            Vec::new()
        }
    };
    let fd_list = match fds::read_fds(pid) {
        Ok(f) => f,
        Err(e) => {
            diags.push(diag(pid, Stage::Fds, &e));
            Vec::new()
        }
    };
    let abi = abi::Abi::for_process(None, exe.as_deref(), &maps);
    let ctx = decode::DecodeCtx {
        pid,
        maps: &maps,
        exe: exe.as_deref(),
        abi: &abi,
    };
    let mut threads = Vec::new();
    let mut syscall_denied = false;
    if let Ok(rd) = std::fs::read_dir(format!("{base}/task")) {
        let mut tids: Vec<i32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        for tid in tids {
            let tb = format!("{base}/task/{tid}");
            let Some(tst) = read_text(&format!("{tb}/stat"))
                .ok()
                .and_then(|s| procfs::parse_stat(&s))
            else {
                continue; // exited meanwhile
            };
            let wchan = read_text(&format!("{tb}/wchan"))
                .ok()
                .and_then(|w| procfs::clean_wchan(&w));
            let syscall = match read_text(&format!("{tb}/syscall")) {
                Ok(s) => procfs::parse_syscall(&s)
                    .map(|raw| decode::decode(&ctx, &raw, wchan.as_deref()))
                    .unwrap_or(SyscallState::Unknown),
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                        syscall_denied = true;
                    }
                    SyscallState::Unknown
                }
            };
            let (state, syscall) = match syscall {
                SyscallState::Running | SyscallState::UserStopped if tst.state == 'R' => {
                    gil_wait_of_runnable(&ctx, &tb).unwrap_or((tst.state, syscall))
                }
                other => (tst.state, other),
            };
            threads.push(ThreadSnap {
                tid: Tid(tid),
                comm: tst.comm,
                state,
                wchan,
                syscall,
                cpu_ticks: tst.utime + tst.stime,
                py: None,
                native: None,
                later: Vec::new(),
                sched: read_sched(&tb),
            });
        }
    }
    if syscall_denied {
        diags.push(Diagnostic {
            pid: Some(Pid(pid)),
            tid: None,
            stage: Stage::Threads,
            kind: DiagKind::PermissionDenied,
            message: format!(
                "syscalls unreadable: {}; showing state and wchan only",
                perms::explain(status.uid)
            ),
        });
    }
    let sem_maps = maps
        .iter()
        .filter(|m| m.is_semaphore())
        .map(|m| SemMapping {
            key: sems::key_of(m),
            start: m.start,
            end: m.end,
            path: m.path.clone(),
        })
        .collect();
    let ns_pid = match status.nspid.as_slice() {
        [_, .., last] if *last != pid => Some(*last),
        _ => None,
    };
    Ok(Raw {
        snap: ProcessSnap {
            pid: Pid(pid),
            ppid: Pid(st.ppid),
            ns_pid,
            net_ns: net::net_ns_of(pid),
            rank: host::rank_of(pid),
            comm: st.comm,
            cmdline,
            exe,
            uid: status.uid,
            state: st.state,
            start_ticks: st.start_ticks,
            cpu_ticks: st.utime + st.stime,
            num_threads: st.num_threads,
            nofile_limit,
            fd_count: fd_list.len(),
            python_version: None,
            role: Role::Python,
            threads,
            fds: fd_list,
            sem_maps,
            status_fds: Vec::new(),
            appeared: Vec::new(),
        },
        maps,
        abi,
        diags,
    })
}

/// `/proc/PID/task/TID/schedstat` (`run_ns wait_ns slices`) with the time it was read.
pub(crate) fn read_sched(tb: &str) -> Option<crate::model::SchedStat> {
    let text = read_text(&format!("{tb}/schedstat")).ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (run_ns, wait_ns) = (it.next()??, it.next()??);
    let slices = it.next().flatten();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(crate::model::SchedStat {
        run_ns,
        wait_ns,
        slices,
        at_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
    })
}

/// A thread caught runnable may be a GIL waiter between two 5 ms waits. Native frames tell
/// (`take_gil`), but not on stripped builds (Debian's 3.14/3.15) or with `--nonblocking`: a
/// few quick re-reads (1 ms apart) that find it sleeping in a timed futex in the interpreter's
/// data (where the GIL is) record that wait instead. Anything else keeps the first look.
fn gil_wait_of_runnable(ctx: &decode::DecodeCtx<'_>, tb: &str) -> Option<(char, SyscallState)> {
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1));
        let st = read_text(&format!("{tb}/stat"))
            .ok()
            .and_then(|s| procfs::parse_stat(&s))?;
        let raw = read_text(&format!("{tb}/syscall"))
            .ok()
            .and_then(|s| procfs::parse_syscall(&s))?;
        if st.state == 'R' {
            continue;
        }
        let s = decode::decode(ctx, &raw, None);
        let gil = matches!(&s, SyscallState::Blocked(b) if matches!(&b.decoded,
            crate::model::Decoded::Futex(f) if f.timed && f.region == crate::model::FutexRegion::Interpreter));
        if gil {
            return Some((st.state, s));
        }
    }
    None
}

/// A key equal for processes that share an address layout: exe plus the load addresses of the
/// exe and libpython. Forked (not exec'd) children match their parent.
fn layout_key(r: &Raw) -> Option<String> {
    let exe = r.snap.exe.as_deref()?;
    let exe_start = r.maps.iter().find(|m| m.path == exe).map(|m| m.start)?;
    let lib = r
        .maps
        .iter()
        .find(|m| m.path.contains("libpython"))
        .map(|m| m.start)
        .unwrap_or(0);
    Some(format!("{exe}@{exe_start:x}/{lib:x}"))
}

fn looks_like_python(r: &Raw) -> bool {
    let python = |path: &str| path.rsplit('/').next().unwrap_or("").starts_with("python");
    r.maps.iter().any(|m| {
        let base = m.path.rsplit('/').next().unwrap_or("");
        base.starts_with("python") || base.starts_with("libpython")
    }) || (r.maps.is_empty()
        && (r.snap.exe.as_deref().is_some_and(python)
            || r.snap.cmdline.first().is_some_and(|a| python(a))))
}

/// A live process whose maps could not be read: whether it runs Python is unknown, so it is
/// not called "not Python".
fn unreadable(r: &Raw) -> bool {
    r.maps.is_empty() && r.snap.state != 'Z'
}

fn add_python(procs: &mut [Raw], workers: usize) {
    let forkservers: Vec<i32> = procs
        .iter()
        .filter(|r| is_forkserver(r))
        .map(|r| r.snap.pid.0)
        .collect();
    let mut targets = Vec::new();
    for r in procs.iter_mut() {
        if r.snap.state == 'Z' {
            continue;
        }
        if let Some(b) = r.abi.build.filter(|b| b.free_threaded) {
            r.diags.push(free_threaded_note(r, b));
            continue;
        }
        if !looks_like_python(r) && unreadable(r) {
            continue; // its permission diagnostic says why
        }
        if !looks_like_python(r) {
            r.diags.push(Diagnostic {
                pid: Some(r.snap.pid),
                tid: None,
                stage: Stage::Python,
                kind: DiagKind::NotPython,
                message: format!(
                    "not a Python process ({}); /proc data only",
                    r.snap.exe.as_deref().unwrap_or(&r.snap.comm)
                ),
            });
            continue;
        }
        targets.push(python::Target {
            pid: r.snap.pid.0,
            tids: r.snap.threads.iter().map(|t| t.tid.0).collect(),
            layout: layout_key(r),
            libc: r.abi.libc,
            // Not its children: they carry a fork-time copy of its main frame.
            forkserver: forkservers.contains(&r.snap.pid.0)
                && !forkservers.contains(&r.snap.ppid.0),
            extra_reads: 0,
            ns_tids: ns_tids(&r.snap),
        });
    }
    let results = python::collect(&targets, workers);
    for r in procs.iter_mut() {
        match results.get(&r.snap.pid.0) {
            Some(Ok(pp)) => {
                r.snap.python_version = Some(pp.version.clone());
                r.snap.status_fds = pp
                    .status_fds
                    .iter()
                    .map(|(child, fd)| crate::model::StatusFd {
                        child: Pid(*child),
                        fd: *fd,
                    })
                    .collect();
                if r.abi.build.is_none() {
                    r.abi = abi::Abi::for_process(Some(&pp.version), None, &r.maps);
                }
                for (tid, py) in &pp.threads {
                    match tid.and_then(|t| r.snap.threads.iter_mut().find(|x| x.tid.0 == t)) {
                        Some(t) => t.py = Some(py.clone()),
                        None => r.diags.push(Diagnostic {
                            pid: Some(r.snap.pid),
                            tid: None,
                            stage: Stage::Python,
                            kind: DiagKind::Failed,
                            message: format!(
                                "Python thread {:#x} ({}) could not be matched to an OS thread",
                                py.thread_id,
                                py.name.as_deref().unwrap_or("?")
                            ),
                        }),
                    }
                }
            }
            Some(Err((kind, msg))) => r.diags.push(Diagnostic {
                pid: Some(r.snap.pid),
                tid: None,
                stage: Stage::Python,
                kind: *kind,
                message: msg.clone(),
            }),
            None => {}
        }
    }
}

/// The one sentence a free-threaded target gets. py-spy cannot read these builds yet (a 32-byte
/// object header, per-object mutexes, no GIL), so Python stacks and object reads are skipped
/// rather than risk misreading them.
fn free_threaded_note(r: &Raw, b: abi::PyBuild) -> Diagnostic {
    let file = abi::interpreter_build(r.snap.exe.as_deref(), &r.maps)
        .map(|(_, f)| f)
        .or_else(|| r.snap.exe.clone())
        .unwrap_or_default();
    Diagnostic {
        pid: Some(r.snap.pid),
        tid: None,
        stage: Stage::Python,
        kind: DiagKind::NotPython,
        message: format!(
            "{} is a free-threaded CPython {} ({file}), whose Python stacks and objects mphang cannot read yet, so this report shows only what /proc allows: threads, system calls, pipes, sockets and semaphores.",
            r.snap.pid,
            b.label()
        ),
    }
}

/// One (pid, fd) through which each pipe inode can be queried: a write end when the tree holds
/// one (see [`fds::query_pipe`]: a write end is the safest to measure through).
fn pipe_refs(procs: &[Raw]) -> BTreeMap<Inode, (i32, i32)> {
    let mut m: BTreeMap<Inode, (i32, i32, bool)> = BTreeMap::new();
    for r in procs {
        for f in &r.snap.fds {
            if let Some(ino) = f.pipe_inode() {
                let write = f.access.can_write();
                let e = m.entry(ino).or_insert((r.snap.pid.0, f.fd, write));
                if write && !e.2 {
                    *e = (r.snap.pid.0, f.fd, write);
                }
            }
        }
    }
    m.into_iter().map(|(k, (p, f, _))| (k, (p, f))).collect()
}

/// The forkserver's command line (`-c 'from multiprocessing.forkserver import main; main(...)'`).
fn is_forkserver(r: &Raw) -> bool {
    r.snap
        .cmdline
        .iter()
        .any(|a| a.contains("multiprocessing.forkserver import main"))
}

fn assign_roles(procs: &mut [Raw], root: i32, layouts: &HashMap<i32, Option<String>>) {
    let cmd_has = |r: &Raw, s: &str| r.snap.cmdline.iter().any(|a| a.contains(s));
    let mut roles: HashMap<i32, Role> = HashMap::new();
    // Forkservers first: their children are told by parentage.
    for r in procs.iter() {
        if is_forkserver(r) {
            roles.insert(r.snap.pid.0, Role::Forkserver);
        }
    }
    for r in procs.iter() {
        let pid = r.snap.pid.0;
        let ppid = r.snap.ppid.0;
        let any_frame = |file: &str, func: &str| {
            r.snap
                .threads
                .iter()
                .any(|t| t.py.as_ref().is_some_and(|p| p.has_frame(file, func)))
        };
        let parent_is_forkserver = roles.get(&ppid) == Some(&Role::Forkserver);
        let role = if cmd_has(r, "multiprocessing.resource_tracker")
            || cmd_has(r, "multiprocessing.semaphore_tracker")
        {
            Role::ResourceTracker
        } else if roles.get(&pid) == Some(&Role::Forkserver) && !parent_is_forkserver {
            Role::Forkserver
        } else if any_frame("multiprocessing/pool.py", "worker") {
            Role::PoolWorker
        } else if any_frame("multiprocessing/managers.py", "serve_forever") {
            Role::ManagerServer
        } else if parent_is_forkserver {
            Role::ForkserverChild
        } else if cmd_has(r, "--multiprocessing-fork") {
            Role::SpawnChild
        } else if r.snap.python_version.is_none() && !looks_like_python(r) && !unreadable(r) {
            Role::NonPython
        } else if pid == root {
            Role::Main
        } else if layouts.get(&pid).cloned().flatten().is_some()
            && layouts.get(&pid) == layouts.get(&ppid)
        {
            Role::ForkChild
        } else if layouts.contains_key(&ppid) {
            Role::Python
        } else {
            Role::Main
        };
        roles.insert(pid, role);
    }
    for r in procs.iter_mut() {
        if let Some(role) = roles.get(&r.snap.pid.0) {
            r.snap.role = *role;
        }
    }
}

/// Native stacks of every live process, one cache for the tree (forked children share their
/// parent's files), all stops done by one ptrace helper process (`native::helper`) when the
/// binary provides one. Returns the longest time any thread was held stopped, in microseconds.
fn add_native(procs: &mut [Raw]) -> u64 {
    let mut cache = native::NativeCache::new();
    let mut stopper = native::Stopper::for_collection();
    let mut max_stop = std::time::Duration::ZERO;
    let mut holds = Vec::new();
    let me = std::process::id() as i32;
    for r in procs.iter_mut() {
        if r.snap.state == 'Z' || r.snap.pid.0 == me {
            continue;
        }
        let tids: Vec<Tid> = r.snap.threads.iter().map(|t| t.tid).collect();
        // The maps read moments ago by `read_process`: not read a second time.
        let maps: Vec<native::maps::MapEntry> =
            r.maps.iter().map(native::maps::MapEntry::from).collect();
        let sample = native::sample_with_stopper(
            r.snap.pid,
            &tids,
            &maps,
            &mut cache,
            &native::SampleOptions::default(),
            &mut stopper,
        );
        max_stop = max_stop.max(sample.max_stop);
        holds.extend(sample.holds);
        for nt in sample.threads {
            if let Some(t) = r.snap.threads.iter_mut().find(|t| t.tid == nt.tid) {
                t.native = Some(nt.frames);
            }
        }
        r.diags.extend(sample.diagnostics);
    }
    native::trace_holds(&holds, &stopper);
    max_stop.as_micros() as u64
}

/// For a process in another PID namespace, its threads' namespace TIDs mapped to mphang's
/// (through `NSpid`, [`native::ns_tid_map`]); empty for a process in mphang's namespace. TIDs
/// read from target memory (py-spy's thread ids, `struct pthread` tids, SemLock `last_tid`,
/// RLock owners) are namespace TIDs and go through this map.
pub(crate) fn ns_tids(p: &ProcessSnap) -> HashMap<i32, i32> {
    if p.ns_pid.is_none() {
        return HashMap::new();
    }
    native::ns_tid_map(p.pid)
        .into_iter()
        .map(|(ns, host)| (ns, host.0))
        .collect()
}

/// The TIDs of `p` as its own memory names them, and the way back to mphang's TIDs.
fn tid_space(p: &ProcessSnap) -> (Vec<i32>, HashMap<i32, i32>) {
    let map = ns_tids(p);
    if map.is_empty() {
        (p.threads.iter().map(|t| t.tid.0).collect(), map)
    } else {
        (map.keys().copied().collect(), map)
    }
}

/// Mutex owners read from target memory, and the child a wait4/waitid names, are ids of the
/// target's PID namespace. For processes in another namespace, map them to mphang's TIDs
/// through the `NSpid` lines of the tree's threads (an id not found in the tree keeps its
/// namespace value).
fn translate_ns_owners(procs: &mut [Raw]) {
    if procs.iter().all(|r| r.snap.ns_pid.is_none()) {
        return;
    }
    let mut map: HashMap<i32, Tid> = HashMap::new();
    for r in procs.iter().filter(|r| r.snap.ns_pid.is_some()) {
        map.extend(native::ns_tid_map(r.snap.pid));
    }
    for r in procs.iter_mut().filter(|r| r.snap.ns_pid.is_some()) {
        for t in &mut r.snap.threads {
            if let SyscallState::Blocked(s) = &mut t.syscall {
                match &mut s.decoded {
                    crate::model::Decoded::Futex(f) => {
                        if let Some(w) = &mut f.word {
                            if let Some(host) = map.get(&w.owner_tid) {
                                w.owner_tid = host.0;
                            }
                        }
                    }
                    // wait4/waitid name the child by its pid in the waiter's namespace.
                    crate::model::Decoded::WaitChild { pid: Some(c) } => {
                        if let Some(host) = map.get(&c.0) {
                            *c = Pid(host.0);
                        }
                    }
                    _ => {}
                }
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
