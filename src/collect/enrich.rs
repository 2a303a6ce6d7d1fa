//! The passes after the per-process reads: Python stacks (py-spy, layouts shared across forked
//! children), native stacks, the pipes the tree holds, and process roles.

use super::*;
use crate::model::{DiagKind, Diagnostic, Inode, Pid, Role, Stage, Tid};
use std::collections::{BTreeMap, HashMap};

/// A key equal for processes that share an address layout: exe plus the load addresses of the
/// exe and libpython. Forked (not exec'd) children match their parent.
pub(crate) fn layout_key(r: &Raw) -> Option<String> {
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

pub(crate) fn looks_like_python(r: &Raw) -> bool {
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
pub(crate) fn unreadable(r: &Raw) -> bool {
    r.maps.is_empty() && r.snap.state != 'Z'
}

pub(crate) fn add_python(procs: &mut [Raw], workers: usize) {
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
pub(crate) fn free_threaded_note(r: &Raw, b: abi::PyBuild) -> Diagnostic {
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
pub(crate) fn pipe_refs(procs: &[Raw]) -> BTreeMap<Inode, (i32, i32)> {
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
pub(crate) fn is_forkserver(r: &Raw) -> bool {
    r.snap
        .cmdline
        .iter()
        .any(|a| a.contains("multiprocessing.forkserver import main"))
}

pub(crate) fn assign_roles(procs: &mut [Raw], root: i32, layouts: &HashMap<i32, Option<String>>) {
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
pub(crate) fn add_native(procs: &mut [Raw]) -> u64 {
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
        let maps = &r.maps;
        let sample = native::sample_with_stopper(
            r.snap.pid,
            &tids,
            maps,
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
