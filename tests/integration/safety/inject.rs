//! Target strings cannot forge output and secrets do not reach artifacts: the
//! `hostile_strings` fixture has a newline plus `::error`, escape sequences and secrets in its
//! argv, a thread name with `::warning::`, a function named like a workflow command and an
//! open file whose path holds a newline. Checked in `report` text and JSON, `--save`, and
//! `run --format github` (stderr, report.txt, report.json, the job summary).

use crate::util::{bin, pythons, start};
use std::os::unix::fs::PermissionsExt;

const SECRETS: [&str; 5] = [
    "hunter2",
    "s3cr3tvalue",
    "pw123",
    "AKIAABCDEFGHIJKLMNOP",
    "bob:pw",
];

/// Asserts no raw control character (other than newline) and no secret is in `text`.
fn clean(what: &str, text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\n' && (c.is_control() || c == '\u{202e}'))
    {
        panic!("{what}: raw control character {c:?} in:\n{text}");
    }
    for s in SECRETS {
        assert!(!text.contains(s), "{what}: secret {s:?} in:\n{text}");
    }
}

/// Lines GitHub Actions would run as workflow commands (it trims leading whitespace), with
/// `::stop-commands::TOKEN` ... `::TOKEN::` honoured as the runner does.
fn workflow_commands(log: &str) -> Vec<String> {
    let mut stopped: Option<String> = None;
    let mut out = Vec::new();
    for line in log.lines() {
        let l = line.trim_start();
        if let Some(tok) = &stopped {
            if l == format!("::{tok}::") {
                stopped = None;
            }
            continue;
        }
        if let Some(tok) = l.strip_prefix("::stop-commands::") {
            stopped = Some(tok.to_string());
            continue;
        }
        if l.starts_with("::") {
            out.push(l.to_string());
        }
    }
    out
}

#[test]
fn hostile_strings_are_escaped_and_secrets_redacted_in_report() {
    let Some((ver, py)) = pythons().into_iter().last().map(|p| (p.label(), p.path)) else {
        eprintln!("skipping: no Python");
        return;
    };
    let fx = start(&py, "hostile_strings");
    let pid = fx.root().to_string();
    let saved = fx.dir().join("snap.json");
    let o = bin()
        .args(["report", &pid, "--save"])
        .arg(&saved)
        .output()
        .expect("run mphang");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{ver}:\n{text}");
    assert_eq!(o.status.code(), Some(1), "thread_blocks_exit is a hang");
    clean("report text", &text);
    assert!(
        workflow_commands(&text).is_empty(),
        "forged: {:?}",
        workflow_commands(&text)
    );
    // The hostile parts are there, escaped (the command line is cut at 90 characters).
    assert!(
        text.contains("evil\\n::warning::forged-thread\\x1b[31m"),
        "{text}"
    );
    assert!(
        text.contains("\\::error file=forged.py,line=1::forged-frame"),
        "a frame named like a workflow command starts its line with a backslash: {text}"
    );
    // The saved snapshot is private and clean; re-rendering it stays clean.
    let mode = std::fs::metadata(&saved)
        .expect("saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "snapshot mode {mode:o}");
    clean("--save", &std::fs::read_to_string(&saved).expect("read"));
    let again = bin()
        .args(["report", "--from"])
        .arg(&saved)
        .output()
        .expect("run");
    clean("--from", &String::from_utf8_lossy(&again.stdout));
    // A report edited by hand to hold raw control characters: merge escapes them too.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).expect("read")).expect("json");
    v["processes"][0]["cmdline"][0] = "evil\n::error::merged\x1b[31m".into();
    let hostile = fx.dir().join("hostile.json");
    std::fs::write(&hostile, v.to_string()).expect("write");
    let merged = bin().arg("merge").arg(&hostile).output().expect("run");
    let merged = String::from_utf8_lossy(&merged.stdout).into_owned();
    clean("merge", &merged);
    assert!(workflow_commands(&merged).is_empty(), "{merged}");
    assert!(
        merged.contains("evil\\n::error::merged\\x1b[31m"),
        "{merged}"
    );

    let o = bin()
        .args(["report", &pid, "--json", "--samples", "1"])
        .output()
        .expect("run mphang");
    let json = String::from_utf8_lossy(&o.stdout).into_owned();
    clean("report --json", &json);
    let r: mphang::render::Report = serde_json::from_str(&json).expect("json");
    let p = r.snapshot.processes.first().expect("process");
    assert_eq!(
        p.cmdline[2..],
        [
            "--password=***",
            "--token",
            "***",
            "https://bob:***@example.com/x",
            "line1\\n::error file=forged.py,line=1::forged-argv",
            "\\x1b]0;pwned\\x07\\x1b[2J",
            "AWS_SECRET_ACCESS_KEY=***",
        ],
        "{:?}",
        p.cmdline
    );
    for t in &p.threads {
        clean("comm", &t.comm);
    }

    // --no-redact keeps the secrets but still escapes.
    let o = bin()
        .args(["report", &pid, "--samples", "1", "--no-redact", "--json"])
        .output()
        .expect("run mphang");
    let kept = String::from_utf8_lossy(&o.stdout);
    assert!(kept.contains("--password=hunter2"), "{kept}");
    assert!(
        kept.contains("\\\\x1b]0;pwned"),
        "escaped all the same: {kept}"
    );
}

#[test]
fn run_under_github_actions_forges_no_annotation_and_leaks_no_secret() {
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    let dir = crate::util::tempdir("inject");
    let summary = dir.join("summary.md");
    let reports = dir.join("reports");
    let fixture = crate::util::fixture_path("hostile_strings");
    let o = bin()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("MPHANG_READY", dir.join("ready.json"))
        .args(["run", "--stall", "2s", "--grace", "1s", "--report-dir"])
        .arg(&reports)
        .args(["--", py.to_str().expect("utf8"), "-c"])
        .arg(format!(
            "import subprocess,sys; subprocess.run([sys.executable, {:?}], check=False)",
            fixture.to_str().expect("utf8")
        ))
        .arg("--api-key=hunter2")
        .output()
        .expect("run mphang run");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("{err}");
    assert_eq!(o.status.code(), Some(125), "a hang was named");
    clean("run stderr", &err);
    // Exactly mphang's own annotation for the one finding: `::error PROPS::MESSAGE`, the
    // hostile thread name (escaped) only inside the message.
    let cmds = workflow_commands(&err);
    assert_eq!(cmds.len(), 1, "workflow commands: {cmds:?}");
    let (head, message) = cmds[0]
        .split_once("::")
        .map(|(_, r)| r)
        .and_then(|r| r.split_once("::"))
        .expect("::cmd props::message");
    assert!(
        head.starts_with("error ") && head.contains("title=mphang thread_blocks_exit"),
        "{head}"
    );
    assert!(
        message.contains("evil\\n::warning::forged-thread"),
        "{message}"
    );
    assert!(
        !err.contains("__mphang-ptrace-helper"),
        "the helper is not part of the tree"
    );
    for f in ["report.txt", "report.json"] {
        let path = reports.join(f);
        let mode = std::fs::metadata(&path).expect(f).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} mode {mode:o}");
        let text = std::fs::read_to_string(&path).expect(f);
        clean(f, &text);
        assert!(workflow_commands(&text).is_empty(), "{f}");
    }
    let md = std::fs::read_to_string(&summary).expect("summary");
    clean("job summary", &md);
    assert!(md.contains("--api-key=***"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
