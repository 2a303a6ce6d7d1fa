//! End to end: `mphang attach` on a real hung tree (fixtures/tui_hang.py) in a real terminal
//! (a private tmux server), quit with `q`, and check that the target was left as it was.
//! Skips loudly without tmux or python3 unless `CI` is set, where it fails instead.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid as NixPid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hung fixture in its own process group; killed (whole group) and reaped on drop.
pub struct Hang {
    child: Child,
    pub parent: i32,
    pub children: Vec<i32>,
    ready: PathBuf,
}

impl Hang {
    /// Starts fixtures/tui_hang.py with `children` children (`tag` names its readiness file, one
    /// per test) and waits (up to 20 s) until the
    /// parent sits in wait4 and every child has a thread in write.
    pub fn start(tag: &str, python: &str, children: usize, timeout_s: u32) -> Hang {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ready = std::env::temp_dir().join(format!(
            "mphang-tui-ready-{}-{tag}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(python)
            .arg(root.join("fixtures/tui_hang.py"))
            .env("MPHANG_READY", &ready)
            .env("MPHANG_CHILDREN", children.to_string())
            .env("MPHANG_FIXTURE_TIMEOUT", timeout_s.to_string())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start fixtures/tui_hang.py");
        let mut hang = Hang {
            child,
            parent: 0,
            children: Vec::new(),
            ready,
        };
        let doc: serde_json::Value = wait_for("the readiness file", 20, || {
            let text = std::fs::read_to_string(&hang.ready).ok()?;
            serde_json::from_str(&text).ok()
        });
        // The fixtures' ready-file contract (fixtures/README.md): named pids.
        let pids = doc["pids"].as_object().expect("pids in the ready file");
        hang.parent = pids["parent"].as_i64().expect("parent pid") as i32;
        hang.children = pids
            .iter()
            .filter(|(k, _)| k.starts_with("child"))
            .filter_map(|(_, v)| v.as_i64().map(|p| p as i32))
            .collect();
        wait_for("the tree to wedge (wait4 + write)", 20, || {
            hang.wedged().then_some(())
        });
        hang
    }

    /// The parent is in wait4 (61) and each child has a thread in write (1).
    pub fn wedged(&self) -> bool {
        syscall(self.parent, self.parent).is_some_and(|s| s.starts_with("61 "))
            && self.children.iter().all(|c| {
                tids(*c)
                    .iter()
                    .any(|t| syscall(*c, *t).is_some_and(|s| s.starts_with("1 ")))
            })
    }

    /// Every process of the tree, parent first.
    pub fn pids(&self) -> Vec<i32> {
        std::iter::once(self.parent)
            .chain(self.children.iter().copied())
            .collect()
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        let _ = killpg(NixPid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready);
    }
}

fn syscall(pid: i32, tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()
}

fn tids(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Process state letter (field 3 of /proc/PID/stat).
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// utime + stime of a process in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

/// Polls `f` every 100 ms for up to `secs` seconds; panics naming `what` on timeout.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private tmux server (own socket, no user config); killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached `cols` x `rows` session named `s`.
    pub fn start(tag: &str, cols: u16, rows: u16, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("mphang-test-{tag}-{}", std::process::id()),
        };
        let size = (cols.to_string(), rows.to_string());
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "s",
            "-x",
            &size.0,
            "-y",
            &size.1,
            command,
        ]);
        t
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "s"])
    }

    /// Pid of the process the pane's shell started (mphang), once there is one.
    pub fn pane_child(&self) -> Option<i32> {
        let shell: i32 = self
            .run(&["display", "-p", "-t", "s", "#{pane_pid}"])
            .trim()
            .parse()
            .ok()?;
        let kids = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// The tools the live test needs, or None after saying why it skips (a missing tmux fails
/// under CI instead).
pub fn tools() -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let have = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("tmux", "-V") {
        assert!(!ci, "tmux is required under CI (.ci/run installs it)");
        eprintln!("skipping: tmux is not installed (apt-get install tmux)");
        return None;
    }
    if !have("python3", "--version") {
        eprintln!("skipping: no python3 on PATH to run fixtures/tui_hang.py");
        return None;
    }
    Some("python3".into())
}

#[test]
fn attach_in_tmux_shows_the_finding_and_quits_cleanly() {
    let Some(python) = tools() else {
        return;
    };
    let hang = Hang::start("e2e", &python, 1, 120);
    let bin = env!("CARGO_BIN_EXE_mphang");
    let tmux = Tmux::start(
        "e2e",
        160,
        50,
        &format!(
            "{bin} attach {}; echo MPHANG_EXIT=$?; sleep 60",
            hang.parent
        ),
    );
    let mphang = wait_for("mphang to start in the pane", 10, || tmux.pane_child());
    let screen = wait_for("the finding on screen", 20, || {
        let s = tmux.capture();
        s.contains("join_before_drain").then_some(s)
    });
    println!(
        "--- screen of `mphang attach {}` ---\n{screen}",
        hang.parent
    );
    assert!(screen.contains("stuck"), "{screen}");
    tmux.run(&["send-keys", "-t", "s", "q"]);
    let after = wait_for("mphang to exit after q", 10, || {
        let s = tmux.capture();
        (state(mphang).is_none() && s.contains("MPHANG_EXIT=")).then_some(s)
    });
    assert!(after.contains("MPHANG_EXIT=0"), "{after}");
    assert!(
        !after.contains("Processes"),
        "the alternate screen was left: {after}"
    );
    for pid in hang.pids() {
        assert_eq!(
            state(pid),
            Some('S'),
            "process {pid} left running and not stopped"
        );
    }
    assert!(hang.wedged(), "the tree is still in the same calls");
}

/// Benchmark, not a test (`cargo test --test integration overhead -- --ignored --nocapture`):
/// CPU used by `mphang attach` refreshing a 64-process hung tree every second for 30 s.
#[test]
#[ignore = "benchmark: run by hand, takes ~40 s"]
fn overhead_of_attach_on_64_processes() {
    let Some(python) = tools() else {
        return;
    };
    let hang = Hang::start("bench", &python, 63, 300);
    let bin = env!("CARGO_BIN_EXE_mphang");
    let tmux = Tmux::start(
        "bench",
        160,
        50,
        &format!("{bin} attach --interval 1s {}; sleep 60", hang.parent),
    );
    let mphang = wait_for("mphang to start in the pane", 10, || tmux.pane_child());
    wait_for("the first screen", 30, || {
        tmux.capture().contains("Processes").then_some(())
    });
    // USER_HZ, the unit of /proc/PID/stat times (100 on Linux x86_64).
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let t0 = cpu_ticks(mphang).expect("mphang stat");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let t1 = cpu_ticks(mphang).expect("mphang stat");
    let wall = started.elapsed().as_secs_f64();
    let screen = tmux.capture();
    tmux.run(&["send-keys", "-t", "s", "q"]);
    let cpu = (t1 - t0) as f64 / hz;
    println!(
        "mphang attach, {} processes, 1 s refresh: {cpu:.2} s CPU in {wall:.1} s = {:.1} % of one CPU",
        hang.pids().len(),
        cpu / wall * 100.0
    );
    println!("{screen}");
    assert!(hang.wedged());
}

#[test]
fn attach_restores_the_terminal_on_sigterm() {
    let Some(python) = tools() else {
        return;
    };
    let hang = Hang::start("term", &python, 1, 120);
    let bin = env!("CARGO_BIN_EXE_mphang");
    let tmux = Tmux::start(
        "term",
        120,
        30,
        &format!(
            "{bin} attach {}; echo MPHANG_EXIT=$?; stty -a | grep -o -- '-\\?icanon'; sleep 60",
            hang.parent
        ),
    );
    let mphang = wait_for("mphang to start in the pane", 10, || tmux.pane_child());
    wait_for("the first screen", 20, || {
        tmux.capture().contains("Processes").then_some(())
    });
    nix::sys::signal::kill(NixPid::from_raw(mphang), Signal::SIGTERM).expect("send SIGTERM");
    let after = wait_for("mphang to exit after SIGTERM", 10, || {
        let s = tmux.capture();
        (state(mphang).is_none() && s.contains("icanon")).then_some(s)
    });
    assert!(after.contains("MPHANG_EXIT=0"), "{after}");
    assert!(
        after.lines().any(|l| l.trim() == "icanon"),
        "the terminal is back in canonical mode: {after}"
    );
    for pid in hang.pids() {
        assert_eq!(
            state(pid),
            Some('S'),
            "process {pid} left running and not stopped"
        );
    }
}

#[test]
fn attach_exits_when_its_terminal_goes_away() {
    let Some(python) = tools() else {
        return;
    };
    let hang = Hang::start("hup", &python, 1, 120);
    let bin = env!("CARGO_BIN_EXE_mphang");
    // "; true" keeps sh from exec-ing mphang, so the pane's pid is the shell, as elsewhere.
    let tmux = Tmux::start(
        "hup",
        120,
        30,
        &format!("{bin} attach {}; true", hang.parent),
    );
    let mphang = wait_for("mphang to start in the pane", 10, || tmux.pane_child());
    wait_for("the first screen", 20, || {
        tmux.capture().contains("Processes").then_some(())
    });
    drop(tmux); // kill-server: the pty hangs up and mphang gets SIGHUP
    wait_for("mphang to exit after its terminal went away", 10, || {
        matches!(state(mphang), None | Some('Z')).then_some(())
    });
    for pid in hang.pids() {
        assert_eq!(
            state(pid),
            Some('S'),
            "process {pid} left running and not stopped"
        );
    }
}
