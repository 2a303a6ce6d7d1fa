//! Integration tests: native stacks (ptrace + framehop + symbols) against live Python targets
//! from `fixtures/native_targets.py`. They need ptrace rights on the children (root here) and
//! skip loudly otherwise. Each target runs in its own process group, killed and reaped on Drop.
//! This file holds the shared helpers; the tests are in `native/{stacks,safety,perf}.rs`.

mod perf;
mod safety;
mod stacks;

use mphang::collect::native;
use mphang::model::{DiagKind, Tid};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PY311: &str = "/root/.pyenv/versions/3.11.7/bin/python3";
pub(crate) const PY313: &str = "/root/.pyenv/versions/3.13.0/bin/python3";
pub(crate) const PY310: &str = "/root/.pyenv/versions/3.10.13/bin/python3";
pub(crate) const PY38: &str = "/root/.pyenv/versions/3.8.18/bin/python3";
pub(crate) const SAMPLER_ENV: &str = "MPHANG_NATIVE_SAMPLER_PID";

pub(crate) fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/native_targets.py")
}

/// A fresh directory per call (unique even when two tests pass the same name: tests run in
/// parallel and each fixture's readiness file lives here).
/// Removed when dropped (tempfile).
pub(crate) fn scratch(name: &str) -> crate::util::TempDir {
    crate::util::tempdir(&format!("native-{name}"))
}

/// A fixture process in its own process group; Drop kills the whole group and reaps the leader.
pub(crate) struct Target {
    pub(crate) child: Child,
    ready: PathBuf,
}

impl Target {
    pub(crate) fn start(python: &str, mode: &str, dir: &Path, arg: Option<&str>) -> Option<Target> {
        Self::start_wrapped(&[], python, mode, dir, arg.as_slice())
    }

    /// Like `start`, with the interpreter run under `wrapper` (e.g. `unshare --pid --fork`) and
    /// any number of mode arguments.
    pub(crate) fn start_wrapped(
        wrapper: &[&str],
        python: &str,
        mode: &str,
        dir: &Path,
        args: &[&str],
    ) -> Option<Target> {
        if !Path::new(python).exists() {
            eprintln!("skipping: {python} not installed");
            return None;
        }
        let ready = dir.join(format!("{mode}.ready"));
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(python);
                c
            }
            None => Command::new(python),
        };
        cmd.arg(fixture()).arg(mode).arg(&ready).args(args);
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn python fixture");
        Some(Target { child, ready })
    }

    /// Waits for the readiness file (the fixture writes it once it is wedged).
    pub(crate) fn wait_ready(&mut self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.ready) {
                return s
                    .split_whitespace()
                    .map(|x| x.parse().expect("pid"))
                    .collect();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("fixture exited early: {st}");
            }
            assert!(Instant::now() < deadline, "fixture never became ready");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the fixture's own process group only.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn tids_of(pid: i32) -> Vec<Tid> {
    let mut v: Vec<Tid> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .map(Tid)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn state_of(pid: i32, tid: Tid) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", tid.0)).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Samples once and reports whether ptrace was refused (then the caller skips loudly).
pub(crate) fn denied(s: &native::NativeSample) -> bool {
    let d = s
        .diagnostics
        .iter()
        .any(|d| d.kind == DiagKind::PermissionDenied);
    if d {
        eprintln!("skipping: ptrace not permitted here: {:?}", s.diagnostics);
    }
    d
}

pub(crate) fn fn_names(t: &native::NativeThread) -> Vec<String> {
    t.frames
        .iter()
        .map(|f| {
            format!(
                "{} [{}] {}:{}",
                f.function.as_deref().unwrap_or("?"),
                f.module.as_deref().unwrap_or("?"),
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            )
        })
        .collect()
}

pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in tids_of(pid) {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{}/children", t.0)) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

pub(crate) fn counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
