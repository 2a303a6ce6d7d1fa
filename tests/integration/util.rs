//! Shared test helpers: the built binary; the Pythons on this machine and the (Python, start
//! method) matrix live cases run on, concurrently; fixture guards (via
//! `mphang::cmd::fixture`); and reading `# CULPRIT` markers and declared start methods from
//! fixture sources.
//!
//! Pythons: every CPython 3.8–3.15 under `$(pyenv root)/versions/3.N.*` and
//! `/opt/cpython/3.N/bin/python3` (what `scripts/get-cpython.sh` installs). A missing one is
//! written straight to the terminal (not captured by the harness); under `CI=true` it fails
//! `every_expected_python_is_present` unless `MPHANG_ALLOW_MISSING=3.9,3.10` lists it.
//!
//! The matrix (`runs`): every start method the fixture applies to on the oldest and newest
//! Python present, each version's default method on the others (fork up to 3.13, forkserver
//! from 3.14; a fork-only fixture runs fork). `MPHANG_TEST_PYTHONS=3.11,3.15` and
//! `MPHANG_TEST_METHODS=forkserver` narrow it; `MPHANG_TEST_FULL=1` runs every method on every
//! Python (the compatibility table). Runs of one case go concurrently, at most
//! `MPHANG_TEST_JOBS` (default 3) fixtures alive at once across the whole test binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

pub use mphang::cmd::fixture::Fixture;

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mphang"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_path(name: &str) -> PathBuf {
    repo().join("fixtures").join(format!("{name}.py"))
}

/// Writes a line to the terminal even while the harness captures test output.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The pyenv root: `$PYENV_ROOT` or `~/.pyenv`.
pub fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        })
}

/// Where `scripts/get-cpython.sh` puts 3.14 and 3.15.
pub fn opt_root() -> PathBuf {
    std::env::var_os("CPY_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/cpython"))
}

/// The CPython minor versions the tests expect (3.8 to 3.15).
pub const EXPECTED: std::ops::RangeInclusive<u8> = 8..=15;

/// One interpreter found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// 14 for 3.14.
    pub minor: u8,
    pub path: PathBuf,
    /// `3.14.10`, as the interpreter says.
    pub version: String,
}

impl Python {
    /// `3.14`.
    pub fn label(&self) -> String {
        format!("3.{}", self.minor)
    }
    /// The start method `multiprocessing` uses on Linux when none is asked for.
    pub fn default_method(&self) -> Method {
        if self.minor >= 14 {
            Method::Forkserver
        } else {
            Method::Fork
        }
    }
}

/// A multiprocessing start method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Fork,
    Spawn,
    Forkserver,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Fork, Method::Spawn, Method::Forkserver];
    pub fn name(self) -> &'static str {
        match self {
            Method::Fork => "fork",
            Method::Spawn => "spawn",
            Method::Forkserver => "forkserver",
        }
    }
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s.trim())
    }
}

/// What discovery found: the interpreters and the expected minors that are missing.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub found: Vec<Python>,
    pub missing: Vec<u8>,
}

fn list_csv(var: &str) -> Option<Vec<String>> {
    std::env::var(var)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
}

/// Every CPython 3.8–3.15 on this machine (newest patch release per minor), found once.
pub fn discovery() -> &'static Discovery {
    static D: OnceLock<Discovery> = OnceLock::new();
    D.get_or_init(|| {
        let versions = pyenv_root().join("versions");
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for minor in EXPECTED {
            let want = format!("3.{minor}.");
            let pyenv = std::fs::read_dir(&versions).ok().and_then(|rd| {
                let mut v: Vec<(Vec<u32>, PathBuf)> = rd
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        let patch = name.strip_prefix(&want)?;
                        let patch: u32 = patch.parse().ok()?; // skips 3.14t, 3.13-dev
                        Some((vec![patch], e.path().join("bin").join("python3")))
                    })
                    .filter(|(_, p)| p.exists())
                    .collect();
                v.sort();
                v.pop().map(|(_, p)| p)
            });
            let opt = opt_root()
                .join(format!("3.{minor}"))
                .join("bin")
                .join("python3");
            match pyenv.or_else(|| opt.exists().then_some(opt)) {
                Some(path) => {
                    let version = Command::new(&path)
                        .args(["-c", "import platform; print(platform.python_version())"])
                        .output()
                        .ok()
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                        .filter(|v| v.starts_with(&format!("3.{minor}.")));
                    match version {
                        Some(version) => found.push(Python {
                            minor,
                            path,
                            version,
                        }),
                        None => missing.push(minor),
                    }
                }
                None => missing.push(minor),
            }
        }
        for m in &missing {
            loud(&format!(
                "SKIPPED: CPython 3.{m} not found under {} or {} (pyenv install 3.{m}, or scripts/get-cpython.sh for 3.14/3.15)",
                versions.display(),
                opt_root().display()
            ));
        }
        Discovery { found, missing }
    })
}

/// Missing expected Pythons that `MPHANG_ALLOW_MISSING` does not allow.
pub fn missing_not_allowed() -> Vec<String> {
    let allowed = list_csv("MPHANG_ALLOW_MISSING").unwrap_or_default();
    discovery()
        .missing
        .iter()
        .map(|m| format!("3.{m}"))
        .filter(|v| !allowed.contains(v))
        .collect()
}

/// The Pythons to test with: discovery, narrowed by `MPHANG_TEST_PYTHONS`.
pub fn pythons() -> Vec<Python> {
    let only = list_csv("MPHANG_TEST_PYTHONS");
    discovery()
        .found
        .iter()
        .filter(|p| only.as_ref().is_none_or(|o| o.contains(&p.label())))
        .cloned()
        .collect()
}

/// The start methods a fixture declares in its docstring (`Start methods: fork (why)`); all
/// three when it declares none; none for `any` (no child process: the method does not apply).
pub fn fixture_methods(name: &str) -> Vec<Method> {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap_or_default();
    text.lines()
        .take_while(|l| !l.starts_with("import") && !l.starts_with("from "))
        .find_map(|l| l.trim().strip_prefix("Start methods:"))
        .map(|rest| {
            let list = rest.split('(').next().unwrap_or("");
            list.split(',').filter_map(Method::parse).collect()
        })
        .unwrap_or_else(|| Method::ALL.to_vec())
}

/// One live run: a fixture on one Python with one start method, plus extra environment.
#[derive(Debug, Clone)]
pub struct Run {
    pub python: Python,
    pub method: Method,
    pub env: Vec<(String, String)>,
}

impl Run {
    /// `3.14/forkserver`, for assertion messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.python.label(), self.method.name())
    }
}

/// The matrix for a fixture applying to `methods` (see the module doc).
pub fn runs(methods: &[Method]) -> Vec<Run> {
    let pys = pythons();
    let full = std::env::var_os("MPHANG_TEST_FULL").is_some();
    let only: Option<Vec<Method>> = list_csv("MPHANG_TEST_METHODS")
        .map(|v| v.iter().filter_map(|m| Method::parse(m)).collect());
    let (lo, hi) = (
        discovery().found.first().map(|p| p.minor),
        discovery().found.last().map(|p| p.minor),
    );
    let mut out = Vec::new();
    for py in pys {
        let edge = Some(py.minor) == lo || Some(py.minor) == hi;
        let chosen: Vec<Method> = if methods.is_empty() {
            vec![py.default_method()]
        } else if full || edge {
            methods.to_vec()
        } else if methods.contains(&py.default_method()) {
            vec![py.default_method()]
        } else {
            methods.first().copied().into_iter().collect()
        };
        for m in chosen {
            if only.as_ref().is_some_and(|o| !o.contains(&m)) {
                continue;
            }
            out.push(Run {
                python: py.clone(),
                method: m,
                env: Vec::new(),
            });
        }
    }
    out
}

/// At most this many fixtures alive at once across the test binary.
fn jobs() -> usize {
    std::env::var("MPHANG_TEST_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static S: OnceLock<Slots> = OnceLock::new();
    S.get_or_init(|| Slots {
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

/// Slots held while a fixture runs (all of them for a CPU-bound fixture).
pub struct Slot(usize);

impl Slot {
    pub fn take(n: usize) -> Slot {
        let n = n.clamp(1, jobs());
        let s = slots();
        let mut used = s.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + n > jobs() {
            used = s.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
        Slot(n)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let s = slots();
        let mut used = s.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.0);
        s.freed.notify_all();
    }
}

/// How a case's runs share the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Hung fixtures mostly wait: run next to others.
    Concurrent,
    /// Burns CPU (a busy loop, a busy Pool): run alone, so that neither it nor the others
    /// are starved by the test suite itself.
    Alone,
}

/// Runs `check` for every run concurrently (bounded by `MPHANG_TEST_JOBS`), then fails with
/// every failing run's message. No runs (no Python found) is a loud skip. With
/// `MPHANG_COMPAT_OUT=file` each outcome is also appended to that file as a JSON line
/// (`scripts/compat.py` turns them into docs/compatibility.md).
pub fn each_run(
    what: &str,
    expect: &str,
    runs: Vec<Run>,
    share: Share,
    check: impl Fn(&Run) + Sync,
) {
    if runs.is_empty() {
        loud(&format!("SKIPPED: {what}: no Python to run it with"));
        return;
    }
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|r| {
                let check = &check;
                s.spawn(move || {
                    let _slot = Slot::take(if share == Share::Alone { usize::MAX } else { 1 });
                    check(r)
                })
            })
            .collect();
        runs.iter()
            .zip(handles)
            .filter_map(|(r, h)| {
                let failed = h.join().err().map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                });
                record(what, expect, r, failed.as_deref());
                failed.map(|msg| format!("{what} on {}: {msg}", r.label()))
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Appends one outcome to `MPHANG_COMPAT_OUT`, when set.
fn record(what: &str, expect: &str, r: &Run, failed: Option<&str>) {
    let Some(path) = std::env::var_os("MPHANG_COMPAT_OUT") else {
        return;
    };
    let line = serde_json::json!({
        "fixture": what,
        "expect": expect,
        "minor": r.python.minor,
        "version": r.python.version,
        "method": r.method.name(),
        "default": r.method == r.python.default_method(),
        "ok": failed.is_none(),
        "error": failed.map(|m| m.lines().next().unwrap_or("").to_string()),
    });
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts a fixture with this Python's default start method and waits until it is hung (or
/// ready, for negative controls).
pub fn start(python: &Path, name: &str) -> Fixture {
    start_with(python, name, &[])
}

/// Starts a fixture for `run` (its start method and extra environment).
pub fn start_run(run: &Run, name: &str) -> Fixture {
    start_run_noise(run, name, false)
}

/// [`start_run`], with the noise threads and processes of [`NOISE`] when `noise`.
pub fn start_run_noise(run: &Run, name: &str, noise: bool) -> Fixture {
    let mut env: Vec<(&str, &str)> = vec![("MPHANG_START_METHOD", run.method.name())];
    env.extend(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if noise {
        env.extend(NOISE.iter().copied());
    }
    start_with(&run.python.path, name, &env)
}

/// Starts a fixture with extra environment variables (e.g. [`NOISE`]).
pub fn start_with(python: &Path, name: &str, env: &[(&str, &str)]) -> Fixture {
    match Fixture::start_with_env(python, &fixture_path(name), Duration::from_secs(90), env) {
        Ok(f) => f,
        Err(e) => panic!("fixture {name} with {}: {e}", python.display()),
    }
}

/// The environment that makes every fixture process carry noise threads and processes
/// (`fixtures/_fixture.py`, `start_noise`).
pub const NOISE: &[(&str, &str)] = &[("MPHANG_NOISE", "1")];

/// Whether `run` of `fixture` is repeated with noise. Default: on the oldest and the newest
/// Python for every fixture, and for the fixtures in `subset` on the others; each time with
/// the Python's default start method only (the other methods run without noise).
/// `MPHANG_TEST_NOISE=all` runs noise on every run, `off` on none.
pub fn noise_on(run: &Run, fixture: &str, subset: &[&str]) -> bool {
    match std::env::var("MPHANG_TEST_NOISE").as_deref() {
        Ok("off") => false,
        Ok("all") => true,
        _ => {
            let found = &discovery().found;
            let edge = found.first().is_some_and(|p| p.minor == run.python.minor)
                || found.last().is_some_and(|p| p.minor == run.python.minor);
            let default = run.method == run.python.default_method()
                || !fixture_methods(fixture).contains(&run.python.default_method());
            default && (edge || subset.contains(&fixture))
        }
    }
}

/// Runs `mphang report --json <pid>` and returns (exit code, parsed report).
pub fn report_json(pid: i32, extra: &[&str]) -> (i32, mphang::render::Report) {
    let out = bin()
        .arg("report")
        .arg(pid.to_string())
        .arg("--json")
        .args(extra)
        .output()
        .expect("run mphang");
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(dir) = std::env::var_os("MPHANG_TEST_KEEP") {
        // Debugging aid: keep every report.
        let _ = std::fs::write(PathBuf::from(dir).join(format!("{pid}.json")), &*text);
    }
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) {
        crate::schema::assert_valid_report(&doc, &format!("report of {pid}"));
    }
    let report = mphang::render::json::parse_report(&text).unwrap_or_else(|e| {
        panic!(
            "report for {pid} is not valid JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run mphang")
}

/// The 1-based line numbers of lines ending with `# MARK` in a fixture.
pub fn marked_lines(name: &str, mark: &str) -> Vec<i32> {
    let text = std::fs::read_to_string(fixture_path(name)).expect("read fixture");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&format!("# {mark}")))
        .map(|(i, _)| i as i32 + 1)
        .collect()
}

/// The 1-based line number of the first line containing `needle`.
pub fn line_of(name: &str, needle: &str) -> i32 {
    let text = std::fs::read_to_string(fixture_path(name)).expect("read fixture");
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as i32 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in fixture {name}"))
}

/// Under `CI=true` every expected CPython must be present (or allowed missing); elsewhere a
/// missing one is a loud skip.
#[test]
fn every_expected_python_is_present() {
    let d = discovery();
    let found: Vec<String> = d
        .found
        .iter()
        .map(|p| format!("{} ({})", p.label(), p.path.display()))
        .collect();
    loud(&format!("Pythons under test: {}", found.join(", ")));
    let bad = missing_not_allowed();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            bad.is_empty(),
            "CPython {} expected but not found under {} or {}; install them (scripts/get-cpython.sh for 3.14/3.15) or list them in MPHANG_ALLOW_MISSING",
            bad.join(", "),
            pyenv_root().join("versions").display(),
            opt_root().display()
        );
    }
}

#[test]
fn the_matrix_covers_every_method_at_the_edges_and_defaults_between() {
    let methods = fixture_methods("join_before_drain");
    assert_eq!(methods, Method::ALL.to_vec());
    assert_eq!(fixture_methods("fork_inherited_lock"), vec![Method::Fork]);
    assert_eq!(fixture_methods("neg_sleep"), Vec::<Method>::new());
    let runs = runs(&Method::ALL);
    let pys = pythons();
    let narrowed = [
        "MPHANG_TEST_METHODS",
        "MPHANG_TEST_PYTHONS",
        "MPHANG_TEST_FULL",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if narrowed || pys.len() < 3 {
        return;
    }
    for p in &pys[1..pys.len() - 1] {
        let here: Vec<Method> = runs
            .iter()
            .filter(|r| r.python == *p)
            .map(|r| r.method)
            .collect();
        assert_eq!(here, vec![p.default_method()], "{}", p.label());
    }
    for p in [&pys[0], &pys[pys.len() - 1]] {
        assert_eq!(runs.iter().filter(|r| r.python == *p).count(), 3);
    }
}

/// A scratch directory from tempfile, removed on Drop; derefs to its path.
pub struct TempDir(tempfile::TempDir);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// A fresh scratch directory named `mphang-<name>-XXXXXX`, removed when the guard is dropped.
pub fn tempdir(name: &str) -> TempDir {
    TempDir(
        tempfile::Builder::new()
            .prefix(&format!("mphang-{name}-"))
            .tempdir()
            .expect("scratch dir"),
    )
}

/// The visible subcommands, from the CLI's own grammar (one list for every test that walks them).
pub fn commands() -> Vec<String> {
    use clap::CommandFactory;
    mphang::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

/// (language, code, line of the opening fence) of every fenced block.
pub fn markdown_blocks(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(lang)) => cur = Some((lang.trim().to_string(), String::new(), i + 1)),
            (Some(_), Some(_)) => out.extend(cur.take()),
            (Some((_, code, _)), None) => {
                code.push_str(line);
                code.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The `--options` used after `mphang <sub>` in a shell block or a workflow step (continuation
/// lines joined; the command after `--` is not mphang's).
pub fn mphang_options(code: &str) -> Vec<(String, String)> {
    let joined = code.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut words = line.split_whitespace().skip_while(|w| *w != "mphang");
        if words.next().is_none() {
            continue;
        }
        let Some(sub) = words.next() else { continue };
        for w in words.take_while(|w| !matches!(*w, "--" | "||" | "|" | ">" | "&&" | ";")) {
            if let Some(opt) = w.strip_prefix("--") {
                let name = opt.split('=').next().unwrap_or(opt);
                out.push((sub.to_string(), format!("--{name}")));
            }
        }
    }
    out
}
