//! Integration tests: `mphang run` end to end, on the built binary. Exit-code and stdio
//! pass-through on trivial commands, the join-before-drain fixture (report files, GitHub
//! annotations, nothing of the tree left alive), a Pool worker killed by SIGKILL (listed in
//! `snapshot.gone`), stall detection, and SIGINT forwarding. Every test holds a [`Guard`] that
//! kills and reaps what it started.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid as NixPid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mphang");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The Python to run fixtures with: pyenv's 3.11.7, else `python3` on PATH.
pub(crate) fn python() -> Option<PathBuf> {
    let pinned = PathBuf::from("/root/.pyenv/versions/3.11.7/bin/python3");
    if pinned.exists() {
        return Some(pinned);
    }
    crate::util::which("python3")
}

macro_rules! require_python {
    () => {
        match python() {
            Some(p) => p,
            None => {
                eprintln!("skipping: no python3 (pyenv 3.11.7 or on PATH) to run the fixture");
                return;
            }
        }
    };
}

/// A scratch directory (tempfile) removed on Drop; `.0` is its path.
pub(crate) struct Scratch(pub(crate) PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let t = tempfile::Builder::new()
            .prefix(&format!("mphang-run-{name}-"))
            .tempdir()
            .expect("create scratch dir");
        Scratch(t.path().to_path_buf(), t)
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// `role pid` lines the fixtures append to `$MPHANG_PIDS`.
pub(crate) fn recorded_pids(file: &Path) -> Vec<(String, i32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (role, pid) = l.split_once(' ')?;
            Some((role.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// A running `mphang run` in its own process group. On Drop: SIGKILL to mphang's group, to
/// every pid the fixture recorded (and its group), then reap mphang.
struct Guard {
    child: Child,
    pids_file: Option<PathBuf>,
}

impl Guard {
    fn spawn(cmd: &mut Command, pids_file: Option<PathBuf>) -> Guard {
        use std::os::unix::process::CommandExt;
        let child = cmd.process_group(0).spawn().expect("spawn mphang");
        Guard { child, pids_file }
    }

    fn pid(&self) -> NixPid {
        NixPid::from_raw(self.child.id() as i32)
    }

    /// Waits for mphang to exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mphang did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for mphang to exit and collects its stdout and stderr (when piped).
    fn output(mut self, limit: Duration) -> (ExitStatus, String, String) {
        use std::io::Read;
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut out);
        }
        let status = self.wait(limit);
        if let Ok(s) = reader.join() {
            err = s;
        }
        (status, out, err)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = killpg(self.pid(), Signal::SIGKILL);
        if let Some(file) = &self.pids_file {
            for (_, pid) in recorded_pids(file) {
                let _ = killpg(NixPid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(NixPid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

fn mphang() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null());
    cmd
}

fn piped(cmd: &mut Command) -> &mut Command {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped())
}

pub(crate) fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn finished_command_is_silent_and_keeps_exit_code() {
    let dir = Scratch::new("true");
    let guard = Guard::spawn(
        piped(mphang().current_dir(&dir.0).args(["run", "--", "true"])),
        None,
    );
    let (status, out, err) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    assert!(
        !dir.path("mphang-report").exists(),
        "no report without a timeout"
    );
}

/// Parses `path` with Python's XML parser (a JUnit consumer would refuse a malformed file).
fn assert_well_formed_xml(py: &Path, path: &Path) {
    let o = Command::new(py)
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "{} is not well-formed XML: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn junit_of_a_command_that_finished_in_time_is_one_passed_case() {
    let py = require_python!();
    let dir = Scratch::new("junit-ok");
    let junit = dir.path("out.xml");
    let guard = Guard::spawn(
        piped(
            mphang()
                .current_dir(&dir.0)
                .args(["run", "--timeout", "1h", "--junit"])
                .arg(&junit)
                .args(["--", "sh", "-c", "exit 0"]),
        ),
        None,
    );
    let (status, out, err) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert_well_formed_xml(&py, &junit);
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
    assert!(xml.contains("finished in time (exit 0)"), "{xml}");
}

#[test]
fn stdio_passes_through_and_exit_code_is_the_commands() {
    let dir = Scratch::new("sh");
    let script = "echo out; echo err >&2; exit 3";
    let guard = Guard::spawn(
        piped(
            mphang()
                .current_dir(&dir.0)
                .args(["run", "--", "sh", "-c", script]),
        ),
        None,
    );
    let (status, out, err) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
}

#[test]
fn leftovers_of_a_finished_command_are_ended_silently() {
    let dir = Scratch::new("leftover");
    let pidfile = dir.path("daemon");
    let script = format!("setsid sleep 300 & echo $! > {}; exit 4", pidfile.display());
    let guard = Guard::spawn(
        piped(
            mphang()
                .current_dir(&dir.0)
                .args(["run", "--", "sh", "-c", &script]),
        ),
        None,
    );
    let (status, out, err) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4));
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let alive_now = alive(pid);
    let _ = kill(NixPid::from_raw(pid), Signal::SIGKILL);
    assert!(!alive_now, "the daemonised sleep {pid} outlived mphang");
}

#[test]
fn command_killed_by_a_signal_exits_like_a_shell() {
    let guard = Guard::spawn(
        piped(mphang().args(["run", "--", "sh", "-c", "kill -9 $$"])),
        None,
    );
    let (status, _, _) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(128 + 9));
}

#[test]
fn command_that_cannot_start_is_a_tool_error() {
    let guard = Guard::spawn(
        piped(mphang().args(["run", "--", "/nonexistent/mphang-test-command"])),
        None,
    );
    let (status, _, err) = guard.output(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("cannot start"), "stderr: {err}");
}

#[test]
fn hung_tree_is_reported_and_ended() {
    let py = require_python!();
    let dir = Scratch::new("hang");
    let pids = dir.path("pids");
    let summary = dir.path("summary.md");
    let reports = dir.path("report");
    let junit = dir.path("junit.xml");
    // The job runs in a subdirectory of the checkout ($GITHUB_WORKSPACE = the scratch dir), with
    // the script given relative to it: annotations name it relative to the checkout.
    let work = dir.path("work");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::copy(fixture("run_hang.py"), work.join("run_hang.py")).expect("copy fixture");
    let guard = Guard::spawn(
        piped(
            mphang()
                .current_dir(&work)
                .env("MPHANG_PIDS", &pids)
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_WORKSPACE", &dir.0)
                .env("GITHUB_STEP_SUMMARY", &summary)
                .args(["run", "--timeout", "5s", "--grace", "1s", "--report-dir"])
                .arg(&reports)
                .arg("--junit")
                .arg(&junit)
                .arg("--")
                .arg(&py)
                .arg("run_hang.py"),
        ),
        Some(pids.clone()),
    );
    let (status, _, err) = guard.output(Duration::from_secs(90));

    let text = std::fs::read_to_string(reports.join("report.txt")).expect("report.txt written");
    assert!(!text.trim().is_empty(), "report.txt is empty");
    let json = std::fs::read_to_string(reports.join("report.json")).expect("report.json written");
    let report: mphang::render::Report =
        serde_json::from_str(&json).expect("report.json parses as a Report");
    crate::schema::assert_valid_report(
        &serde_json::from_str(&json).expect("report.json is JSON"),
        "report.json",
    );
    assert_eq!(status.code(), Some(125), "stderr: {err}");
    assert!(report.hang);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.pattern == "join_before_drain"),
        "findings: {:?}",
        report.findings
    );
    assert!(
        err.contains("::error file=work/run_hang.py,line="),
        "no GitHub annotation with a path relative to $GITHUB_WORKSPACE on stderr: {err}"
    );
    let xml = std::fs::read_to_string(&junit).expect("junit.xml written");
    assert_well_formed_xml(&py, &junit);
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<failure type=\"join_before_drain\" message=\""),
        "{xml}"
    );
    assert!(xml.contains("file=\"work/run_hang.py\" line=\""), "{xml}");
    assert!(
        xml.contains("culprit: "),
        "the finding is the failure's body: {xml}"
    );
    assert!(
        err.contains("title=mphang join_before_drain::"),
        "stderr: {err}"
    );
    let md = std::fs::read_to_string(&summary).expect("job summary written");
    assert!(md.contains("## mphang"), "summary: {md}");

    let recorded = recorded_pids(&pids);
    for role in ["parent", "child", "daemon", "ignores_sigterm"] {
        assert!(
            recorded.iter().any(|(r, _)| r == role),
            "fixture did not record its {role}: {recorded:?}"
        );
    }
    let daemon = recorded.iter().find(|(r, _)| r == "daemon").map(|r| r.1);
    let in_snapshot = |pid: i32| report.snapshot.processes.iter().any(|p| p.pid.0 == pid);
    if let Some(pid) = daemon {
        assert!(
            in_snapshot(pid),
            "daemonised grandchild {pid} not in the snapshot"
        );
    }
    for (role, pid) in &recorded {
        assert!(
            !alive(*pid),
            "{role} {pid} is still alive after mphang exited"
        );
    }

    let replay = mphang()
        .args(["report", "--from"])
        .arg(reports.join("report.json"))
        .output()
        .expect("run mphang report --from");
    assert!(
        matches!(replay.status.code(), Some(0) | Some(1)),
        "report --from failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// Runs the Pool fixture with exit statuses from `source` (`MPHANG_EXIT_SOURCE`; None = best)
/// and checks the killed worker is in `snapshot.gone`, with `signal 9` when the source that was
/// used can know it (stderr names it).
fn killed_pool_worker_is_listed_as_gone(source: Option<&str>) {
    let py = require_python!();
    let dir = Scratch::new(&format!("pool-{}", source.unwrap_or("best")));
    let pids = dir.path("pids");
    let reports = dir.path("report");
    let mut cmd = mphang();
    if let Some(source) = source {
        cmd.env("MPHANG_EXIT_SOURCE", source);
    }
    let guard = Guard::spawn(
        piped(
            cmd.current_dir(&dir.0)
                .env("MPHANG_PIDS", &pids)
                .args(["run", "--timeout", "5s", "--grace", "1s", "--report-dir"])
                .arg(&reports)
                .arg("--")
                .arg(&py)
                .arg(fixture("run_pool_kill.py")),
        ),
        Some(pids.clone()),
    );
    let (status, _, err) = guard.output(Duration::from_secs(90));
    assert_eq!(status.code(), Some(125), "stderr: {err}");
    let json = std::fs::read_to_string(reports.join("report.json")).expect("report.json written");
    let report: mphang::render::Report = serde_json::from_str(&json).expect("parses");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.pattern == "pool_worker_died"),
        "findings: {:?}",
        report.findings
    );
    let worker = recorded_pids(&pids)
        .into_iter()
        .find(|(r, _)| r == "killed_worker")
        .map(|r| r.1)
        .expect("fixture recorded the worker it killed");
    let gone = report
        .snapshot
        .gone
        .iter()
        .find(|g| g.pid.0 == worker)
        .unwrap_or_else(|| {
            panic!(
                "worker {worker} not in snapshot.gone: {:?}",
                report.snapshot.gone
            )
        });
    let ended = gone.ended.clone().unwrap_or_default();
    let knows = ["from proc connector", "from pidfds"];
    if knows.iter().any(|k| err.contains(k)) {
        assert!(ended.contains("signal 9"), "worker ended: {ended}");
    } else {
        // Polling knows the status only when a poll caught the worker as a zombie (its exit
        // code in `stat`) before the Pool's handler reaped it: a race either way.
        assert!(
            ended == "exited (status unknown)" || ended.contains("signal 9"),
            "worker ended: {ended}"
        );
        eprintln!("note: exit statuses from /proc polling only; worker ended: {ended}");
    }
}

#[test]
fn killed_pool_worker_is_listed_as_gone_best_source() {
    killed_pool_worker_is_listed_as_gone(None);
}

#[test]
fn killed_pool_worker_is_listed_as_gone_pidfd_source() {
    killed_pool_worker_is_listed_as_gone(Some("pidfd"));
}

#[test]
fn killed_pool_worker_is_listed_as_gone_polling() {
    killed_pool_worker_is_listed_as_gone(Some("poll"));
}

#[test]
fn stall_is_detected_without_cpu_use() {
    let dir = Scratch::new("stall");
    let reports = dir.path("report");
    let started = Instant::now();
    let guard = Guard::spawn(
        piped(
            mphang()
                .current_dir(&dir.0)
                .args(["run", "--stall", "1s", "--grace", "1s", "--report-dir"])
                .arg(&reports)
                .args(["--", "sleep", "600"]),
        ),
        None,
    );
    let (status, _, err) = guard.output(Duration::from_secs(60));
    assert!(
        matches!(status.code(), Some(124) | Some(125)),
        "exit {status:?}, stderr: {err}"
    );
    assert!(err.contains("stalled"), "stderr: {err}");
    assert!(reports.join("report.json").exists());
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A Python one-liner that writes `command <pid>` to `ready`, then on SIGINT (or never, when `ignore`) writes
/// `got` and exits 7.
fn sigint_script(ready: &Path, got: &Path, ignore: bool) -> String {
    let handler = if ignore {
        "signal.SIG_IGN".to_string()
    } else {
        format!("lambda *a: (open({got:?}, 'w').write('x'), sys.exit(7))")
    };
    format!(
        "import os, signal, sys, time\nsignal.signal(signal.SIGINT, {handler})\n\
         open({ready:?}, 'w').write(f'command {{os.getpid()}}\\n')\ntime.sleep(120)\n"
    )
}

fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_is_forwarded_to_the_command() {
    let py = require_python!();
    let dir = Scratch::new("sigint");
    let (ready, got) = (dir.path("ready"), dir.path("got"));
    let mut guard = Guard::spawn(
        mphang()
            .args(["run", "--"])
            .arg(&py)
            .arg("-c")
            .arg(sigint_script(&ready, &got, false)),
        Some(ready.clone()),
    );
    wait_for_file(&ready, Duration::from_secs(30));
    kill(guard.pid(), Signal::SIGINT).expect("signal mphang");
    let status = guard.wait(Duration::from_secs(30));
    assert!(got.exists(), "the command never saw SIGINT");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn second_sigint_ends_the_tree() {
    let py = require_python!();
    let dir = Scratch::new("sigint2");
    let (ready, got) = (dir.path("ready"), dir.path("got"));
    let mut guard = Guard::spawn(
        mphang()
            .args(["run", "--"])
            .arg(&py)
            .arg("-c")
            .arg(sigint_script(&ready, &got, true)),
        Some(ready.clone()),
    );
    wait_for_file(&ready, Duration::from_secs(30));
    kill(guard.pid(), Signal::SIGINT).expect("signal mphang");
    std::thread::sleep(Duration::from_millis(300));
    kill(guard.pid(), Signal::SIGINT).expect("signal mphang again");
    let status = guard.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    for (_, pid) in recorded_pids(&ready) {
        assert!(!alive(pid), "command {pid} outlived the second SIGINT");
    }
}
