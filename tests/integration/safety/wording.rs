//! Wording that misled (issue 16 item 6): permission counts per process, an unreadable child
//! is not "not Python", a zombie is not "STUCK … stopped in user space", a SIGSTOPped or traced
//! process is not "ok … returns by itself", and busy_loop states the measured interval.

use crate::util::{bin, pythons, repo, start};
use mphang::model::{DiagKind, Diagnostic, Pid, Role, Snapshot, Stage};
use mphang::render::{self, Report};
use std::time::{Duration, Instant};

fn text(report: &Report) -> String {
    let mut out = Vec::new();
    render::text::render(
        report,
        &render::text::TextOptions { color: false },
        &mut out,
    )
    .expect("render");
    String::from_utf8(out).expect("utf8")
}

fn recorded(name: &str) -> Snapshot {
    let path = repo()
        .join("fixtures/snapshots")
        .join(format!("{name}.json"));
    render::json::parse_snapshot(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

fn denied(pid: Pid, stage: Stage) -> Diagnostic {
    Diagnostic {
        pid: Some(pid),
        tid: None,
        stage,
        kind: DiagKind::PermissionDenied,
        message: "permission denied".into(),
    }
}

#[test]
fn permission_counts_processes_not_diagnostics() {
    let mut s = recorded("neg_sleep");
    let pid = s.processes[0].pid;
    for stage in [Stage::Maps, Stage::Fds, Stage::Threads, Stage::Python] {
        s.diagnostics.push(denied(pid, stage));
    }
    let t = text(&Report::analyze(s.clone()));
    assert!(
        t.contains("PERMISSION: 1 process could be read only partly"),
        "{t}"
    );
    s.diagnostics.push(denied(Pid(pid.0 + 1), Stage::Maps));
    let t = text(&Report::analyze(s));
    assert!(
        t.contains("PERMISSION: 2 processes could be read only partly"),
        "{t}"
    );
}

#[test]
fn an_unreadable_child_is_not_called_not_python() {
    let mut s = recorded("neg_sleep");
    let mut child = s.processes[0].clone();
    child.pid = Pid(child.pid.0 + 1);
    child.ppid = s.processes[0].pid;
    child.python_version = None;
    child.role = Role::Python;
    for t in &mut child.threads {
        t.tid = mphang::model::Tid(child.pid.0);
        t.py = None;
    }
    s.diagnostics.push(denied(child.pid, Stage::Maps));
    s.processes.push(child);
    let t = text(&Report::analyze(s));
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", 23749)))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("Python unknown: not readable"), "{t}");
    assert!(!line.contains("not Python"), "{line}");
}

#[test]
fn a_zombie_is_exited_not_stuck_in_user_space() {
    let t = text(&Report::analyze(recorded("peer_exited")));
    let zombie = t
        .lines()
        .find(|l| l.contains(" 23831 python3: "))
        .unwrap_or_else(|| panic!("no line for the zombie 23831: {t}"));
    assert!(zombie.trim_start().starts_with("EXIT "), "{zombie}");
    assert!(!t.contains("stopped in user space"), "{t}");
}

fn wait_state(pid: i32, want: char) {
    let t0 = Instant::now();
    loop {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = st
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|s| s.chars().next());
        if state == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{pid} never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_stopped_process_is_said_to_be_stopped() {
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    let fx = start(&py, "neg_sleep");
    let pid = fx.root();
    // SAFETY: kill(2) on our own fixture process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_state(pid, 'T');
    let o = bin()
        .args(["report", &pid.to_string(), "--samples", "1"])
        .output()
        .expect("run mphang");
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(o.status.code(), Some(0), "{t}");
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("STOP  {pid} ")))
        .unwrap_or_else(|| panic!("no STOP line for {pid}: {t}"));
    assert!(line.trim_start().starts_with("STOP "), "{line}");
    assert!(
        line.contains("stopped by a signal (state T")
            && line.contains("runs again only after SIGCONT"),
        "{line}"
    );
    assert!(!t.contains("returns by itself"), "{t}");
    assert!(t.contains("No hang found, but 1 process is stopped"), "{t}");
    assert!(
        t.contains(&format!(
            "process {pid} is stopped (state T) by a stop signal"
        )),
        "{t}"
    );
}

#[test]
fn a_traced_process_names_its_tracer() {
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    let fx = start(&py, "neg_sleep");
    let pid = fx.root();
    // Hold the main thread in tracing stop from a thread of this test, as a debugger would.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Option<i32>>();
    let holder = std::thread::spawn(move || {
        let g = mphang::collect::native::ptrace::Attached::seize(mphang::model::Tid(pid)).and_then(
            |mut g| {
                g.wait_stopped(Instant::now() + Duration::from_secs(5))
                    .map(|()| g)
            },
        );
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let _ = ready_tx.send(g.is_ok().then_some(me));
        let _ = rx.recv();
        drop(g);
    });
    let Some(holder_tid) = ready_rx.recv().expect("holder") else {
        eprintln!("skipping: ptrace not permitted");
        return;
    };
    let o = bin()
        .args(["report", &pid.to_string(), "--samples", "1"])
        .output()
        .expect("run mphang");
    let _ = tx.send(());
    holder.join().expect("holder");
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    // TracerPid names the tracing thread: the holder thread of this test.
    let named = format!("process {pid} is stopped (state t) and traced by pid {holder_tid}");
    assert!(t.contains(&named), "{t}");
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("STOP  {pid} ")))
        .unwrap_or_else(|| panic!("no STOP line for {pid}: {t}"));
    assert!(
        line.contains("stopped by a tracer") && line.contains("when its tracer lets it go"),
        "{line}"
    );
}

#[test]
fn busy_loop_states_the_measured_interval() {
    // Recorded: the first look took 72 ms and read the spinner's CPU time at its start; the
    // later look came 500 ms after it ended. 56 ticks (560 ms) went by in 572 ms, not in the
    // nominal 500 ms ("56 CPU ticks in 500 ms" said 112% of a CPU).
    let s = recorded("busy_loop");
    assert_eq!(s.collect_ms, 72);
    let r = Report::analyze(s);
    let f = r
        .findings
        .iter()
        .find(|f| f.pattern == "busy_loop")
        .expect("busy_loop finding");
    assert!(
        f.evidence[0].starts_with("56 CPU ticks in the 572 ms measured between two reads")
            && f.evidence[0].contains("(97% of one CPU)"),
        "{:?}",
        f.evidence
    );
}
