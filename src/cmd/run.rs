//! `mphang run -- CMD`: the CI post-mortem. Runs CMD (stdio and environment passed through, in
//! its own process group, below mphang as child subreaper), watches every descendant, and on
//! `--timeout` or `--stall` diagnoses the tree, writes `report.txt` and `report.json`, prints the
//! report to stderr and ends the whole tree, orphans included.
//!
//! Exit codes: CMD's own (128 + signal if a signal ended it) when it finishes in time;
//! [`EXIT_TIMEOUT`] (124) after a timeout or stall with no hang named; [`EXIT_TIMEOUT_HANG`] (125)
//! when the analysis named a hang; 130 after a second SIGINT; 2 when mphang could not start CMD.
//!
//! Unlike the other commands, `run` owns processes, so the lifecycle OS work (spawn, subreaper,
//! signals, reaping, exit statuses) lives here in `run/`, not in `collect`, which only reads a
//! tree: `tree` (polling, reaping, ending), `connector` and `pidfd` (exit statuses of processes
//! mphang is not the parent of), `signals` (forwarding), `github` (annotations and job summary),
//! `stderr`/`traceback`/`source` (tracebacks), `history`/`sender` (last stacks, signal senders).
//! docs/ci.md is the user-facing description.

mod connector;
mod github;
pub(crate) mod history;
mod junit;
mod pidfd;
pub(crate) mod sender;
mod signals;
mod source;
mod stderr;
mod traceback;
mod tree;
pub mod watch;

use crate::cli::{RunArgs, RunFormat};
use crate::collect::CollectOptions;
use crate::error::{Error, Result};
use crate::model::{DiagKind, Diagnostic, Pid, Snapshot, Stage};
use crate::render::Report;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};
pub(crate) use tree::now_ms;
use tree::{RawStatus, Tracker};

/// Exit code after a timeout or stall when no hang was named (as coreutils `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code after a timeout or stall when the analysis named a hang.
pub const EXIT_TIMEOUT_HANG: i32 = 125;
/// Exit code after a second SIGINT ended the tree (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// The longest a diagnosis may take before the tree is ended without it.
const COLLECT_LIMIT: Duration = Duration::from_secs(60);

/// How often the tree is polled.
const POLL: Duration = Duration::from_millis(100);

/// Why the watch loop stopped.
enum Outcome {
    /// CMD exited by itself (or after a forwarded signal) with this status.
    Exited(RawStatus),
    /// A second SIGINT: end everything now.
    Interrupted,
    /// `--timeout` or `--stall` fired; the text says which, for the report header.
    Deadline(String),
}

pub fn run(args: &RunArgs) -> Result<i32> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Error::Usage("name the command to run after `--`".into()));
    };
    // The command as printed and written: secrets redacted (unless --no-redact), control
    // characters escaped.
    let shown = crate::model::safe::escape_control(&shell_words(&if args.no_redact {
        args.command.clone()
    } else {
        crate::model::safe::redact_argv(&args.command)
    }))
    .into_owned();
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| Error::Io {
        context: "cannot become a child subreaper (prctl PR_SET_CHILD_SUBREAPER)".into(),
        source: e.into(),
    })?;
    signals::install().map_err(|e| Error::Io {
        context: "cannot install signal handlers".into(),
        source: e.into(),
    })?;
    // Subscribe before the first fork so no descendant is missed. `MPHANG_EXIT_SOURCE=pidfd` or
    // `=poll` skips the better sources (for testing the fallbacks, or if one misbehaves).
    let source = std::env::var("MPHANG_EXIT_SOURCE").unwrap_or_default();
    let exits = match source.as_str() {
        "pidfd" | "poll" => None,
        _ => connector::Listener::start().ok(),
    };
    let pidfds = source != "poll";
    let since_ms = now_ms();
    let mut command = std::process::Command::new(program);
    command.args(rest).process_group(0);
    // The command's stderr through mphang, for the tracebacks in it (passed on unchanged).
    let mut capture = None;
    if stderr::wanted() {
        if let Ok((read, write)) = stderr::pipe() {
            if let Ok(c) = stderr::Capture::start(read) {
                command.stderr(std::process::Stdio::from(write));
                capture = Some(c);
            }
        }
    }
    let child = command.spawn().map_err(|source| Error::Spawn {
        command: shown.clone(),
        source,
    })?;
    // mphang reaps with waitpid(-1) itself (it must, for orphans), so the handle is not used.
    let pid = child.id() as i32;
    drop(child);
    drop(command);
    let mut tree = Tracker::new(pid, exits, pidfds);
    // The stack history (`MPHANG_HISTORY=0` turns it off), woken by each connector exit.
    let history = if std::env::var("MPHANG_HISTORY").map_or(true, |v| v != "0") {
        let (etx, erx) = std::sync::mpsc::channel();
        history::History::start(tree.notify_exits(etx).then_some(erx))
    } else {
        None
    };
    let started = Instant::now();
    let paths = github::Paths::from_env();
    let junit = |outcome: junit::Outcome| {
        if let Some(path) = &args.junit {
            let xml = junit::report(&outcome, &shown, started.elapsed(), &paths);
            if let Err(e) = super::report::write_private(path, xml.as_bytes()) {
                let _ = writeln!(
                    std::io::stderr(),
                    "mphang: cannot write {}: {e}",
                    path.display()
                );
            }
        }
    };

    let finish = |capture: &mut Option<stderr::Capture>| {
        if let Some(c) = capture.as_mut() {
            c.finish(Duration::from_secs(2));
        }
    };
    match supervise(&mut tree, args, history.as_ref()) {
        Outcome::Exited(status) => {
            // Whatever CMD left behind (daemons, orphans) goes with it, silently.
            tree.end_all(args.grace, &interrupted);
            finish(&mut capture);
            junit(junit::Outcome::Finished(status.shell_code()));
            Ok(status.shell_code())
        }
        Outcome::Interrupted => {
            tree.end_all(Duration::ZERO, &interrupted);
            finish(&mut capture);
            junit(junit::Outcome::Interrupted);
            Ok(EXIT_INTERRUPTED)
        }
        Outcome::Deadline(why) => {
            tree.poll();
            let live = tree.live_pids().len();
            let _ = writeln!(
                std::io::stderr(),
                "mphang: `{shown}` {why}; diagnosing {live} process{} (exit statuses from {})",
                if live == 1 { "" } else { "es" },
                tree.status_source()
            );
            let past = Past {
                tracebacks: capture
                    .as_ref()
                    .map(stderr::Capture::tracebacks)
                    .unwrap_or_default(),
                history: history.as_ref(),
                since_ms,
            };
            let report = diagnose(&mut tree, pid, !args.no_redact, &past);
            junit(junit::Outcome::Deadline {
                why: &why,
                report: &report,
            });
            // Colors as `--color` and the terminal decide (anstream strips them otherwise).
            let mut err = anstream::AutoStream::auto(std::io::stderr().lock());
            let _ = publish(&report, args, &why, &shown, &paths, &mut err);
            let live = tree.live_pids().len();
            let _ = writeln!(
                err,
                "mphang: ending the tree: SIGTERM to {live} process{}, SIGKILL after {}",
                if live == 1 { "" } else { "es" },
                human(args.grace)
            );
            let killed = tree.end_all(args.grace, &interrupted);
            if killed > 0 {
                let _ = writeln!(
                    err,
                    "mphang: {killed} process{} outlived SIGTERM and {} SIGKILLed",
                    if killed == 1 { "" } else { "es" },
                    if killed == 1 { "was" } else { "were" }
                );
            }
            drop(err);
            finish(&mut capture);
            Ok(if report.hang {
                EXIT_TIMEOUT_HANG
            } else {
                EXIT_TIMEOUT
            })
        }
    }
}

/// True once a second SIGINT arrived: stop waiting politely.
fn interrupted() -> bool {
    signals::Received::now().int >= 2
}

/// Polls the tree until CMD exits, a deadline passes, or a second SIGINT arrives; forwards
/// SIGINT, SIGTERM and SIGHUP to CMD's process group on the way.
fn supervise(tree: &mut Tracker, args: &RunArgs, history: Option<&history::History>) -> Outcome {
    let start = Instant::now();
    let mut last_progress = start;
    let mut forwarded = signals::Received::default();
    loop {
        let activity = tree.poll();
        if let Some(h) = history {
            h.set_live(tree.live_cpu().into_iter().map(|(p, _)| p).collect());
        }
        if let Some(status) = tree.child_status() {
            return Outcome::Exited(status);
        }
        let received = signals::Received::now();
        for sig in received.since(&forwarded) {
            tree.forward(sig);
        }
        forwarded = received;
        if received.int >= 2 {
            return Outcome::Interrupted;
        }
        if activity > 0 {
            last_progress = Instant::now();
        }
        if let Some(limit) = args.timeout {
            if start.elapsed() >= limit {
                return Outcome::Deadline(format!("timed out after {}", human(limit)));
            }
        }
        if let Some(limit) = args.stall {
            if last_progress.elapsed() >= limit {
                return Outcome::Deadline(format!(
                    "stalled (no CPU used anywhere in the tree for {})",
                    human(limit)
                ));
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Takes the full diagnosis: two looks at CMD's tree plus the orphans reparented to mphang, with
/// every descendant seen to end added to `snapshot.gone`. A failed collection still gives a
/// report (the failure is a diagnostic), so the tree is always ended and the files written.
pub(super) fn diagnose(tree: &mut Tracker, pid: i32, redact: bool, past: &Past<'_>) -> Report {
    tree.poll();
    let opts = CollectOptions {
        looks: 2,
        extra_roots: tree.orphans(),
        redact,
        ..CollectOptions::default()
    };
    let mut snapshot =
        collect_bounded(Pid(pid), opts).unwrap_or_else(|e| failed_snapshot(Pid(pid), &e));
    tree.poll();
    for g in tree.gone() {
        match snapshot.gone.iter_mut().find(|s| s.pid == g.pid) {
            Some(s) if s.ended.is_none() => *s = g,
            Some(_) => {}
            None => snapshot.gone.push(g),
        }
    }
    if let Some(h) = past.history {
        for g in snapshot.gone.iter_mut().filter(|g| g.last_stack.is_none()) {
            g.last_stack = h.last(g.pid.0);
        }
        snapshot.gone_threads = h.gone_threads();
    }
    snapshot.tracebacks = past.tracebacks.clone();
    // (`watch` passes no start time: it watched no stack history.)
    snapshot.watched = (past.since_ms > 0).then(|| crate::model::Watched {
        by: "run".into(),
        since_ms: past.since_ms,
        unknown: "nothing before: run started the command".into(),
    });
    let owners = crate::analysis::past::attribute(&snapshot);
    for (t, owner) in snapshot.tracebacks.iter_mut().zip(owners) {
        if let Some((p, why)) = owner {
            t.pid = Some(p);
            t.attributed = Some(why);
        }
    }
    source::fix_lines(&mut snapshot);
    source::exit_lines(&mut snapshot);
    sender::fill(&mut snapshot);
    // The recorded deaths and the tracebacks carry target strings too.
    crate::model::safe::sanitize(&mut snapshot, redact);
    Report::analyze(snapshot)
}

/// What `run` saw happen before the diagnosis.
#[derive(Default)]
pub(super) struct Past<'a> {
    pub tracebacks: Vec<crate::model::Traceback>,
    pub history: Option<&'a history::History>,
    /// When the command was started (ms since the Unix epoch).
    pub since_ms: u64,
}

/// Runs `collect` on its own thread and gives up after [`COLLECT_LIMIT`]: mphang must never
/// hang itself, and the tree must still be ended (a stuck collector's ptrace attachments go
/// with the processes it was reading when they are SIGKILLed).
fn collect_bounded(root: Pid, opts: CollectOptions) -> Result<Snapshot> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("collect".into())
        .spawn(move || {
            let _ = tx.send(super::collect_settled(root, &opts));
        })
        .map_err(|source| Error::Io {
            context: "cannot start the collector thread".into(),
            source,
        })?;
    rx.recv_timeout(COLLECT_LIMIT).unwrap_or_else(|_| {
        Err(Error::Io {
            context: format!("collection did not finish within {}", human(COLLECT_LIMIT)),
            source: std::io::ErrorKind::TimedOut.into(),
        })
    })
}

/// The snapshot written when collection itself failed: no processes, the error as a diagnostic.
fn failed_snapshot(root: Pid, e: &Error) -> Snapshot {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Snapshot {
        schema: crate::model::SCHEMA.to_string(),
        mphang_version: env!("CARGO_PKG_VERSION").to_string(),
        taken_at_ms: tree::now_ms(),
        root,
        clock_ticks: u64::try_from(ticks).unwrap_or(100),
        looks: 0,
        interval_ms: 0,
        collect_ms: 0,
        max_stop_us: None,
        hosts: crate::collect::host::this_host(&[]).into_iter().collect(),
        processes: Vec::new(),
        pipes: Vec::new(),
        semaphores: Vec::new(),
        gone: Vec::new(),
        diagnostics: vec![Diagnostic {
            pid: Some(root),
            tid: None,
            stage: Stage::Tree,
            kind: DiagKind::Failed,
            message: format!("collection failed: {e}"),
        }],
        tracebacks: Vec::new(),
        gone_threads: Vec::new(),
        watched: None,
    }
}

/// Writes the report files and the GitHub job summary first (they must exist even if stderr is
/// closed), then prints the report, the `::error` annotations (when asked or under GitHub
/// Actions) and where the files are. Failing to write a file is reported, not fatal: the tree
/// must still be ended and the exit code still tell a timeout.
fn publish(
    report: &Report,
    args: &RunArgs,
    why: &str,
    command: &str,
    paths: &github::Paths,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let github = args.format == Some(RunFormat::Github)
        || std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    let written = write_files(report, &args.report_dir);
    let summary = match std::env::var_os("GITHUB_STEP_SUMMARY") {
        Some(path) if github => {
            let md = github::summary(report, why, command, &args.report_dir, paths);
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .and_then(|mut f| f.write_all(md.as_bytes()))
        }
        _ => Ok(()),
    };
    // Under GitHub Actions, the report (full of target strings) is printed with workflow
    // commands off, so that no line of it can act as one (`::error::…` in a thread name).
    let resume = github.then(github::stop_commands_token);
    if let Some(token) = &resume {
        writeln!(err, "::stop-commands::{token}")?;
    }
    match args.format {
        Some(RunFormat::Json) => crate::render::json::write(report, err)?,
        _ => {
            let opts = crate::render::text::TextOptions { color: true };
            crate::render::text::render(report, &opts, err)?;
        }
    }
    if let Some(token) = &resume {
        writeln!(err, "::{token}::")?;
    }
    if github {
        err.write_all(github::annotations(report, why, paths).as_bytes())?;
    }
    match written {
        Ok(()) => writeln!(
            err,
            "mphang: report written to {} and {}",
            args.report_dir.join("report.txt").display(),
            args.report_dir.join("report.json").display()
        )?,
        Err(e) => writeln!(err, "mphang: {e}")?,
    }
    if let Err(e) = summary {
        writeln!(err, "mphang: cannot append to $GITHUB_STEP_SUMMARY: {e}")?;
    }
    Ok(())
}

/// `report.txt` (text, no color) and `report.json` (the `mphang/report/v1` document, loadable
/// with `mphang report --from`), both mode 0600.
pub(super) fn write_files(report: &Report, dir: &Path) -> Result<()> {
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::WriteOutput { path, source }
    };
    std::fs::create_dir_all(dir).map_err(wrap(dir))?;
    let mut text = Vec::new();
    let txt = dir.join("report.txt");
    crate::render::text::render(
        report,
        &crate::render::text::TextOptions { color: false },
        &mut text,
    )
    .and_then(|()| super::report::write_private(&txt, &text))
    .map_err(wrap(&txt))?;
    let mut json = Vec::new();
    let js = dir.join("report.json");
    crate::render::json::write(report, &mut json)
        .and_then(|()| super::report::write_private(&js, &json))
        .map_err(wrap(&js))?;
    Ok(())
}

/// The command as a shell would accept it back: plain words bare, others single-quoted.
fn shell_words(words: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c))
    };
    words
        .iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `5s`, `2m`, `1m30s`, `500ms`.
pub(super) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 || ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::{human, shell_words};
    use std::time::Duration;

    #[test]
    fn commands_are_quoted_like_a_shell() {
        let words = ["sh", "-c", "echo 'hi'; exit 3", ""].map(String::from);
        assert_eq!(shell_words(&words), r#"sh -c 'echo '\''hi'\''; exit 3' ''"#);
    }

    #[test]
    fn durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }
}
