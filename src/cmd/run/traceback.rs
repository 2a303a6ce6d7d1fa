//! Python tracebacks recognised in a stream of stderr lines: `Traceback (most recent call
//! last):`, with the headers that say whose it is (`Exception in thread NAME:`,
//! multiprocessing's `Process NAME:`, `Exception ignored in: ...`) and the `RemoteTraceback`
//! a Pool task's exception carries. Pure: lines and their arrival times in,
//! [`model::Traceback`](crate::model::Traceback)s out. Bounded: one traceback in progress, at
//! most [`MAX_FRAMES`] frames each, lines cut at [`MAX_LINE`].
//!
//! Chained exceptions (`During handling of the above exception...`, `The above exception was
//! the direct cause...`) stay one traceback: the first (root) one's frames and exception line,
//! which is where the cause is; a remote traceback marks the whole chain [`TracebackKind::Remote`].

use crate::model::past::MAX_FRAMES;
use crate::model::{PyFrame, Traceback, TracebackKind};

/// Longest line kept (a line longer than this is cut; the exception message is quoted).
pub const MAX_LINE: usize = 1000;

/// Where the parser is.
#[derive(Debug, Default)]
enum State {
    /// Between tracebacks; a header may have been read.
    #[default]
    Idle,
    /// Inside `Traceback (most recent call last):`, reading frames.
    Frames,
    /// Just after an exception line: a chain may continue it.
    After,
}

/// A streaming traceback recogniser.
#[derive(Debug, Default)]
pub struct Parser {
    state: State,
    /// `(kind, name)` of the header just read, waiting for its `Traceback` line.
    header: Option<(TracebackKind, Option<String>)>,
    /// A RemoteTraceback's `"""` block: 1 = its opening quotes are next, 2 = inside it.
    remote: u8,
    /// The traceback being read (frames outermost first while reading).
    current: Option<Traceback>,
    /// A chained traceback is being read: frames and exception go nowhere, the first stays.
    chained: bool,
    /// Index in `done` of the traceback a chain continues.
    done: Vec<Traceback>,
}

/// Strips ANSI color sequences (3.13+ colors tracebacks on a terminal) and a trailing `\r`.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    let mut out = out.trim_end_matches(['\r', '\n']).to_string();
    if out.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// `  File "/x/y.py", line 12, in task` as a frame.
fn frame(line: &str) -> Option<PyFrame> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (file, rest) = rest.rsplit_once("\", line ")?;
    let (num, func) = match rest.split_once(", in ") {
        Some((n, f)) => (n, f.trim()),
        None => (rest, "?"),
    };
    Some(PyFrame {
        function: func.to_string(),
        file: file.to_string(),
        line: num.trim().parse().ok()?,
        entry: false,
    })
}

/// A header line: what kind of traceback follows, and the name it gives.
fn header(line: &str) -> Option<(TracebackKind, Option<String>)> {
    if let Some(name) = line
        .strip_prefix("Exception in thread ")
        .and_then(|r| r.strip_suffix(':'))
    {
        return Some((TracebackKind::Thread, Some(name.to_string())));
    }
    if let Some(name) = line
        .strip_prefix("Process ")
        .and_then(|r| r.strip_suffix(':'))
        .filter(|n| !n.is_empty() && !n.contains(' '))
    {
        return Some((TracebackKind::Process, Some(name.to_string())));
    }
    if line.starts_with("Exception ignored in") {
        return Some((TracebackKind::Ignored, None));
    }
    None
}

const START: &str = "Traceback (most recent call last):";

impl Parser {
    /// Feeds one line (without its newline) read at `at_ms`.
    pub fn line(&mut self, raw: &str, at_ms: u64) {
        let line = plain(raw);
        let l = line.as_str();
        if self.remote == 2 && l.trim() == "\"\"\"" {
            // The end of a remote traceback's block: what follows is the local chain.
            self.remote = 0;
            self.finish_current();
            self.state = State::After;
            return;
        }
        match self.state {
            State::Frames => {
                if l.starts_with("  File \"") {
                    if let (Some(f), Some(t), false) =
                        (frame(l), self.current.as_mut(), self.chained)
                    {
                        t.frames.push(f);
                    }
                    return;
                }
                if l.starts_with(' ') || l.is_empty() || l.starts_with('^') || l.starts_with('~') {
                    // Source lines, carets, `[Previous line repeated N more times]`.
                    return;
                }
                // The exception line ends the frames.
                if !self.chained {
                    if let Some(t) = self.current.as_mut() {
                        t.exception = l.to_string();
                    }
                }
                self.finish_current();
                self.state = if self.remote == 2 {
                    State::Idle
                } else {
                    State::After
                };
            }
            State::After => {
                if l.trim().is_empty() {
                    return;
                }
                if l.starts_with("During handling of the above exception")
                    || l.starts_with("The above exception was the direct cause")
                {
                    self.chained = true;
                    self.state = State::Idle;
                    return;
                }
                self.chained = false;
                self.state = State::Idle;
                self.idle(l, at_ms);
            }
            State::Idle => self.idle(l, at_ms),
        }
    }

    fn idle(&mut self, l: &str, at_ms: u64) {
        if l == START {
            let (kind, name) = self
                .header
                .take()
                .unwrap_or((TracebackKind::Uncaught, None));
            if self.chained {
                // The rest of a chain: its first traceback stays as it was.
                self.current = None;
                self.state = State::Frames;
                return;
            }
            let kind = if self.remote == 2 {
                TracebackKind::Remote
            } else {
                kind
            };
            self.current = Some(Traceback {
                kind,
                at_ms,
                process_name: name.clone().filter(|_| kind == TracebackKind::Process),
                thread_name: name.filter(|_| kind == TracebackKind::Thread),
                pid: None,
                attributed: None,
                frames: Vec::new(),
                exception: String::new(),
                fix_at: None,
            });
            self.state = State::Frames;
            return;
        }
        if l.ends_with("RemoteTraceback: ") || l.ends_with("RemoteTraceback:") {
            // `multiprocessing.pool.RemoteTraceback: ` then `"""` then the remote traceback.
            self.remote = 1;
            self.chained = false;
            return;
        }
        if l.trim() == "\"\"\"" {
            if self.remote == 1 {
                self.remote = 2;
            }
            return;
        }
        if let Some(h) = header(l) {
            self.chained = false;
            self.header = Some(h);
            return;
        }
        // `Exception ignored in: <...>` may be followed by the traceback; anything else clears
        // a header that was not one.
        if !l.trim().is_empty() {
            self.header = None;
            self.chained = false;
        }
    }

    /// Moves the traceback in progress (if any, with an exception line) to `done`.
    fn finish_current(&mut self) {
        if let Some(mut t) = self.current.take() {
            t.frames.reverse();
            t.frames.truncate(MAX_FRAMES);
            if !t.exception.is_empty() || !t.frames.is_empty() {
                self.done.push(t);
            }
        }
    }

    /// The tracebacks completed since the last call.
    pub fn take(&mut self) -> Vec<Traceback> {
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Traceback> {
        let mut p = Parser::default();
        for (i, l) in text.lines().enumerate() {
            p.line(l, 1000 + i as u64);
        }
        p.take()
    }

    #[test]
    fn process_header_and_frames() {
        let t = parse(
            "noise\nProcess Process-1:\nTraceback (most recent call last):\n  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 314, in _bootstrap\n    self.run()\n  File \"/w/app.py\", line 20, in consume\n    1 / 0\n    ~~^~~\nZeroDivisionError: division by zero\nafter\n",
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TracebackKind::Process);
        assert_eq!(t[0].process_name.as_deref(), Some("Process-1"));
        assert_eq!(t[0].exception, "ZeroDivisionError: division by zero");
        assert_eq!(t[0].frames[0].short_location(), "app.py:20");
        assert_eq!(t[0].frames[0].function, "consume");
        assert_eq!(t[0].at_ms, 1002);
        assert_eq!(t[0].user_frame().map(|f| f.line), Some(20));
    }

    #[test]
    fn thread_header_with_colors() {
        let t = parse(
            "Exception in thread Thread-3 (_handle_results):\n\x1b[35mTraceback (most recent call last):\x1b[0m\n  File \"/p/lib/python3.14/threading.py\", line 1, in _bootstrap_inner\n  File \"/p/lib/python3.14/multiprocessing/pool.py\", line 579, in _handle_results\n    task = get()\nTypeError: MyError.__init__() missing 1 required positional argument: 'b'\n",
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TracebackKind::Thread);
        assert_eq!(
            t[0].thread_name.as_deref(),
            Some("Thread-3 (_handle_results)")
        );
        assert!(t[0].exception.starts_with("TypeError: MyError.__init__()"));
        assert!(t[0].user_frame().is_none());
    }

    #[test]
    fn chains_keep_the_root_and_remote_marks_it() {
        let t = parse(
            "multiprocessing.pool.RemoteTraceback: \n\"\"\"\nTraceback (most recent call last):\n  File \"/p/lib/python3.12/multiprocessing/pool.py\", line 125, in worker\n  File \"/w/job.py\", line 7, in task\n    raise ValueError(x)\nValueError: 3\n\"\"\"\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"/w/job.py\", line 30, in <module>\n    pool.map(task, r)\nValueError: 3\nnext line\nTraceback (most recent call last):\n  File \"/w/b.py\", line 2, in <module>\nKeyError: 'k'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/w/b.py\", line 4, in <module>\nNameError: y\n",
        );
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].kind, TracebackKind::Remote);
        assert_eq!(t[0].frames[0].short_location(), "job.py:7");
        assert_eq!(t[0].exception, "ValueError: 3");
        assert_eq!(t[1].kind, TracebackKind::Uncaught);
        assert_eq!(t[1].exception, "KeyError: 'k'");
    }

    #[test]
    fn ignored_exceptions_and_bounds() {
        let mut text = String::from("Exception ignored in: <function Foo.__del__ at 0x1>\nTraceback (most recent call last):\n");
        for i in 0..100 {
            text.push_str(&format!("  File \"/w/r.py\", line {i}, in f\n"));
        }
        text.push_str(&format!("RecursionError: {}\n", "x".repeat(5000)));
        let t = parse(&text);
        assert_eq!(t[0].kind, TracebackKind::Ignored);
        assert_eq!(t[0].frames.len(), MAX_FRAMES);
        assert_eq!(t[0].frames[0].line, 99, "innermost kept");
        assert!(t[0].exception.len() <= MAX_LINE);
    }
}
