//! Human-readable report: findings first (chain, culprit line, fix), then the process tree with
//! one line per thread saying what it waits on and who is on the other side, then Python stacks
//! with the innermost user-code frame marked. Colors only when asked (a tty by default).

use super::Report;
use crate::analysis::{BlockedOn, Finding, Progress, Severity};
use crate::model::{ProcessSnap, ThreadRef};
use std::collections::HashMap;
use std::io::Write;

/// Text rendering options.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Emit ANSI colors (only on a tty unless forced).
    pub color: bool,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn red(&self, s: &str) -> String {
        self.wrap("1;31", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn cyan(&self, s: &str) -> String {
        self.wrap("36", s)
    }
}

/// The text of `file` at `line`, trimmed, when the file can be read here.
pub fn source_line(file: &str, line: i32) -> Option<String> {
    if line <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let l = text.lines().nth(line as usize - 1)?.trim();
    // The file belongs to the target: its text is escaped like every target string.
    (!l.is_empty()).then(|| crate::model::safe::escape_control(l).into_owned())
}

pub fn render(report: &Report, opts: &TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let mut guarded = NoCommandLines {
        inner: out,
        at_line_start: true,
        pending: Vec::new(),
        esc: 0,
    };
    render_lines(report, opts, &mut guarded)?;
    guarded.flush_pending()
}

/// Target strings are escaped (`model::safe`), so none can start a line; but one printed at
/// the start of a line (a function or symbol name) could begin with `::`, which a CI log
/// (GitHub Actions) would take as a workflow command. Such a line gets a backslash before its
/// first `:`.
struct NoCommandLines<'a> {
    inner: &'a mut dyn Write,
    at_line_start: bool,
    /// The leading whitespace (and a possible first `:`) of the current line, not yet written.
    pending: Vec<u8>,
    /// Inside a terminal escape sequence at the start of a line (colors are stripped later,
    /// by anstream, so they must not hide a `::`): 1 after ESC, 2 inside `ESC [`.
    esc: u8,
}

impl NoCommandLines<'_> {
    fn flush_pending(&mut self) -> std::io::Result<()> {
        let r = self.inner.write_all(&self.pending);
        self.pending.clear();
        r
    }
}

impl Write for NoCommandLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut i = 0;
        while i < buf.len() {
            if !self.at_line_start {
                // Copy through the end of this line in one go.
                let end = buf[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|n| i + n + 1)
                    .unwrap_or(buf.len());
                self.inner.write_all(&buf[i..end])?;
                self.at_line_start = buf[end - 1] == b'\n';
                i = end;
                continue;
            }
            // At the start of a line: hold back escape sequences and leading blanks until the
            // first other byte.
            if self.esc > 0 {
                let b = buf[i];
                i += 1;
                self.pending.push(b);
                self.esc = match (self.esc, b) {
                    (1, b'[') => 2,
                    (2, 0x40..=0x7e) | (1, _) => 0,
                    (e, _) => e,
                };
                continue;
            }
            if buf[i] == 0x1b {
                self.pending.push(0x1b);
                self.esc = 1;
                i += 1;
                continue;
            }
            let blanks = buf[i..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            self.pending.extend_from_slice(&buf[i..i + blanks]);
            i += blanks;
            if blanks > 0 {
                continue; // an escape sequence may follow
            }
            let Some(&b) = buf.get(i) else { break };
            i += 1;
            if b == b':' && self.pending.last() != Some(&b':') {
                self.pending.push(b);
                continue;
            }
            if b == b':' {
                // "::" at the start of a line.
                let colon = self.pending.pop();
                self.pending.push(b'\\');
                self.pending.extend(colon);
            }
            self.pending.push(b);
            self.at_line_start = b == b'\n';
            self.flush_pending()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn render_lines(report: &Report, opts: &TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let p = Paint { on: opts.color };
    let s = &report.snapshot;
    let nthreads: usize = s.processes.iter().map(|p| p.threads.len()).sum();
    if s.is_merged() {
        super::multi::header(report, out)?;
    } else {
        writeln!(
            out,
            "{} tree of {}: {} processes, {} threads; {} look{}{}, collected in {} ms",
            p.bold("mphang"),
            s.root,
            s.processes.len(),
            nthreads,
            s.looks,
            if s.looks == 1 { "" } else { "s" },
            match s
                .processes
                .iter()
                .flat_map(|p| &p.threads)
                .find_map(|t| t.later.last())
            {
                // More looks than asked for: the verdict waited for a timed waiter to wake.
                Some(l) if s.looks > 2 => format!(" over {} ms", l.after_ms),
                _ if s.looks > 1 => format!(" {} ms apart", s.interval_ms),
                _ => String::new(),
            },
            s.collect_ms
        )?;
    }
    writeln!(out)?;
    if let Some(rc) = &report.roll_call {
        writeln!(
            out,
            "{} {}",
            p.bold("ROLL CALL:"),
            crate::analysis::rollcall::sentence(rc)
        )?;
        writeln!(out)?;
    }
    let denied: Vec<&crate::model::Diagnostic> = s
        .diagnostics
        .iter()
        .filter(|d| d.kind == crate::model::DiagKind::PermissionDenied)
        .collect();
    if let Some(d) = denied.first() {
        // Several diagnostics (maps, syscalls, stacks) may name the same process.
        let mut pids: Vec<_> = denied.iter().map(|d| d.pid).collect();
        pids.sort();
        pids.dedup();
        writeln!(
            out,
            "{} {} process{} could be read only partly: {} (see NOTES and docs/permissions.md)",
            p.yellow("PERMISSION:"),
            pids.len(),
            if pids.len() == 1 { "" } else { "es" },
            d.message
        )?;
        writeln!(out)?;
    }
    if report.findings.is_empty() {
        let stuck = report
            .threads
            .iter()
            .filter(|t| t.progress == Progress::Stuck)
            .count();
        let stopped = s
            .processes
            .iter()
            .filter(|p| p.threads.iter().any(|t| matches!(t.state, 'T' | 't')))
            .count();
        if stopped > 0 {
            writeln!(
                out,
                "{} but {stopped} process{} stopped (by a signal or a tracer) and will not run until \
                 resumed (see NOTES).",
                p.yellow("No hang found,"),
                if stopped == 1 { " is" } else { "es are" }
            )?;
        } else if stuck == 0 {
            writeln!(
                out,
                "{} every thread can make progress.",
                p.green("No hang found:")
            )?;
        } else {
            writeln!(
                out,
                "{} {stuck} idle thread(s) wait for work that nothing will send, but no user thread is stuck.",
                p.green("No hang found:")
            )?;
        }
        writeln!(out)?;
    }
    for (i, f) in report.findings.iter().enumerate() {
        finding(&p, report, f, i + 1, out)?;
    }
    if !report.unknown.is_empty() {
        writeln!(
            out,
            "{} waits on hosts that sent no report (no verdict rests on them):",
            p.yellow("UNKNOWN:")
        )?;
        for u in &report.unknown {
            writeln!(
                out,
                "  {}/{} {}: {} is on a host that sent no report",
                u.thread.pid, u.thread.tid, u.waits_on, u.remote
            )?;
        }
        writeln!(out)?;
    }
    writeln!(out, "{}", p.bold("PROCESSES"))?;
    tree(&p, report, out)?;
    if !s.gone.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("EXITED"))?;
        // Clean exits are one line however many there were; the others one line each.
        let clean = s
            .gone
            .iter()
            .filter(|g| g.ended.as_deref() == Some("exit 0"))
            .count();
        for g in s
            .gone
            .iter()
            .filter(|g| g.ended.as_deref() != Some("exit 0"))
        {
            writeln!(
                out,
                "  {} {}{}",
                g.pid,
                g.ended.as_deref().unwrap_or("exited"),
                if g.cmdline.is_empty() {
                    String::new()
                } else {
                    format!("  {}", g.cmdline.join(" "))
                }
            )?;
        }
        if clean > 0 {
            writeln!(
                out,
                "  {clean} process{} exited 0",
                if clean == 1 { "" } else { "es" }
            )?;
        }
    }
    if !s.diagnostics.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("NOTES"))?;
        for d in &s.diagnostics {
            let who = d.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            writeln!(out, "  {who}: {:?}/{:?}: {}", d.stage, d.kind, d.message)?;
        }
    }
    Ok(())
}

/// The findings section alone (every finding with its chain, culprit, fix and evidence), as in
/// the full report: the body of a JUnit failure or a pytest failure message.
pub fn findings(report: &Report, opts: &TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let p = Paint { on: opts.color };
    for (i, f) in report.findings.iter().enumerate() {
        finding(&p, report, f, i + 1, out)?;
    }
    Ok(())
}

fn finding(
    p: &Paint,
    report: &Report,
    f: &Finding,
    n: usize,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let tag = match f.severity {
        Severity::Hang => p.red("HANG"),
        Severity::Warning => p.yellow("WARNING"),
    };
    writeln!(out, "{tag} #{n} {}", p.bold(f.pattern.as_str()))?;
    writeln!(out, "  {}", f.summary)?;
    writeln!(out, "  {}", p.bold("chain:"))?;
    for (i, l) in f.chain.iter().enumerate() {
        let indent = "    ".to_string() + &"  ".repeat(i);
        let arrow = if i == 0 { "" } else { "└─> " };
        writeln!(
            out,
            "{indent}{arrow}{} {} {}",
            p.cyan(&format!("{}/{}", l.thread.pid, l.thread.tid)),
            l.name,
            l.waits_on
        )?;
    }
    if let (Some(first), true) = (f.chain.first(), f.chain.len() > 1) {
        let last = f.chain.last().map(|l| l.thread);
        let closes = last.and_then(|l| report.verdict(l)).is_some_and(|v| {
            v.providers.iter().any(|x| x.pid == first.thread.pid)
                || only_other_end(report, v) == Some(first.thread.pid)
        });
        if closes {
            let indent = "    ".to_string() + &"  ".repeat(f.chain.len());
            writeln!(
                out,
                "{indent}└─> back to {} (nobody else can)",
                first.thread.pid
            )?;
        }
    }
    if let Some(c) = &f.culprit {
        let src = source_line(&c.file, c.line)
            .map(|s| format!("    {}", p.bold(&s)))
            .unwrap_or_default();
        writeln!(
            out,
            "  {} {}:{} in {}{}{}",
            p.bold("culprit:"),
            c.file,
            c.line,
            c.function,
            // A line from a traceback whose process is not known has pid 0.
            if c.pid.0 == 0 {
                String::new()
            } else {
                format!(" (pid {})", c.pid)
            },
            src
        )?;
    }
    for u in &f.user_lines {
        if f.culprit.as_ref() == Some(u) {
            continue;
        }
        writeln!(
            out,
            "  {}  {}:{} in {} ({}/{})",
            p.dim("also:"),
            u.file,
            u.line,
            u.function,
            u.pid,
            u.tid
        )?;
    }
    writeln!(out, "  {} {}", p.bold("fix:"), f.fix)?;
    if !f.evidence.is_empty() {
        writeln!(out, "  {}", p.bold("evidence:"))?;
        for e in &f.evidence {
            writeln!(out, "    - {e}")?;
        }
    }
    writeln!(out, "  {} {}", p.dim("docs:"), f.doc)?;
    writeln!(out)?;
    Ok(())
}

/// Deeper processes are not indented further (a 100,000-deep chain stays readable).
const MAX_INDENT: usize = 32;

/// Processes in depth-first order (parents before children, siblings in snapshot order) with
/// their depth. Iterative and linear: a 100,000-deep chain neither recurses nor rescans.
fn tree_order(procs: &[ProcessSnap]) -> Vec<(usize, usize)> {
    let index: HashMap<crate::model::Pid, usize> =
        procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
    let mut children: HashMap<crate::model::Pid, Vec<usize>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        if p.ppid != p.pid {
            children.entry(p.ppid).or_default().push(i);
        }
    }
    let mut seen = vec![false; procs.len()];
    let mut order = Vec::with_capacity(procs.len());
    let roots = procs
        .iter()
        .enumerate()
        .filter(|(_, p)| !index.contains_key(&p.ppid))
        .map(|(i, _)| i)
        .chain(0..procs.len());
    for root in roots {
        let mut stack = vec![(root, 0usize)];
        while let Some((i, d)) = stack.pop() {
            if seen[i] {
                continue;
            }
            seen[i] = true;
            order.push((i, d));
            if let Some(kids) = children.get(&procs[i].pid) {
                stack.extend(kids.iter().rev().map(|&k| (k, d + 1)));
            }
        }
    }
    order
}

fn tree(p: &Paint, report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let procs = &report.snapshot.processes;
    let verdicts: HashMap<ThreadRef, &crate::analysis::ThreadVerdict> =
        report.threads.iter().map(|v| (v.thread, v)).collect();
    let mut host = None;
    for (i, d) in tree_order(procs) {
        let pr = &procs[i];
        if report.snapshot.is_merged() && host != Some(pr.pid.host()) {
            host = Some(pr.pid.host());
            super::multi::host_line(report, pr.pid, out)?;
        }
        let pad = "  ".repeat(d.min(MAX_INDENT));
        let unreadable =
            report.snapshot.diagnostics.iter().any(|d| {
                d.pid == Some(pr.pid) && d.kind == crate::model::DiagKind::PermissionDenied
            });
        let py = match (&pr.python_version, pr.role) {
            (Some(v), _) => format!("python {v}"),
            (None, crate::model::Role::NonPython) => "not Python".into(),
            (None, _) if unreadable => "Python unknown: not readable".into(),
            (None, _) => "Python version unknown".into(),
        };
        writeln!(
            out,
            "{pad}{}{} {} [{}] {}  {}",
            p.bold(&pr.pid.to_string()),
            pr.rank.map(|r| format!(" rank {r}")).unwrap_or_default(),
            pr.role.label(),
            pr.state,
            p.dim(&py),
            p.dim(&truncate(&pr.cmdline.join(" "), 90))
        )?;
        for t in &pr.threads {
            let r = ThreadRef {
                pid: pr.pid,
                tid: t.tid,
            };
            let Some(v) = verdicts.get(&r).copied() else {
                continue;
            };
            let mark = match (t.state, v.progress) {
                // An exited (zombie) thread is not stuck; a stopped one is neither ok nor stuck.
                ('Z' | 'X', _) => p.dim("EXIT "),
                ('T' | 't', _) => p.yellow("STOP "),
                (_, Progress::Stuck) => p.red("STUCK"),
                (_, Progress::CanProgress) => p.green("ok   "),
            };
            let why = match (&v.progress, &v.because) {
                (Progress::CanProgress, Some(b))
                    if !matches!(v.blocked_on, crate::analysis::BlockedOn::Running)
                        && !matches!(t.state, 'T' | 't' | 'Z' | 'X') =>
                {
                    p.dim(&format!("  ({b})"))
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "{pad}  {mark} {} {}: {}{why}",
                t.tid,
                t.display_name(),
                v.line
            )?;
            stack(p, &pad, t, &v.stack, out)?;
        }
    }
    Ok(())
}

/// A thread's stack: merged (Python frames in place of the interpreter's eval loop) when
/// native frames exist, else the Python frames; the innermost user frame marked.
fn stack(
    p: &Paint,
    pad: &str,
    t: &crate::model::ThreadSnap,
    merged: &[crate::model::merge::MergedFrame],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use crate::model::merge::MergedFrame;
    let py_frames: &[crate::model::PyFrame] =
        t.py.as_ref().map(|py| py.frames.as_slice()).unwrap_or(&[]);
    let user = t.py.as_ref().and_then(|py| py.user_frame()).cloned();
    let own = t.py.as_ref().map(|py| py.own_frames().len()).unwrap_or(0);
    let python_line =
        |i: usize, f: &crate::model::PyFrame, out: &mut dyn Write| -> std::io::Result<()> {
            if i == own && own < py_frames.len() {
                writeln!(
                    out,
                    "{pad}        {}",
                    p.dim("(below: the parent's stack, copied at fork)")
                )?;
            }
            let text = format!("{} ({})", f.function, f.short_location());
            if user.as_ref() == Some(f) {
                writeln!(
                    out,
                    "{pad}        {}  {}",
                    p.bold(&text),
                    p.yellow("<- your code")
                )
            } else {
                writeln!(out, "{pad}        {}", p.dim(&text))
            }
        };
    match merged {
        [_, ..] => {
            let mut py_index = 0;
            for m in merged.iter().cloned() {
                match m {
                    MergedFrame::Python(f) => {
                        python_line(py_index, &f, out)?;
                        py_index += 1;
                    }
                    MergedFrame::Native(n) => {
                        let name = n
                            .function
                            .clone()
                            .unwrap_or_else(|| format!("{:#x}", n.addr));
                        let loc = match (&n.file, n.line) {
                            (Some(f), Some(l)) => {
                                format!("{}:{l}", f.rsplit('/').next().unwrap_or(f))
                            }
                            _ => n.module.clone().unwrap_or_default(),
                        };
                        writeln!(
                            out,
                            "{pad}        {}",
                            p.dim(&format!("{name} [native] ({loc})"))
                        )?;
                    }
                }
            }
        }
        [] => {
            for (i, f) in py_frames.iter().enumerate() {
                python_line(i, f, out)?;
            }
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// For a thread blocked on a pipe: the one process that holds the pipe's other end (another
/// process if any, else its own), if there is exactly one. It may be left out of the providers
/// because it waits for this thread's process (the joiner in join-before-drain) or is exiting.
fn only_other_end(
    report: &Report,
    v: &crate::analysis::ThreadVerdict,
) -> Option<crate::model::Pid> {
    let (inode, reader) = match v.blocked_on {
        BlockedOn::PipeWrite { inode, .. } => (inode, true),
        BlockedOn::PipeRead { inode } => (inode, false),
        _ => return None,
    };
    let holds = |p: &ProcessSnap| {
        p.fds.iter().any(|f| {
            f.pipe_inode() == Some(inode)
                && if reader {
                    f.access.can_read()
                } else {
                    f.access.can_write()
                }
        })
    };
    let all: Vec<crate::model::Pid> = report
        .snapshot
        .processes
        .iter()
        .filter(|p| holds(p))
        .map(|p| p.pid)
        .collect();
    let others: Vec<crate::model::Pid> =
        all.iter().copied().filter(|p| *p != v.thread.pid).collect();
    match (others.as_slice(), all.as_slice()) {
        ([one], _) => Some(*one),
        ([], [own]) => Some(*own),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GoneProcess, Pid};
    use std::io::Write;

    fn guard(text: &str) -> String {
        let mut v = Vec::new();
        let mut g = NoCommandLines {
            inner: &mut v,
            at_line_start: true,
            pending: Vec::new(),
            esc: 0,
        };
        for chunk in text.as_bytes().chunks(3) {
            g.write_all(chunk).expect("write");
        }
        g.flush_pending().expect("flush");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn no_line_starts_a_workflow_command() {
        assert_eq!(
            guard("ok line\n    ::error::x (a.py:1)\n:single\nstd::vector\n::\n"),
            "ok line\n    \\::error::x (a.py:1)\n:single\nstd::vector\n\\::\n"
        );
        // Colors at the start of a line are stripped later and must not hide a command.
        assert_eq!(
            guard("\x1b[1m::error::x\n  \x1b[2m\x1b[31m ::warning\n"),
            "\x1b[1m\\::error::x\n  \x1b[2m\x1b[31m \\::warning\n"
        );
    }

    #[test]
    fn clean_exits_are_summarised() {
        let mut snap = crate::render::json::parse_snapshot(include_str!(
            "../../fixtures/snapshots/neg_sleep.json"
        ))
        .expect("fixture parses");
        let gone = |pid: i32, ended: &str| GoneProcess {
            pid: Pid(pid),
            ppid: Some(Pid(1)),
            cmdline: vec!["python3".into(), format!("worker{pid}")],
            ended: Some(ended.into()),
            ended_at_ms: None,
            last_stack: None,
        };
        snap.gone = (100..138).map(|pid| gone(pid, "exit 0")).collect();
        snap.gone.push(gone(200, "signal 9 (SIGKILL)"));
        let mut out = Vec::new();
        render(&Report::analyze(snap), &TextOptions::default(), &mut out).expect("render");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("  38 processes exited 0\n"), "{text}");
        assert!(
            text.contains("  200 signal 9 (SIGKILL)  python3 worker200"),
            "{text}"
        );
        assert!(!text.contains("worker100"), "{text}");
    }
}
