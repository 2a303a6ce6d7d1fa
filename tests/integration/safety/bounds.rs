//! Bounded inputs and outputs: `--from` refuses a FIFO, a device and an oversized file at once;
//! a 1,000-thread `--json` report stays under 2 MB (and reads back whole); a tree spanning
//! several users, or pid 1, is not stopped without `--yes`.

use crate::util::{bin, pythons, repo, start};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` with stdin closed, killing it after `limit` (a hang is a failure, not a wait).
fn run_bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mphang");
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mphang did not return within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn tmpdir(name: &str) -> crate::util::TempDir {
    crate::util::tempdir(&format!("bounds-{name}"))
}

#[test]
fn from_refuses_fifos_devices_and_oversized_files() {
    let dir = tmpdir("from");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("cstr");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let big = dir.join("big.json");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(257 << 20)) // sparse: no disk used
        .expect("big file");
    let small_but_over = dir.join("over.json");
    std::fs::write(&small_but_over, vec![b' '; 2 << 20]).expect("write");
    for (path, limit_mb, needle) in [
        (fifo.as_path(), None, "it is a FIFO, not a regular file"),
        (
            std::path::Path::new("/dev/zero"),
            None,
            "it is a character device",
        ),
        (
            big.as_path(),
            None,
            "it is 257 MiB, more than the 256 MiB limit",
        ),
        (
            small_but_over.as_path(),
            Some("1"),
            "more than the 1 MiB limit",
        ),
    ] {
        // `merge` reads its reports the same way.
        for args in [&["report", "--from"][..], &["merge"]] {
            let mut cmd = bin();
            cmd.args(args).arg(path);
            if let Some(l) = limit_mb {
                cmd.env("MPHANG_MAX_INPUT_MB", l);
            }
            let o = run_bounded(&mut cmd, Duration::from_secs(10));
            let e = stderr(&o);
            let ctx = format!("{args:?} {}: {e}", path.display());
            assert_eq!(o.status.code(), Some(2), "{ctx}");
            assert!(
                e.contains("refusing to read") && e.contains(needle),
                "{ctx}"
            );
            assert!(
                e.contains("hint:") && e.contains("MPHANG_MAX_INPUT_MB"),
                "{ctx}"
            );
            assert_eq!(e.lines().count(), 2, "one sentence and one hint: {ctx}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_1000_thread_json_report_is_under_2_mb_and_reads_back_whole() {
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    let fx = start(&py, "many_threads");
    let o = bin()
        .args(["report", &fx.root().to_string(), "--json", "--samples", "1"])
        .output()
        .expect("run mphang");
    let n = o.stdout.len();
    eprintln!("1,000-thread --json report: {n} bytes");
    assert!(n < 2_000_000, "the report is {n} bytes");
    let r =
        mphang::render::json::parse_report(&String::from_utf8_lossy(&o.stdout)).expect("parses");
    assert_eq!(r.threads.len(), 1001);
    let p = &r.snapshot.processes[0];
    // Every waiter's providers are every other thread again, and every stack is back.
    let waiter = r
        .threads
        .iter()
        .find(|v| v.thread.tid.0 != p.pid.0)
        .expect("a waiter");
    assert_eq!(waiter.providers.len(), 1000, "{:?}", waiter.blocked_on);
    let with_native = p.threads.iter().filter(|t| t.native.is_some()).count();
    assert!(with_native >= 1000, "{with_native} native stacks");
    assert!(r.threads.iter().filter(|v| !v.stack.is_empty()).count() >= 1000);
}

/// The shorthands of a compact report expand to exactly the report computed from the same
/// snapshot (providers compared as sets).
#[test]
fn compact_reports_round_trip() {
    let dir = tmpdir("compact");
    let snap = dir.join("s.json");
    let ok = Command::new("python3")
        .arg(repo().join("scripts/synth_snapshot.py"))
        .args(["--procs", "3", "--threads", "120", "--wait", "lock"])
        .arg(&snap)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: python3 not available");
        return;
    }
    let o = bin()
        .args(["report", "--json", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("providers_all_of")
            && text.contains("native_as")
            && text.contains("stack_as"),
        "360 threads: the compact form"
    );
    let mut got = mphang::render::json::parse_report(&text).expect("parses");
    let loaded = mphang::cmd::report::load_sanitized(&snap, true).expect("load");
    let mut want = mphang::render::Report::analyze(loaded);
    for r in [&mut got, &mut want] {
        for v in &mut r.threads {
            v.providers.sort();
        }
    }
    assert!(
        got == want,
        "the compact report does not expand to the full one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broad_trees_are_not_stopped_without_yes() {
    // pid 1.
    let o = run_bounded(bin().args(["report", "1"]), Duration::from_secs(30));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("refusing to stop threads all over the machine")
            && e.contains("pid 1 is the init process"),
        "{e}"
    );
    assert!(e.contains("--yes"), "{e}");

    // A tree with a process of another user.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the two-user tree: not root");
        return;
    }
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        return;
    };
    let dir = tmpdir("uids");
    let ready = dir.join("ready");
    let script = format!(
        "import os,signal,time\nif os.fork()==0:\n    signal.alarm(60); os.setgid(65534); os.setuid(65534)\n    time.sleep(60)\nelse:\n    signal.alarm(60); time.sleep(0.2); open({:?},'w').close(); time.sleep(60)\n",
        ready.to_str().expect("utf8")
    );
    let mut tree = std::process::Command::new(&py)
        .args(["-c", &script])
        .process_group(0)
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "tree not ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = tree.id().to_string();
    let o = run_bounded(
        bin().args(["report", &pid, "--samples", "1"]),
        Duration::from_secs(30),
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("processes of 2 users") && e.contains("uid 65534"),
        "{e}"
    );
    let o = run_bounded(
        bin().args(["report", &pid, "--samples", "1", "--yes"]),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run_bounded(
        bin().args(["report", &pid, "--samples", "1", "--nonblocking"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "nothing is stopped: {}",
        stderr(&o)
    );
    // SAFETY: kill(2) on the process group of the tree this test started.
    unsafe { libc::kill(-(tree.id() as i32), libc::SIGKILL) };
    let _ = tree.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
