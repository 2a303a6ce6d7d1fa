//! Integration tests: the pytest plugin (python/mphang/pytest_plugin.py) and `mphang watch`, in
//! real pytest sessions of tests/pytest/*.py: a session with one hanging multiprocessing test
//! ends in time with that test failed by mphang's finding, the other tests run and nothing is
//! left running; the same under pytest-xdist and with pytest-timeout; a test blocked in C code
//! with the GIL held ends the session with one clear line.
//!
//! pytest, pytest-timeout and pytest-xdist come from a venv made on first use under
//! `target/tmp/pytest-venv` (pip, so it needs the network once), or from `$MPHANG_PYTEST_VENV`.
//! Without one the tests skip loudly, and fail under CI=true. The plugin is loaded from the
//! source tree (`-p mphang.pytest_plugin`, `MPHANG_BIN` = the binary under test); the wheel's
//! entry point is checked by `.ci/run`.

use crate::run::{alive, python, recorded_pids, Scratch};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid as NixPid;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What the venv is made with; a venv made with other pins is made again.
const PINS: &[&str] = &[
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "pytest-xdist==3.8.0",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of a venv with pytest, pytest-timeout and pytest-xdist, made once per test run.
fn venv_python() -> Option<&'static Path> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| match make_venv() {
        Ok(py) => Some(py),
        Err(why) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "no venv with pytest for the plugin tests under CI=true: {why}"
            );
            eprintln!("skipping the pytest plugin tests: {why}");
            None
        }
    })
    .as_deref()
}

fn make_venv() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MPHANG_PYTEST_VENV") {
        let py = PathBuf::from(dir).join("bin/python");
        return py
            .exists()
            .then_some(py)
            .ok_or_else(|| "$MPHANG_PYTEST_VENV has no bin/python".into());
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pytest-venv");
    let py = dir.join("bin/python");
    let stamp = dir.join("mphang-pins.txt");
    let want = PINS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && py.exists() {
        return Ok(py);
    }
    let base = python().ok_or("no python3 to make a venv with")?;
    let _ = std::fs::remove_dir_all(&dir);
    let run = |cmd: &mut Command| -> Result<(), String> {
        let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        o.status.success().then_some(()).ok_or_else(|| {
            format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )
        })
    };
    run(Command::new(&base).args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PINS))?;
    std::fs::write(&stamp, want).map_err(|e| e.to_string())?;
    Ok(py)
}

macro_rules! require_venv {
    () => {
        match venv_python() {
            Some(p) => p,
            None => return,
        }
    };
}

/// `mphang watch` processes writing into `report_dir` (the watchers of one session).
fn watchers(report_dir: &Path) -> Vec<i32> {
    let needle = report_dir.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            words.iter().any(|w| w == "watch") && words.contains(&needle)
        })
        .collect()
}

/// One pytest session: its output, how long it took, and what it recorded.
struct Session {
    dir: Scratch,
    output: Output,
    took: Duration,
}

impl Session {
    /// Runs `pytest -p mphang.pytest_plugin FILE ARGS` in a scratch directory with a copy of
    /// tests/pytest/FILE, in its own process group; on the way out, kills whatever the session
    /// (or its watchers) left behind, so a failing test leaves nothing running either.
    fn run(py: &Path, name: &str, file: &str, args: &[&str]) -> Session {
        let dir = Scratch::new(&format!("pytest-{name}"));
        std::fs::copy(repo().join("tests/pytest").join(file), dir.path(file)).expect("copy");
        let reports = dir.path("mphang-report");
        let started = Instant::now();
        let mut cmd = Command::new(py);
        use std::os::unix::process::CommandExt;
        cmd.current_dir(&dir.0)
            .args([
                "-m",
                "pytest",
                "-p",
                "mphang.pytest_plugin",
                "-p",
                "no:cacheprovider",
            ])
            .args(["-rA", "--color=no", file])
            .args(args)
            .env("PYTHONPATH", repo().join("python"))
            .env("MPHANG_BIN", env!("CARGO_BIN_EXE_mphang"))
            .env("MPHANG_PIDS", dir.path("pids"))
            .env_remove("PYTEST_ADDOPTS")
            .env_remove("GITHUB_ACTIONS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().expect("start pytest");
        let group = NixPid::from_raw(child.id() as i32);
        // At most a minute: far above the 20 s the tests allow.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            let _ = killpg(group, Signal::SIGKILL);
        });
        let output = child.wait_with_output().expect("wait for pytest");
        let took = started.elapsed();
        drop(killer);
        eprintln!("pytest session {name} took {took:?}");
        let session = Session { dir, output, took };
        // Watchers exit as soon as pytest is gone; give them a moment before the check.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !watchers(&reports).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        session
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn report_dir(&self, test: &str) -> PathBuf {
        self.dir.path("mphang-report").join(test)
    }

    /// Nothing the session started is still running: the recorded pids (pytest, the hung
    /// test's child) and the watchers.
    fn assert_nothing_left(&self) {
        for (role, pid) in recorded_pids(&self.dir.path("pids")) {
            assert!(
                !alive(pid),
                "{role} {pid} is still running after pytest ended"
            );
        }
        let left = watchers(&self.dir.path("mphang-report"));
        assert!(left.is_empty(), "watchers still running: {left:?}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, pid) in recorded_pids(&self.dir.path("pids")) {
            let _ = kill(NixPid::from_raw(pid), Signal::SIGKILL);
        }
        for pid in watchers(&self.dir.path("mphang-report")) {
            let _ = kill(NixPid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The line of tests/pytest/FILE marked `# CULPRIT`.
fn culprit_line(file: &str) -> usize {
    let text = std::fs::read_to_string(repo().join("tests/pytest").join(file)).expect("read");
    text.lines()
        .position(|l| l.contains("# CULPRIT"))
        .map(|i| i + 1)
        .expect("a # CULPRIT line")
}

/// The acceptance: within 20 s, the hanging test failed with mphang's finding (pattern and
/// culprit line first), the tests around it passed, the report written, nothing left running.
fn assert_hang_failed_by_mphang(s: &Session, why: &str) {
    let (out, err) = (s.stdout(), s.stderr());
    let ctx = format!("stdout:\n{out}\nstderr:\n{err}");
    assert!(
        s.took < Duration::from_secs(20),
        "the session took {:?}; {ctx}",
        s.took
    );
    assert_eq!(s.output.status.code(), Some(1), "{ctx}");
    for line in [
        "PASSED test_hangs.py::test_before",
        "FAILED test_hangs.py::test_join_before_drain",
        "PASSED test_hangs.py::test_after",
    ] {
        assert!(out.contains(line), "no `{line}`; {ctx}");
    }
    let headline = format!(
        "Failed: mphang: join_before_drain at test_hangs.py:{} ({why})",
        culprit_line("test_hangs.py")
    );
    assert!(out.contains(&headline), "no `{headline}`; {ctx}");
    assert!(out.contains("fix: Drain before you join"), "{ctx}");
    let dir = s.report_dir("test_hangs.py__test_join_before_drain");
    assert!(dir.join("report.txt").exists(), "no report.txt; {ctx}");
    let json = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    crate::schema::assert_valid_report(&serde_json::from_str(&json).expect("json"), "report");
    let recorded = recorded_pids(&s.dir.path("pids"));
    assert!(
        recorded.iter().any(|(r, _)| r == "child"),
        "the hung test's child did not record itself: {recorded:?}"
    );
    s.assert_nothing_left();
}

/// The ini option (`mphang_timeout = 6` in pytest.ini, here through `-o`) turns the plugin on
/// like the command-line option.
#[test]
fn the_ini_option_turns_the_plugin_on() {
    let py = require_venv!();
    let s = Session::run(py, "ini", "test_hangs.py", &["-o", "mphang_timeout=6"]);
    assert_hang_failed_by_mphang(&s, "timed out after 6s");
}

#[test]
fn a_hanging_test_fails_with_its_finding_and_the_session_goes_on() {
    let py = require_venv!();
    let s = Session::run(py, "plain", "test_hangs.py", &["--mphang-timeout=10"]);
    assert_hang_failed_by_mphang(&s, "timed out after 10s");
    assert!(
        s.stdout()
            .contains("mphang: timeout 10s per test, watcher pid"),
        "{}",
        s.stdout()
    );
}

#[test]
fn under_xdist_each_worker_is_watched() {
    let py = require_venv!();
    let s = Session::run(
        py,
        "xdist",
        "test_hangs.py",
        &["--mphang-timeout=10", "-n", "2"],
    );
    assert_hang_failed_by_mphang(&s, "timed out after 10s");
    // The controller runs no test and starts no watcher; it says so in its header.
    assert!(
        s.stdout()
            .contains("mphang: off (this is the pytest-xdist controller"),
        "{}",
        s.stdout()
    );
}

#[test]
fn with_pytest_timeout_mphang_fires_first() {
    let py = require_venv!();
    // pytest-timeout's default (signal) method at 12 s: mphang arms 5 s earlier, at 7 s, and
    // its failure is the one reported; pytest-timeout never fires.
    let s = Session::run(
        py,
        "pt-signal",
        "test_hangs.py",
        &["--mphang-timeout=10", "--timeout=12"],
    );
    assert_hang_failed_by_mphang(&s, "timed out after 7s");
    assert!(!s.stdout().contains("Timeout (>12"), "{}", s.stdout());
}

#[test]
fn with_pytest_timeouts_thread_method_mphang_fires_first_and_names_the_hang() {
    let py = require_venv!();
    // The thread method ends pytest with os._exit(1) at its deadline, which would lose the
    // stuck child unexamined and skip the remaining tests. mphang fires first, at 7 s. The
    // timer thread pytest-timeout leaves waiting in the pytest process is a known periodic
    // loop (a threading.Timer), assumed not to read the pipe the child fills: the verdict is
    // the same as without it.
    let s = Session::run(
        py,
        "pt-thread",
        "test_hangs.py",
        &[
            "--mphang-timeout=10",
            "--timeout=12",
            "--timeout-method=thread",
        ],
    );
    assert_hang_failed_by_mphang(&s, "timed out after 7s");
    assert!(
        !s.stdout().contains("+++ Timeout +++"),
        "pytest-timeout fired; {}",
        s.stdout()
    );
}

#[test]
fn a_test_that_holds_the_gil_in_c_ends_the_session_with_one_clear_line() {
    let py = require_venv!();
    let s = Session::run(py, "gil", "test_gil.py", &["--mphang-timeout=3"]);
    let (out, err) = (s.stdout(), s.stderr());
    let ctx = format!("stdout:\n{out}\nstderr:\n{err}");
    assert!(s.took < Duration::from_secs(20), "{:?}; {ctx}", s.took);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        matches!(s.output.status.signal(), Some(15) | Some(9)),
        "pytest was not ended by a signal: {:?}; {ctx}",
        s.output.status
    );
    let line = err
        .lines()
        .find(|l| l.contains("did not take SIGUSR1 within 5s"))
        .unwrap_or_else(|| panic!("no clear line; {ctx}"));
    assert!(line.contains("ended it"), "{line}");
    assert!(
        line.contains(&format!("at test_gil.py:{}", culprit_line("test_gil.py"))),
        "{line}"
    );
    assert!(!out.contains("test_after"), "{ctx}");
    let dir = s.report_dir("test_gil.py__test_blocks_in_c_holding_the_gil");
    assert!(dir.join("report.txt").exists(), "{ctx}");
    s.assert_nothing_left();
}

#[test]
fn off_until_asked_for() {
    let py = require_venv!();
    let s = Session::run(py, "off", "test_gil.py", &["--co", "-q"]);
    assert!(s.output.status.success(), "{}", s.stderr());
    assert!(!s.stdout().contains("mphang:"), "{}", s.stdout());
    assert!(watchers(&s.dir.path("mphang-report")).is_empty());
}

#[test]
fn the_plugin_compiles_on_every_python() {
    for (ver, py) in crate::util::pythons()
        .into_iter()
        .map(|p| (p.label(), p.path))
    {
        let o = Command::new(&py)
            .args(["-m", "py_compile"])
            .args(["__init__.py", "__main__.py", "pytest_plugin.py"].map(|f| {
                repo()
                    .join("python/mphang")
                    .join(f)
                    .to_string_lossy()
                    .into_owned()
            }))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(
                "PYTHONPYCACHEPREFIX",
                std::env::temp_dir().join("mphang-pycache"),
            )
            .output()
            .expect("run python");
        assert!(
            o.status.success(),
            "{ver}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
