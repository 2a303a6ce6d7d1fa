//! `mphang watch --pid PID --control FD`: the external watcher behind the pytest plugin. PID (a
//! pytest process) says over a pipe which test runs; nothing here depends on PID running Python
//! code. When a test overruns, mphang diagnoses PID's tree from outside (the same collection and
//! report files as `run`), writes the finding to the reply pipe and signals PID, whose handler
//! fails the test with it; once PID answers, the processes the test started are ended (as `run`
//! ends a tree) and the session goes on. If PID cannot answer (its main thread is blocked in C
//! code holding the GIL), the whole tree is ended and one line on stderr says why.
//!
//! The protocol is in `mphang watch --help` and docs/ci.md. While a test runs within its time
//! the watcher sleeps in poll(2) on the control pipe and a pidfd of PID: no CPU, so it never
//! counts as progress for an enclosing `mphang run --stall`.

use super::github::{self, Paths};
use super::tree::{now_ticks, start_ticks, ticks_of_boot_ns, Tracker};
use super::{diagnose, human, write_files, EXIT_TIMEOUT, EXIT_TIMEOUT_HANG};
use crate::cli::WatchArgs;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::render::Report;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid as NixPid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often PID's liveness is checked when no pidfd can be polled (kernels before 5.3).
const LIVENESS_POLL: Duration = Duration::from_secs(1);

/// The test PID is running, as the control lines told it.
#[derive(Debug, Clone)]
struct Test {
    nodeid: String,
    /// When its time started (reset after the first failure, for the second chance).
    started: Instant,
    /// When it started, in the clock ticks of `/proc/PID/stat`: the processes it started are
    /// the descendants that started since.
    start_ticks: u64,
    limit: Duration,
    /// PID was signalled for it once already; overrunning again ends the tree.
    failed: bool,
}

impl Test {
    fn deadline(&self) -> Instant {
        self.started + self.limit
    }
}

/// One control line.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Start {
        limit: Option<Duration>,
        /// When the test started, CLOCK_BOOTTIME in nanoseconds, as PID read it (the watcher
        /// may read the line later, after the test already started processes).
        boot_ns: Option<u64>,
        nodeid: String,
    },
    Limit(Duration),
    End,
    Ack,
    Late,
}

fn parse_line(line: &str) -> Option<Line> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let ms = |s: &str| s.parse::<u64>().ok().map(Duration::from_millis);
    match word {
        "start" => {
            let (limit, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let (boot, nodeid) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Line::Start {
                limit: ms(limit).filter(|d| !d.is_zero()),
                boot_ns: boot.parse().ok(),
                nodeid: nodeid.to_string(),
            })
        }
        "limit" => ms(rest.trim()).filter(|d| !d.is_zero()).map(Line::Limit),
        "end" => Some(Line::End),
        "ack" => Some(Line::Ack),
        "late" => Some(Line::Late),
        _ => None,
    }
}

/// Reads whole lines from a descriptor into a queue; a line is taken off only when handled.
struct Lines {
    file: File,
    buf: Vec<u8>,
    queue: std::collections::VecDeque<String>,
    eof: bool,
}

impl Lines {
    /// Reads what is there (call when poll says readable) and queues the complete lines.
    fn read(&mut self) {
        let mut chunk = [0u8; 4096];
        match self.file.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.eof = true,
        }
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.queue
                .push_back(String::from_utf8_lossy(&line).trim_end().to_string());
        }
    }

    /// The next queued line that parses.
    fn next(&mut self) -> Option<Line> {
        while let Some(l) = self.queue.pop_front() {
            if let Some(line) = parse_line(&l) {
                return Some(line);
            }
        }
        None
    }
}

/// Opens `spec`: an inherited descriptor number, or a path (read or write side).
fn open(spec: &str, write: bool) -> Result<File> {
    if let Ok(fd) = spec.parse::<i32>() {
        // SAFETY: F_GETFD only reads the descriptor's flags; -1 means it is not open.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::Usage(format!("file descriptor {fd} is not open")));
        }
        // SAFETY: the descriptor is open and was handed to mphang to own (by the plugin).
        return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let opened = if write {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(spec)
    } else {
        File::open(spec)
    };
    opened.map_err(|source| Error::ReadInput {
        path: PathBuf::from(spec),
        source,
    })
}

/// Forks into the background: the parent prints the child's pid and returns true (it should
/// exit); the child starts a new session, points stdout at /dev/null and returns false.
fn detach() -> Result<bool> {
    let io = |context: &str| {
        let context = context.to_string();
        move |e: nix::Error| Error::Io {
            context,
            source: e.into(),
        }
    };
    // SAFETY: mphang is still single-threaded here (no collection, no helper thread has been
    // started), so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(io("cannot fork the watcher"))? {
        nix::unistd::ForkResult::Parent { child } => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{child}").and_then(|()| out.flush());
            Ok(true)
        }
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid().map_err(io("cannot start a new session"))?;
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(null.as_fd());
            }
            Ok(false)
        }
    }
}

/// A directory name for a test id: `tests/x.py::test_a[1]` -> `tests_x.py__test_a_1_`.
fn slug(nodeid: &str) -> String {
    let s: String = nodeid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("test{s}")
    } else {
        s
    }
}

/// `join_before_drain at tests/x.py:41` for the finding that says most: a named hang pattern,
/// else any hang (`deadlock`, `stuck`), else the first finding; None when nothing was named.
fn brief(report: &Report, paths: &Paths) -> Option<(String, Option<String>)> {
    let hang = |f: &&crate::analysis::Finding| f.severity == crate::analysis::Severity::Hang;
    let named = |f: &&crate::analysis::Finding| !f.pattern.is_generic();
    let f = (report.findings.iter().filter(hang).find(named))
        .or(report.findings.iter().find(hang))
        .or(report.findings.first())?;
    Some(match &f.culprit {
        Some(c) => (
            format!("{} at {}:{}", f.pattern, paths.relative(&c.file), c.line),
            crate::render::text::source_line(&c.file, c.line),
        ),
        None => (f.pattern.to_string(), None),
    })
}

/// The failure message the plugin raises: one headline (pattern and place first, which is
/// what pytest's short summary shows), the findings as in the text report, where the report is.
fn message(report: &Report, why: &str, report_txt: &Path, paths: &Paths) -> String {
    let mut out = match brief(report, paths) {
        Some((brief, src)) => format!(
            "mphang: {brief} ({why}){}\n\n",
            src.map(|s| format!(": {s}")).unwrap_or_default()
        ),
        None => format!(
            "mphang: {why}; no hang pattern was named (every thread's wait is in the report)\n\n"
        ),
    };
    let mut body = Vec::new();
    let opts = crate::render::text::TextOptions { color: false };
    let _ = crate::render::text::findings(report, &opts, &mut body);
    out.push_str(&String::from_utf8_lossy(&body));
    out.push_str(&format!("report: {}\n", report_txt.display()));
    out
}

/// The watcher's state.
struct Watcher<'a> {
    args: &'a WatchArgs,
    root: i32,
    root_start: u64,
    control: Lines,
    reply: Option<File>,
    pidfd: Option<OwnedFd>,
    paths: Paths,
    current: Option<Test>,
}

/// What to do after a control line or a timeout.
enum Next {
    Go,
    Exit(i32),
}

impl Watcher<'_> {
    fn root_alive(&self) -> bool {
        start_ticks(self.root) == Some(self.root_start)
    }

    /// Waits up to `limit` (None: forever) for control input or PID's exit and queues what was
    /// read. `Err` once PID is gone, or the control input ended with nothing left to handle.
    fn wait(&mut self, limit: Option<Duration>) -> std::result::Result<(), i32> {
        if !self.control.queue.is_empty() {
            return Ok(());
        }
        let limit = match (&self.pidfd, limit) {
            (Some(_), limit) => limit,
            (None, Some(l)) => Some(l.min(LIVENESS_POLL)),
            (None, None) => Some(LIVENESS_POLL),
        };
        let timeout = match limit {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = vec![PollFd::new(self.control.file.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &self.pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let ready = match poll(&mut fds, timeout) {
            Ok(_) => fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<_>>(),
            Err(_) => vec![false; fds.len()],
        };
        drop(fds);
        if ready[0] {
            self.control.read();
        }
        if ready.get(1).copied().unwrap_or(false) || !self.root_alive() {
            return Err(0);
        }
        if self.control.eof && self.control.queue.is_empty() {
            return Err(0);
        }
        Ok(())
    }

    /// Folds a start/limit/end line into the current test.
    fn apply(&mut self, line: &Line) {
        match line {
            Line::Start {
                limit,
                boot_ns,
                nodeid,
            } => {
                self.current = Some(Test {
                    nodeid: nodeid.clone(),
                    started: Instant::now(),
                    start_ticks: boot_ns.map(ticks_of_boot_ns).unwrap_or_else(now_ticks),
                    limit: limit.unwrap_or(self.args.timeout),
                    failed: false,
                });
            }
            Line::Limit(l) => {
                if let Some(t) = &mut self.current {
                    t.limit = t.limit.min(*l);
                }
            }
            Line::End => self.current = None,
            Line::Ack | Line::Late => {}
        }
    }

    fn run(&mut self) -> i32 {
        loop {
            let limit = self
                .current
                .as_ref()
                .map(|t| t.deadline().saturating_duration_since(Instant::now()));
            if let Err(code) = self.wait(limit) {
                return code;
            }
            while let Some(line) = self.control.next() {
                self.apply(&line);
            }
            if self.control.eof {
                return 0;
            }
            let overrun = self
                .current
                .as_ref()
                .filter(|t| Instant::now() >= t.deadline())
                .cloned();
            if let Some(test) = overrun {
                if let Next::Exit(code) = self.fire(&test) {
                    return code;
                }
            }
        }
    }

    /// A test overran: diagnose, write the files, hand PID the finding, signal it, and end
    /// what the test started once PID answers (or everything, if it cannot).
    fn fire(&mut self, test: &Test) -> Next {
        let why = format!("{} timed out after {}", test.nodeid, human(test.limit));
        let mut tree = Tracker::watching(self.root);
        let report = diagnose(&mut tree, self.root, true, &Default::default());
        let dir = self.args.report_dir.join(slug(&test.nodeid));
        let report_txt = dir.join("report.txt");
        let written = write_files(&report, &dir);
        let short_why = format!("timed out after {}", human(test.limit));
        let message = message(&report, &short_why, &report_txt, &self.paths);
        let headline = message.lines().next().unwrap_or_default().to_string();
        let finding = brief(&report, &self.paths)
            .map(|(b, _)| b)
            .unwrap_or_else(|| "no hang pattern named".into());
        let mut err = std::io::stderr().lock();
        // On a line of its own: the terminal may be in the middle of pytest's progress line.
        let _ = writeln!(
            err,
            "\nmphang: {}: {}",
            test.nodeid,
            headline.trim_start_matches("mphang: ")
        );
        if let Err(e) = &written {
            let _ = writeln!(err, "mphang: {e}");
        }
        if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
            let _ = err.write_all(github::annotations(&report, &why, &self.paths).as_bytes());
        }
        drop(err);
        let code = if report.hang {
            EXIT_TIMEOUT_HANG
        } else {
            EXIT_TIMEOUT
        };
        if test.failed {
            return self.end_everything(
                &mut tree,
                &format!(
                    "{}: pytest (pid {}) is still in the test a period after mphang signalled it",
                    test.nodeid, self.root
                ),
                &finding,
                &report_txt,
                code,
            );
        }
        let reply = serde_json::json!({
            "nodeid": test.nodeid,
            "message": message,
            "report": report_txt,
            "hang": report.hang,
            "patterns": report.findings.iter().map(|f| &f.pattern).collect::<Vec<_>>(),
        });
        if let Some(r) = &mut self.reply {
            let _ = writeln!(r, "{reply}").and_then(|()| r.flush());
        }
        if !self.root_alive() {
            return Next::Exit(code);
        }
        let Ok(sig) = Signal::try_from(self.args.signal) else {
            return Next::Exit(code);
        };
        let _ = kill(NixPid::from_raw(self.root), sig);
        // Wait for the answer, still following the tests (the one that overran may have ended
        // by itself meanwhile: then PID answers `late` and nothing is ended).
        let deadline = Instant::now() + self.args.ack_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let what = format!(
                    "{}: pytest (pid {}) did not take {} within {}, so its main thread cannot \
                     run Python code (blocked in C code, or holding the GIL)",
                    test.nodeid,
                    self.root,
                    sig.as_str(),
                    human(self.args.ack_timeout)
                );
                return self.end_everything(&mut tree, &what, &finding, &report_txt, code);
            }
            if self.wait(Some(left)).is_err() {
                return Next::Exit(code);
            }
            // Lines after the answer stay queued for the main loop.
            while let Some(line) = self.control.next() {
                match line {
                    Line::Ack => {
                        // What the test started, but not the session's helpers that it happened
                        // to start first (multiprocessing starts them again when they are gone,
                        // with a warning).
                        let helpers: Vec<crate::model::Pid> = report
                            .snapshot
                            .processes
                            .iter()
                            .filter(|p| matches!(p.role, Role::ResourceTracker | Role::Forkserver))
                            .map(|p| p.pid)
                            .collect();
                        let mut started = tree.started_since(test.start_ticks);
                        started.retain(|p| !helpers.contains(p));
                        tree.end(&started, self.args.grace);
                        self.second_chance(test);
                        return Next::Go;
                    }
                    Line::Late => {
                        // PID took the signal outside the test's setup, call and teardown. If
                        // the test is still the one running, it gets one more period; then the
                        // tree is ended.
                        self.second_chance(test);
                        return Next::Go;
                    }
                    other => self.apply(&other),
                }
            }
            if self.control.eof {
                return Next::Exit(code);
            }
        }
    }

    /// The test that overran, if it is still the one running, gets one more period; overrunning
    /// that ends the tree.
    fn second_chance(&mut self, test: &Test) {
        if let Some(t) = self.current.as_mut().filter(|t| t.nodeid == test.nodeid) {
            t.failed = true;
            t.started = Instant::now();
        }
    }

    /// Ends PID and its whole tree and says so in one line.
    fn end_everything(
        &mut self,
        tree: &mut Tracker,
        what: &str,
        finding: &str,
        report_txt: &Path,
        code: i32,
    ) -> Next {
        tree.poll();
        let all = tree.live_pids();
        tree.end(&all, self.args.grace);
        let others = match all.len().saturating_sub(1) {
            0 => String::new(),
            1 => " and its 1 other process".to_string(),
            n => format!(" and its {n} other processes"),
        };
        let _ = writeln!(
            std::io::stderr(),
            "mphang: {what}; ended it{others}. Finding: {finding}; report: {}",
            report_txt.display()
        );
        Next::Exit(code)
    }
}

pub fn run(args: &WatchArgs) -> Result<i32> {
    let root = args.pid;
    let Some(root_start) = start_ticks(root) else {
        return Err(Error::NoSuchProcess(crate::model::Pid(root)));
    };
    let control = open(&args.control, false)?;
    let reply = args.reply.as_deref().map(|r| open(r, true)).transpose()?;
    if args.detach && detach()? {
        return Ok(super::super::EXIT_OK);
    }
    let pidfd = super::pidfd::open(root).filter(|_| start_ticks(root) == Some(root_start));
    let mut watcher = Watcher {
        args,
        root,
        root_start,
        control: Lines {
            file: control,
            buf: Vec::new(),
            queue: Default::default(),
            eof: false,
        },
        reply,
        pidfd,
        paths: Paths::from_env(),
        current: None,
    };
    Ok(watcher.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        assert_eq!(
            parse_line("start 10000 123456789 tests/x.py::test_a[a b]"),
            Some(Line::Start {
                limit: Some(Duration::from_secs(10)),
                boot_ns: Some(123_456_789),
                nodeid: "tests/x.py::test_a[a b]".into()
            })
        );
        assert_eq!(
            parse_line("start - - t"),
            Some(Line::Start {
                limit: None,
                boot_ns: None,
                nodeid: "t".into()
            })
        );
        assert_eq!(
            parse_line("limit 2500"),
            Some(Line::Limit(Duration::from_millis(2500)))
        );
        assert_eq!(parse_line("limit 0"), None);
        assert_eq!(parse_line("end t"), Some(Line::End));
        assert_eq!(parse_line("ack t"), Some(Line::Ack));
        assert_eq!(parse_line("bogus"), None);
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("tests/x.py::test_a[1]"), "tests_x.py__test_a_1_");
        assert_eq!(slug(".hidden"), "test.hidden");
        assert_eq!(slug(&"a".repeat(300)).len(), 120);
    }
}
