//! The sender of a signal, found in the source when no look caught it: `p.terminate()` and the
//! end of a `with Pool()` block return within a millisecond, usually before the stack history's
//! look at the exit reads the parent. So, for a process that a signal ended and whose sender
//! is unknown, the function its parent is in now is read backwards from the current line for
//! a call that sends that signal: `.terminate()` or the end of a `with ...Pool(...)` block
//! (SIGTERM), `.kill()` (SIGKILL), `os.kill(`, `os.killpg(` or `.send_signal(` (any). The
//! nearest one above wins and is recorded as the likely sender, saying how it was found. When
//! the parent shows none (a forkserver started the process), the other processes are read.
//! Nothing is traced: this is a reading of the source file, bounded to [`MAX_BYTES`].

use crate::model::{LastStack, Pid, ProcessSnap, PyFrame, Sender, Snapshot};

/// Source files larger than this are not read.
const MAX_BYTES: u64 = 2 << 20;

/// The signal number of an `ended` text such as `signal 15 (SIGTERM)`.
fn signal_of(ended: &str) -> Option<i32> {
    ended
        .strip_prefix("signal ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Each line of `text` with comments dropped and the inside of string literals blanked, and the
/// bracket depth at its start (a line starting inside brackets continues a statement).
fn code_lines(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    // The open string: its quote and whether it is triple-quoted.
    let mut open: Option<(char, bool)> = None;
    for line in text.lines() {
        let start = if open.is_some() { usize::MAX } else { depth };
        let mut code = String::with_capacity(line.len());
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match open {
                Some((q, triple)) => {
                    if c == '\\' {
                        i += 2;
                        code.push(' ');
                        continue;
                    }
                    if c == q && (!triple || chars.get(i + 1..i + 3) == Some(&[q, q][..])) {
                        open = None;
                        i += if triple { 3 } else { 1 };
                        code.push(q);
                        continue;
                    }
                    code.push(' ');
                }
                None => match c {
                    '#' => break,
                    '\'' | '"' => {
                        let triple = chars.get(i + 1..i + 3) == Some(&[c, c][..]);
                        open = Some((c, triple));
                        i += if triple { 3 } else { 1 };
                        code.push(c);
                        continue;
                    }
                    '(' | '[' | '{' => {
                        depth += 1;
                        code.push(c);
                    }
                    ')' | ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        code.push(c);
                    }
                    _ => code.push(c),
                },
            }
            i += 1;
        }
        // A one-quote string does not span lines (a backslash continuation aside).
        if matches!(open, Some((_, false))) {
            open = None;
        }
        out.push((code, start));
    }
    out
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// A `def`/`async def`/`class` line's name.
fn defines(code: &str) -> Option<&str> {
    let t = code.trim_start();
    let rest = t
        .strip_prefix("def ")
        .or_else(|| t.strip_prefix("async def "))
        .or_else(|| t.strip_prefix("class "))?;
    rest.split(['(', ':', ' ']).next()
}

/// The signal-sending call on a statement line, if any, and whether it sends `signal`.
fn call_on(code: &str, signal: i32) -> Option<&'static str> {
    let any = ["os.kill(", "os.killpg(", ".send_signal("]
        .iter()
        .find(|k| code.contains(*k))
        .map(|k| match *k {
            "os.kill(" => "os.kill",
            "os.killpg(" => "os.killpg",
            _ => "send_signal()",
        });
    if any.is_some() {
        return any;
    }
    if signal == libc::SIGTERM && code.contains(".terminate(") {
        return Some("terminate()");
    }
    if signal == libc::SIGKILL && code.contains(".kill(") {
        return Some("kill()");
    }
    None
}

/// A `with` statement opening a process pool (not a `ThreadPool`).
fn opens_pool(code: &str) -> bool {
    let t = code.trim_start();
    (t.starts_with("with ") || t.starts_with("async with "))
        && code.contains("Pool(")
        && !code.contains("ThreadPool(")
}

/// The nearest call above `line` (1-based) inside `function` of `text` that sends `signal`, or
/// the end of a `with ...Pool(...)` block `line` is past (SIGTERM): its 1-based line and name.
/// None when the function's `def` is not where it should be (the file changed since).
pub fn scan_above(text: &str, line: usize, function: &str, signal: i32) -> Option<(usize, String)> {
    let lines = code_lines(text);
    let here = line.checked_sub(1)?;
    let (cur, _) = lines.get(here)?;
    // Back to the function's `def`: the first definition indented less than everything since.
    let short = function.rsplit('.').next().unwrap_or(function);
    let mut low = indent(cur);
    let mut start = 0;
    for j in (0..here).rev() {
        let (code, depth) = &lines[j];
        if *depth != 0 || code.trim().is_empty() {
            continue;
        }
        let ind = indent(code);
        if ind < low {
            if let Some(name) = defines(code) {
                if code.trim_start().starts_with("class ") {
                    return None;
                }
                if short != "<module>" && name != short {
                    return None;
                }
                start = j + 1;
                break;
            }
            low = ind;
        }
    }
    if start == 0 && short != "<module>" {
        return None;
    }
    // Forward to the current line: calls, and `with` blocks opened and closed; nested
    // definitions are skipped.
    let mut best: Option<(usize, usize, String)> = None; // (when, line, name)
    let mut skip_deeper: Option<usize> = None;
    let mut pools: Vec<(usize, usize)> = Vec::new(); // (indent, line) of open `with Pool`
    for (j, (code, depth)) in lines.iter().enumerate().take(here + 1).skip(start) {
        if code.trim().is_empty() {
            continue;
        }
        let stmt = *depth == 0;
        let ind = indent(code);
        if stmt {
            if skip_deeper.is_some_and(|d| ind <= d) {
                skip_deeper = None;
            }
            while pools.last().is_some_and(|(w, _)| ind <= *w) {
                if let Some((_, at)) = pools.pop() {
                    if signal == libc::SIGTERM {
                        best = Some((
                            j,
                            at + 1,
                            "Pool.__exit__ (the end of its `with` block)".into(),
                        ));
                    }
                }
            }
        }
        if j == here || skip_deeper.is_some() {
            continue;
        }
        if stmt && defines(code).is_some() {
            skip_deeper = Some(ind);
            continue;
        }
        if stmt && opens_pool(code) {
            pools.push((ind, j));
        }
        if let Some(name) = call_on(code, signal) {
            best = Some((j, j + 1, name.into()));
        }
    }
    best.map(|(_, l, n)| (l, n))
}

/// Reads a source file of `pid` (through its root, for a process in another mount namespace).
fn read_source(pid: Pid, file: &str) -> Option<String> {
    let rooted = format!("/proc/{}/root{file}", pid.0);
    [rooted.as_str(), file].iter().find_map(|p| {
        let ok = std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_BYTES);
        ok.then(|| std::fs::read_to_string(p).ok()).flatten()
    })
}

/// The signal-sending call above the line `proc` is at now (each user frame of each thread,
/// the main thread first, innermost frames first): its frame (at the call's line) and name.
fn found_in(proc: &ProcessSnap, signal: i32) -> Option<(PyFrame, String, String)> {
    let mut threads: Vec<_> = proc.threads.iter().collect();
    threads.sort_by_key(|t| t.tid.0 != proc.pid.0);
    threads
        .iter()
        .filter_map(|t| t.py.as_ref())
        .flat_map(|py| py.own_frames().iter().filter(|f| f.is_user_code()))
        .find_map(|f| {
            let text = read_source(proc.pid, &f.file)?;
            let at = usize::try_from(f.line).ok()?;
            let (line, call) = scan_above(&text, at, &f.function, signal)?;
            let frame = PyFrame {
                line: line as i32,
                entry: false,
                ..f.clone()
            };
            Some((
                frame,
                call,
                format!("{}() above {}", f.function, f.short_location()),
            ))
        })
}

/// Gives each process a signal ended with no known sender the call found in the source above
/// the line its parent is at now, else (a forkserver's or a reparented child) above the line
/// of another process of the tree.
pub fn fill(snap: &mut Snapshot) {
    let now = super::tree::now_ms();
    for i in 0..snap.gone.len() {
        let g = &snap.gone[i];
        let Some(signal) = g.ended.as_deref().and_then(signal_of) else {
            continue;
        };
        if g.last_stack.as_ref().is_some_and(|l| l.sender.is_some()) {
            continue;
        }
        let parent = g.ppid;
        let mut procs: Vec<&ProcessSnap> =
            snap.processes.iter().filter(|p| p.state != 'Z').collect();
        procs.sort_by_key(|p| Some(p.pid) != parent);
        let Some((p, (frame, call, place))) = procs
            .iter()
            .find_map(|p| found_in(p, signal).map(|f| (p.pid, f)))
        else {
            continue;
        };
        let whose = if Some(p) == parent {
            "its parent's"
        } else {
            "another process's"
        };
        let sender = Sender {
            pid: p,
            call,
            user_line: Some(frame),
            method: format!(
                "found in the source of {whose} {place}, the line it is at now; no look \
                 caught the call itself"
            ),
        };
        snap.gone[i]
            .last_stack
            .get_or_insert_with(|| LastStack {
                seen_at_ms: now,
                threads: Vec::new(),
                sender: None,
                exit_at: None,
            })
            .sender = Some(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: i32 = libc::SIGTERM;
    const KILL: i32 = libc::SIGKILL;

    #[test]
    fn terminate_above_the_blocked_line() {
        let src = "def hold(lock):\n    a.terminate()\n\ndef main():\n    a.start()\n    \
                   a.terminate()  # CULPRIT\n    a.join()\n    fx.write(\"x\",\n        \
                   {'a': 1})\n    lock.acquire()\n";
        assert_eq!(
            scan_above(src, 10, "main", TERM),
            Some((6, "terminate()".into()))
        );
        // Not the signal terminate() sends; nor another function's; nor after the line.
        assert_eq!(scan_above(src, 10, "main", KILL), None);
        assert_eq!(scan_above(src, 5, "main", TERM), None);
        // A stale file: the line is not in `main`.
        assert_eq!(scan_above(src, 10, "other", TERM), None);
        // Qualified names (3.11+) match their last part.
        assert_eq!(scan_above(src, 10, "X.main", TERM).map(|x| x.0), Some(6));
    }

    #[test]
    fn the_end_of_a_with_pool_block() {
        let src = "def main():\n    q = Q()\n    with ctx.Pool(2,\n              initargs=(q,)) as pool:  # x\n        pool.map_async(f, r)\n        first = q.get()\n    got = [first, q.get()]\n    while got:\n        got.append(q.get())\n";
        assert_eq!(
            scan_above(src, 9, "main", TERM).map(|x| x.0),
            Some(3),
            "past the block"
        );
        assert_eq!(scan_above(src, 6, "main", TERM), None, "inside the block");
        assert_eq!(scan_above(src, 9, "main", KILL), None);
        let threads =
            "def main():\n    with ThreadPool(2) as p:\n        p.map(f, r)\n    q.get()\n";
        assert_eq!(scan_above(threads, 4, "main", TERM), None);
    }

    #[test]
    fn os_kill_any_signal_strings_and_nested_defs_skipped() {
        let src = "import os\n\ndef main():\n    def later():\n        p.kill()\n    s = \"p.kill()\"  # p.kill()\n    os.kill(pid, 9)\n    '''\n    p.terminate()\n    '''\n    ev.wait()\n";
        assert_eq!(
            scan_above(src, 11, "main", KILL),
            Some((7, "os.kill".into()))
        );
        assert_eq!(scan_above(src, 11, "main", 10).map(|x| x.0), Some(7));
        assert_eq!(
            scan_above(src, 6, "main", KILL),
            None,
            "nested def, a string"
        );
        assert_eq!(scan_above(src, 11, "main", TERM).map(|x| x.0), Some(7));
        // Module level.
        let module = "import os\ndef f():\n    p.kill()\np.kill()\nq.get()\n";
        assert_eq!(
            scan_above(module, 5, "<module>", KILL),
            Some((4, "kill()".into()))
        );
    }

    #[test]
    fn signals_of_endings() {
        assert_eq!(signal_of("signal 15 (SIGTERM)"), Some(15));
        assert_eq!(signal_of("signal 9 (SIGKILL), core dumped"), Some(9));
        assert_eq!(signal_of("exit 1"), None);
    }
}
