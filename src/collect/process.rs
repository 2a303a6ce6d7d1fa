//! Reading one process from /proc: stat, status, threads with their decoded system calls,
//! scheduler counters, fds and maps (the per-process pass of a collection).

use super::procfs::{self, MapEntry};
use super::*;
use crate::model::{
    DiagKind, Diagnostic, Pid, ProcessSnap, Role, SemMapping, Stage, SyscallState, ThreadSnap, Tid,
};
use std::time::Duration;

/// Everything read about one process before Python and cross-process joins.
pub(crate) struct Raw {
    pub(crate) snap: ProcessSnap,
    pub(crate) maps: Vec<MapEntry>,
    /// Memory layouts of this process's CPython build and glibc.
    pub(crate) abi: abi::Abi,
    pub(crate) diags: Vec<Diagnostic>,
}

pub(crate) fn diag(pid: i32, stage: Stage, err: &std::io::Error) -> Diagnostic {
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

pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub(crate) fn read_text(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Reads one process: /proc files, threads with decoded syscalls, fds, maps.
pub(crate) fn read_process(pid: i32, tables: &fds::Tables) -> std::result::Result<Raw, Diagnostic> {
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
    // A parent whose table was begun at least a tick after this process started (so after it
    // was forked) lends it its inherited fds.
    let parent = tables
        .get(st.ppid)
        .filter(|(read_at, _)| st.start_ticks + 1 < *read_at);
    let read_at = fds::boot_ticks();
    let fd_list = match fds::read_fds_from(pid, parent.as_ref().map(|(_, f)| (st.ppid, &f[..]))) {
        Ok(f) => {
            tables.put(pid, read_at, std::sync::Arc::new(f.clone()));
            f
        }
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
                native_as: None,
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
            fds_as: None,
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
pub(crate) fn gil_wait_of_runnable(
    ctx: &decode::DecodeCtx<'_>,
    tb: &str,
) -> Option<(char, SyscallState)> {
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
