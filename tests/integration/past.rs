//! Integration tests: hangs whose cause already happened (issue 12). Each `fixtures/past_*.py`
//! runs under `mphang run --timeout` on CPython 3.12 and 3.14, or those `MPHANG_TEST_PYTHONS`
//! lists (each one's default start method); the report must name the fixture's pattern and
//! cite its `# CULPRIT` line, which is on no live stack: it comes from a traceback on stderr,
//! the stack history, the look for a signal's sender at an exit, or (when that look was too
//! late) the parent's source above the line it is at, or, for a worker that ended itself, the
//! source after its last seen line. Every run holds a process-group guard that kills and reaps.

use crate::util::{self, Python};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid as NixPid;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `mphang run` in its own process group; SIGKILLed with its group and reaped on Drop (mphang,
/// a subreaper, ends the fixture's tree itself).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = killpg(NixPid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// CPython 3.12 and 3.14, those present; those `MPHANG_TEST_PYTHONS` lists when it is set.
fn pythons() -> Vec<Python> {
    let listed = std::env::var_os("MPHANG_TEST_PYTHONS").is_some();
    util::pythons()
        .into_iter()
        .filter(|p| listed || p.minor == 12 || p.minor == 14)
        .collect()
}

/// Runs `fixture` under `mphang run --timeout` with `env` added and returns the report.
fn run(py: &Python, fixture: &str, env: &[(&str, &str)]) -> mphang::render::Report {
    use std::os::unix::process::CommandExt;
    // One directory per run: tests of one fixture with other `env` run at the same time.
    let tag: String = env.iter().map(|(k, v)| format!("-{k}={v}")).collect();
    let dir = std::env::temp_dir().join(format!(
        "mphang-past-{}-{fixture}-{}{tag}",
        std::process::id(),
        py.minor
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let reports: PathBuf = dir.join("report");
    let _ = std::fs::create_dir_all(&dir);
    let child = util::bin()
        .args(["run", "--timeout", "8s", "--grace", "1s", "--report-dir"])
        .arg(&reports)
        .arg("--")
        .arg(&py.path)
        .arg(util::fixture_path(fixture))
        .env_remove("GITHUB_ACTIONS")
        .env("MPHANG_READY", dir.join("ready.json"))
        .env("TMPDIR", &dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn mphang run");
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "mphang run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let json = std::fs::read_to_string(reports.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "{fixture} on {}: no report.json ({e}), {status}",
            py.label()
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&json).expect("report.json parses")
}

/// Asserts the report names `pattern` with the fixture's `# CULPRIT` line as culprit.
fn cites(fixture: &str, pattern: &str) {
    cites_with(fixture, pattern, &[]);
}

/// [`cites`], with `env` added to the fixture's environment.
fn cites_with(fixture: &str, pattern: &str, env: &[(&str, &str)]) {
    let want = util::line_of(fixture, "# CULPRIT");
    let pys = pythons();
    if pys.is_empty() {
        util::loud(
            "skipping: none of the CPythons to test found (3.12, 3.14 or MPHANG_TEST_PYTHONS)",
        );
        return;
    }
    for py in pys {
        let report = run(&py, fixture, env);
        let f = report
            .findings
            .iter()
            .find(|f| f.pattern == pattern)
            .unwrap_or_else(|| {
                panic!(
                    "{fixture} on {}: no {pattern} finding: {:?}",
                    py.label(),
                    report
                        .findings
                        .iter()
                        .map(|f| &f.pattern)
                        .collect::<Vec<_>>()
                )
            });
        let c = f
            .culprit
            .as_ref()
            .unwrap_or_else(|| panic!("{fixture} on {}: {pattern} has no culprit", py.label()));
        assert!(
            c.file.ends_with(&format!("{fixture}.py")) && c.line == want,
            "{fixture} on {}: culprit {}:{} instead of line {want}; evidence: {:#?}",
            py.label(),
            c.file,
            c.line,
            f.evidence
        );
    }
}

#[test]
fn consumer_crash_cites_the_crash_line_from_its_traceback() {
    cites("past_consumer_crash", "peer_exited");
}

#[test]
fn unpicklable_exception_cites_the_class_init() {
    cites("past_unpicklable_exception", "pool_result_handler_died");
}

#[test]
fn producer_thread_exception_cites_its_line() {
    cites("past_producer_died", "no_live_writer");
}

#[test]
fn worker_killed_mid_task_cites_where_it_was_last_seen() {
    cites("past_worker_killed", "pool_worker_died");
}

#[test]
fn worker_exit_0_mid_task_cites_the_exit_call() {
    cites("past_worker_exit", "pool_worker_died");
}

#[test]
fn worker_exit_3_mid_task_cites_the_exit_call() {
    cites_with(
        "past_worker_exit",
        "pool_worker_died",
        &[("MPHANG_EXIT_CODE", "3")],
    );
}

#[test]
fn terminated_lock_holder_cites_the_terminate_call() {
    cites("past_lock_holder_terminated", "orphaned_lock");
}

#[test]
fn with_pool_exit_cites_the_with_line() {
    cites("past_pool_with_exit", "peer_exited");
}
