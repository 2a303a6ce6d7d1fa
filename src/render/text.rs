//! Human-readable report: findings first (chain, culprit line, fix), then the process tree with
//! one line per thread saying what it waits on and who is on the other side, then Python stacks
//! with the innermost user-code frame marked. Colors only when asked (a tty by default).

use super::Report;
use crate::analysis::{BlockedOn, Finding, Progress, Severity};
use crate::model::{ProcessSnap, ThreadRef};
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
    (!l.is_empty()).then(|| l.to_string())
}

pub fn render(report: &Report, opts: &TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let p = Paint { on: opts.color };
    let s = &report.snapshot;
    let nthreads: usize = s.processes.iter().map(|p| p.threads.len()).sum();
    writeln!(
        out,
        "{} tree of {}: {} processes, {} threads; {} look{}{}, collected in {} ms",
        p.bold("mphang"),
        s.root,
        s.processes.len(),
        nthreads,
        s.looks,
        if s.looks == 1 { "" } else { "s" },
        match s.processes.iter().flat_map(|p| &p.threads).find_map(|t| t.later.last()) {
            // More looks than asked for: the verdict waited for a timed waiter to wake.
            Some(l) if s.looks > 2 => format!(" over {} ms", l.after_ms),
            _ if s.looks > 1 => format!(" {} ms apart", s.interval_ms),
            _ => String::new(),
        },
        s.collect_ms
    )?;
    writeln!(out)?;
    let denied: Vec<&crate::model::Diagnostic> = s
        .diagnostics
        .iter()
        .filter(|d| d.kind == crate::model::DiagKind::PermissionDenied)
        .collect();
    if let Some(d) = denied.first() {
        writeln!(
            out,
            "{} {} process(es) could be read only partly: {} (see NOTES and docs/permissions.md)",
            p.yellow("PERMISSION:"),
            denied.len(),
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
        if stuck == 0 {
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
    writeln!(out, "{}", p.bold("PROCESSES"))?;
    tree(&p, report, out)?;
    if !s.gone.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("EXITED"))?;
        for g in &s.gone {
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
    writeln!(out, "{tag} #{n} {}", p.bold(&f.pattern))?;
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
            "  {} {}:{} in {} (pid {}){}",
            p.bold("culprit:"),
            c.file,
            c.line,
            c.function,
            c.pid,
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

fn depth(report: &Report, pr: &ProcessSnap) -> usize {
    let mut d = 0;
    let mut cur = pr.ppid;
    while let Some(parent) = report.snapshot.process(cur) {
        d += 1;
        cur = parent.ppid;
        if d > 32 {
            break;
        }
    }
    d
}

fn tree(p: &Paint, report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    // Depth-first order from the walk's parents-first order.
    let procs = &report.snapshot.processes;
    let mut order: Vec<&ProcessSnap> = Vec::new();
    fn visit<'a>(pr: &'a ProcessSnap, all: &'a [ProcessSnap], order: &mut Vec<&'a ProcessSnap>) {
        if order.iter().any(|x| x.pid == pr.pid) {
            return;
        }
        order.push(pr);
        for c in all.iter().filter(|c| c.ppid == pr.pid && c.pid != pr.pid) {
            visit(c, all, order);
        }
    }
    for pr in procs {
        if report.snapshot.process(pr.ppid).is_none() {
            visit(pr, procs, &mut order);
        }
    }
    for pr in procs {
        visit(pr, procs, &mut order);
    }
    for pr in order {
        let d = depth(report, pr);
        let pad = "  ".repeat(d);
        let py = pr
            .python_version
            .as_deref()
            .map(|v| format!("python {v}"))
            .unwrap_or_else(|| "not Python".into());
        writeln!(
            out,
            "{pad}{} {} [{}] {}  {}",
            p.bold(&pr.pid.to_string()),
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
            let Some(v) = report.verdict(r) else { continue };
            let mark = match v.progress {
                Progress::Stuck => p.red("STUCK"),
                Progress::CanProgress => p.green("ok   "),
            };
            let why = match (&v.progress, &v.because) {
                (Progress::CanProgress, Some(b))
                    if !matches!(v.blocked_on, crate::analysis::BlockedOn::Running) =>
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
