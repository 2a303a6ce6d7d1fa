//! The host-wide selectors of `report` (`--job-env NAME=VALUE`, `--cgroup PATH`): every Python
//! tree of a job on this host, and nothing else.

use crate::util::{bin, pythons};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Python process that forks one child; both sleep. Killed with its group on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(env: &[(&str, &str)]) -> Sleeper {
        let py = pythons().pop().expect("a python").path;
        let child = Command::new(py)
            .args([
                "-c",
                "import os, signal, time\nsignal.alarm(60)\nif os.fork() == 0:\n    signal.alarm(60)\ntime.sleep(60)",
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start python");
        let s = Sleeper(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.pids().len() < 2 || !s.pids().iter().all(|p| sleeping(*p)) {
            assert!(Instant::now() < deadline, "sleepers not asleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }
    fn pids(&self) -> Vec<i32> {
        let me = self.0.id() as i32;
        let kids =
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        std::iter::once(me)
            .chain(kids.split_whitespace().filter_map(|s| s.parse().ok()))
            .collect()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the sleeper's own process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn sleeping(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
        .is_some_and(|n| [230, 270, 35, 219].contains(&n))
}

fn selected(args: &[&str]) -> Vec<i32> {
    let out = bin()
        .args(["report", "--json", "--nonblocking", "--samples", "1"])
        .args(args)
        .output()
        .expect("mphang report");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: mphang::render::Report = serde_json::from_slice(&out.stdout).expect("report");
    let mut pids: Vec<i32> = r.snapshot.processes.iter().map(|p| p.pid.0).collect();
    pids.sort_unstable();
    pids
}

#[test]
fn job_env_selects_every_tree_of_the_job() {
    let tag = format!("job-{}", std::process::id());
    let a = Sleeper::start(&[("MPHANG_TEST_JOB", &tag), ("RANK", "0")]);
    let b = Sleeper::start(&[("MPHANG_TEST_JOB", &tag), ("RANK", "1")]);
    let other = Sleeper::start(&[("MPHANG_TEST_JOB", "another-job")]);
    let mut want: Vec<i32> = a.pids().into_iter().chain(b.pids()).collect();
    want.sort_unstable();
    let got = selected(&["--job-env", &format!("MPHANG_TEST_JOB={tag}")]);
    assert_eq!(got, want);
    assert!(!got.contains(&other.pids()[0]));
    let none = bin()
        .args(["report", "--job-env", "MPHANG_TEST_JOB=no-such-job"])
        .output()
        .expect("mphang report");
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no Python process on this host"));
}

#[test]
fn cgroup_selects_the_job_cgroup() {
    let base = std::path::Path::new("/sys/fs/cgroup/pids");
    if !base.join("cgroup.procs").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no cgroup v1 pids hierarchy to test --cgroup with"
        );
        eprintln!("skipping: no cgroup v1 pids hierarchy");
        return;
    }
    let name = format!("mphang-test-{}", std::process::id());
    let dir = base.join(&name);
    std::fs::create_dir(&dir).expect("create a cgroup");
    let inside = Sleeper::start(&[]);
    let outside = Sleeper::start(&[]);
    for pid in inside.pids() {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move into the cgroup");
    }
    let mut want = inside.pids();
    want.sort_unstable();
    let got = selected(&["--cgroup", &format!("/{name}")]);
    drop(inside);
    drop(outside);
    // The cgroup can go once its processes are reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(got, want);
}
