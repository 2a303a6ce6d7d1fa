//! CLI contract: help, version, completions, exit codes, and one-sentence errors with a hint.

use crate::util::{bin, repo, run};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(v.starts_with("mphang "), "{v}");
    // The build's target triple, e.g. `mphang 0.1.0 (x86_64-unknown-linux-gnu)`.
    assert!(
        v.contains(&format!("({}-", std::env::consts::ARCH)) && v.contains("-linux-"),
        "{v}"
    );
    let o = run(&["--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    for cmd in crate::util::commands() {
        let cmd = cmd.as_str();
        assert!(h.contains(cmd), "help lists {cmd}");
    }
}

#[test]
fn completions_for_bash() {
    let o = run(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("mphang"));
}

#[test]
fn missing_pid_is_a_plain_error() {
    let o = run(&["report", "999999"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("no process with pid 999999"), "{e}");
    assert!(e.contains("hint:"), "{e}");
    assert_eq!(e.lines().count(), 2, "one sentence and one hint: {e}");
}

#[test]
fn pid_zero_and_kernel_threads_are_refused() {
    for pid in ["0", "2"] {
        let o = run(&["report", pid]);
        assert_eq!(o.status.code(), Some(2), "pid {pid}");
        assert!(stderr(&o).contains("kernel thread"), "{}", stderr(&o));
    }
}

#[test]
fn bad_from_files_are_plain_errors() {
    let dir = crate::util::tempdir("cli");
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "not json").expect("write");
    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, r#"{"schema": "mphang/snapshot/v9"}"#).expect("write");
    for (path, needle) in [
        (
            garbage.to_str().unwrap_or_default(),
            "not a valid mphang snapshot",
        ),
        (wrong.to_str().unwrap_or_default(), "mphang/snapshot/v9"),
        ("/nonexistent/snap.json", "cannot read"),
    ] {
        let o = run(&["report", "--from", path]);
        assert_eq!(o.status.code(), Some(2), "{path}");
        assert!(stderr(&o).contains(needle), "{path}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn from_a_recorded_snapshot_exits_1_and_names_the_hang() {
    let snap = repo().join("fixtures/snapshots/join_before_drain.json");
    let o = bin()
        .args(["report", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("join_before_drain"), "{out}");
    assert!(!out.contains('\x1b'), "no colors when not a tty");
    // The --json output is itself accepted by --from.
    let o = bin()
        .args(["report", "--json", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    let dir = std::env::temp_dir().join(format!("mphang-cli-json-{}.json", std::process::id()));
    std::fs::write(&dir, &o.stdout).expect("write");
    let again = bin()
        .args(["report", "--from"])
        .arg(&dir)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn healthy_snapshot_exits_0() {
    let snap = repo().join("fixtures/snapshots/pool_idle.json");
    let o = bin()
        .args(["report", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("No hang found"));
}

#[test]
fn forced_colors() {
    let snap = repo().join("fixtures/snapshots/join_before_drain.json");
    let o = bin()
        .args(["report", "--color", "always", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&o.stdout).contains('\x1b'));
}

#[test]
fn no_permission_names_the_missing_right() {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root to run mphang as another uid");
        return;
    }
    // The checkout may sit in a directory `nobody` cannot enter: run a world-readable copy.
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::util::tempdir("perm");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let exe = dir.join("mphang");
    std::fs::copy(env!("CARGO_BIN_EXE_mphang"), &exe).expect("copy binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod exe");
    let o = std::process::Command::new(&exe)
        .current_dir(&dir)
        .args(["report", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("permission denied") && e.contains("CAP_SYS_PTRACE"),
        "{e}"
    );
}

#[test]
fn durations_parse_like_humantime_and_huge_ones_are_errors() {
    // `1h30m` is accepted (the command then fails for another reason: no such pid).
    let o = run(&["run", "--timeout", "1h30m", "--", "/nonexistent/mphang-cmd"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot start"), "{}", stderr(&o));
    for (flag, value) in [
        ("--timeout", "99999999999999999999"),
        ("--grace", "18446744073709551615s"),
        ("--stall", "1000y"),
    ] {
        let o = run(&["run", flag, value, "--", "true"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {e}");
        assert!(e.contains("too long"), "{flag} {value}: {e}");
        assert!(!e.contains("panicked"), "{flag} {value}: {e}");
    }
    let o = run(&["report", "--interval", "99999999999999999999", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn a_zero_timeout_is_refused() {
    for flag in ["--timeout", "--stall"] {
        let o = run(&["run", flag, "0", "--", "true"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag}: {e}");
        assert!(e.contains("leave the option out"), "{flag}: {e}");
    }
}

/// Runs mphang with stdout on a pipe whose read end is already closed (`| head` that quit).
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    bin()
        .args(args)
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run mphang")
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let snap = repo().join("fixtures/snapshots/join_before_drain.json");
    let snap = snap.to_str().unwrap_or_default();
    for (args, code) in [
        (vec!["completions", "bash"], 0),
        (vec!["completions", "zsh"], 0),
        (vec!["report", "--json", "--from", snap], 1),
        (vec!["report", "--from", snap], 1),
        (vec!["report", "--color", "always", "--from", snap], 1),
    ] {
        let o = with_closed_stdout(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
        assert_eq!(
            e, "",
            "{args:?}: nothing on stderr (no panic, no Broken pipe)"
        );
    }
}

#[test]
fn color_is_an_option_of_every_command() {
    for cmd in crate::util::commands() {
        let cmd = cmd.as_str();
        let o = run(&[cmd, "--help"]);
        let h = String::from_utf8_lossy(&o.stdout);
        assert!(h.contains("--color <COLOR>"), "{cmd} --help: {h}");
    }
    let snap = repo().join("fixtures/snapshots/join_before_drain.json");
    for args in [
        ["--color", "never", "report", "--from"],
        ["report", "--color", "never", "--from"],
    ] {
        let o = bin().args(args).arg(&snap).output().expect("run");
        assert!(!String::from_utf8_lossy(&o.stdout).contains('\x1b'));
    }
    // CLICOLOR_FORCE asks anstream for colors on a pipe; NO_COLOR wins over it.
    let o = bin()
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR")
        .args(["report", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&o.stdout).contains('\x1b'));
    let o = bin()
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .args(["report", "--from"])
        .arg(&snap)
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\x1b'));
}

#[test]
fn man_prints_the_page() {
    let o = run(&["man"]);
    assert!(o.status.success());
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH mphang 1"),
        "{page}"
    );
    let o = with_closed_stdout(&["man"]);
    assert_eq!((o.status.code(), stderr(&o).as_str()), (Some(0), ""));
}

#[test]
fn watch_refuses_a_missing_pid_or_a_closed_control_fd() {
    let o = run(&["watch", "--pid", "999999", "--control", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no process with pid 999999"),
        "{}",
        stderr(&o)
    );
    let me = std::process::id().to_string();
    let o = run(&["watch", "--pid", &me, "--control", "987"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("987 is not open"), "{}", stderr(&o));
    let o = run(&[
        "watch",
        "--pid",
        &me,
        "--control",
        "0",
        "--signal",
        "SIGNOPE",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a signal name"), "{}", stderr(&o));
}
