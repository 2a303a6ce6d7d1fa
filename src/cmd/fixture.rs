//! Starting a fixture program and waiting until it is hung: used by `mphang demo` and the tests.
//!
//! A fixture writes a ready file (`MPHANG_READY`) once its hang is arranged, naming pids and the
//! syscalls its threads must be blocked in; [`Fixture::start`] waits for the file, then polls
//! `/proc` until every expectation holds and the named threads' syscall lines stay unchanged
//! over three polls. Never a fixed sleep. The fixture runs in its own
//! process group, which [`Drop`] kills and reaps.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ready file a fixture writes.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub fixture: String,
    pub python: String,
    /// Named pids (or lists of pids, or TIDs for names ending in `_tid`).
    pub pids: BTreeMap<String, serde_json::Value>,
    /// `[pid, tid (0 = any thread), [syscall numbers]]`.
    pub blocked: Vec<(i32, i32, Vec<i64>)>,
    #[serde(default)]
    pub gone: Vec<i32>,
}

impl Ready {
    /// The pid (or TID) named `name`.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.pids.get(name)?.as_i64().map(|v| v as i32)
    }
}

/// A running fixture; dropping it kills its whole process group and reaps it.
pub struct Fixture {
    child: Child,
    pub pgid: i32,
    pub ready: Ready,
    /// The ready file and the fixture's `TMPDIR`; removed when the fixture is dropped.
    dir: tempfile::TempDir,
}

fn syscall_nr(pid: i32, tid: i32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => crate::collect::procfs::parse_stat(&s).is_none_or(|st| st.state == 'Z'),
        Err(_) => true,
    }
}

fn expectation_met(pid: i32, tid: i32, nrs: &[i64]) -> bool {
    if tid != 0 {
        return syscall_nr(pid, tid).is_some_and(|n| nrs.contains(&n));
    }
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                    .and_then(|t| syscall_nr(pid, t))
                    .is_some_and(|n| nrs.contains(&n))
            })
        })
        .unwrap_or(false)
}

impl Fixture {
    /// Starts `python script` and waits (up to `deadline`) until the fixture is ready and every
    /// expectation in its ready file holds.
    pub fn start(python: &Path, script: &Path, deadline: Duration) -> Result<Fixture, String> {
        Self::start_with_env(python, script, deadline, &[])
    }

    /// [`Fixture::start`] with extra environment variables (e.g. `MPHANG_START_METHOD`, `MPHANG_NOISE=1`).
    pub fn start_with_env(
        python: &Path,
        script: &Path,
        deadline: Duration,
        env: &[(&str, &str)],
    ) -> Result<Fixture, String> {
        let dir = tempfile::Builder::new()
            .prefix("mphang-fx-")
            .tempdir()
            .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
        let ready_path = dir.path().join("ready.json");
        let child = Command::new(python)
            .arg(script)
            .env("MPHANG_READY", &ready_path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // multiprocessing's `pymp-*` directories and forkserver sockets go in the scratch
            // directory: a killed fixture cannot remove them itself.
            .env("TMPDIR", dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} {}: {e}",
                    python.display(),
                    script.display()
                )
            })?;
        let pgid = child.id() as i32;
        let mut fx = Fixture {
            child,
            pgid,
            ready: Ready {
                fixture: String::new(),
                python: String::new(),
                pids: BTreeMap::new(),
                blocked: Vec::new(),
                gone: Vec::new(),
            },
            dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                fx.ready = serde_json::from_str(&text)
                    .map_err(|e| format!("bad ready file from {}: {e}", script.display()))?;
                break;
            }
            if let Ok(Some(status)) = fx.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = fx.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "{} exited ({status}) before it was ready: {}",
                    script.display(),
                    err.trim()
                ));
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{} was not ready within {deadline:?}",
                    script.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        loop {
            let pending: Vec<String> = fx
                .ready
                .blocked
                .iter()
                .filter(|(p, t, nrs)| !expectation_met(*p, *t, nrs))
                .map(|(p, t, nrs)| {
                    format!(
                        "{p}/{t} in {nrs:?} (now {:?})",
                        syscall_nr(*p, if *t == 0 { *p } else { *t })
                    )
                })
                .chain(
                    fx.ready
                        .gone
                        .iter()
                        .filter(|p| !gone(**p))
                        .map(|p| format!("{p} gone")),
                )
                .collect();
            if pending.is_empty() && fx.settled() {
                return Ok(fx);
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "{}: expectations not met within {deadline:?}: {}",
                    script.display(),
                    pending.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True once every named thread's syscall line (number, arguments, stack and program
    /// counter) stays identical over three polls 20 ms apart: a thread passing through the
    /// expected syscall on its way elsewhere (e.g. to an atexit handler) is not yet hung.
    fn settled(&self) -> bool {
        let lines = || -> Vec<Option<String>> {
            self.ready
                .blocked
                .iter()
                .filter(|(_, t, _)| *t != 0)
                .map(|(p, t, _)| {
                    std::fs::read_to_string(format!("/proc/{p}/task/{t}/syscall")).ok()
                })
                .collect()
        };
        let first = lines();
        (0..3).all(|_| {
            std::thread::sleep(Duration::from_millis(20));
            lines() == first
        })
    }

    /// The fixture's own scratch directory (where its ready file is).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the fixture's first process.
    pub fn root(&self) -> i32 {
        self.pgid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own process group; harmless if it is already gone.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        // Wait (bounded) until no member of the group is left.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            // SAFETY: signal 0 only checks whether the group still has members.
            let alive = unsafe { libc::kill(-self.pgid, 0) } == 0;
            if !alive {
                break;
            }
            // SAFETY: as above; re-kill members that raced with the first signal.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
