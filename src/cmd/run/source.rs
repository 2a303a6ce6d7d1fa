//! Source lines a traceback implies but does not show: `TypeError: MyError.__init__() missing
//! 1 required positional argument` (an exception that cannot be unpickled, which kills a Pool's
//! result handler) names a class, not a frame. The fix goes in that class's `__init__`, so it
//! is looked up in the user files on the tree's stacks (at most [`MAX_FILES`] files of at most
//! [`MAX_BYTES`] each) and recorded as the traceback's `fix_at`. Likewise a process that
//! ended itself (`exit N`, e.g. `sys.exit()` inside a Pool task) did so on a line no 2 Hz look
//! caught: the first exit call after where it was last seen is recorded as its `exit_at`.

use crate::model::{PyFrame, Snapshot};
use std::collections::HashMap;

const MAX_FILES: usize = 64;
const MAX_BYTES: u64 = 2 << 20;

/// The class of `Name.__init__() ...` or `mod.Name.__init__() ...` in an exception line.
fn init_class(exception: &str) -> Option<&str> {
    let (_, msg) = exception.split_once(": ")?;
    let head = msg.split("__init__()").next()?;
    if head.len() == msg.len() {
        return None;
    }
    let qual = head.strip_suffix('.')?;
    let name = qual.rsplit('.').next()?;
    (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')).then_some(name)
}

/// `def __init__` of `class NAME` in `text` (1-based line), else the class line.
fn find_init(text: &str, class: &str) -> Option<(i32, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("class ") else {
            continue;
        };
        if !rest.starts_with(class) || !rest[class.len()..].starts_with(['(', ':', ' ']) {
            continue;
        }
        let base = indent(l);
        for (j, m) in lines.iter().enumerate().skip(i + 1) {
            if m.trim().is_empty() {
                continue;
            }
            if indent(m) <= base {
                break;
            }
            if m.trim_start().starts_with("def __init__") {
                return Some((j as i32 + 1, "__init__".into()));
            }
        }
        return Some((i as i32 + 1, class.to_string()));
    }
    None
}

/// Fills `fix_at` of the tracebacks whose exception names a class's `__init__`.
pub fn fix_lines(snap: &mut Snapshot) {
    let mut files: Vec<String> = Vec::new();
    let frames = snap
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .filter_map(|t| t.py.as_ref())
        .flat_map(|p| &p.frames)
        .chain(snap.tracebacks.iter().flat_map(|t| &t.frames))
        .chain(
            snap.gone
                .iter()
                .filter_map(|g| g.last_stack.as_ref())
                .flat_map(|l| &l.threads)
                .flat_map(|t| &t.frames),
        );
    for f in frames {
        if f.is_user_code() && !files.contains(&f.file) && files.len() < MAX_FILES {
            files.push(f.file.clone());
        }
    }
    for t in &mut snap.tracebacks {
        let Some(class) = init_class(&t.exception) else {
            continue;
        };
        for file in &files {
            let ok = std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() <= MAX_BYTES);
            let Some(text) = ok.then(|| std::fs::read_to_string(file).ok()).flatten() else {
                continue;
            };
            if let Some((line, function)) = find_init(&text, class) {
                t.fix_at = Some(PyFrame {
                    function: format!("{class}.{function}")
                        .replace(&format!("{class}.{class}"), class),
                    file: file.clone(),
                    line,
                    entry: false,
                });
                break;
            }
        }
    }
}

/// True when `line` (code, comment stripped) ends the process: `sys.exit(`, `os._exit(`, a
/// bare `exit(`/`quit(` statement, or `raise SystemExit`.
fn exits(line: &str) -> bool {
    let code = line.split('#').next().unwrap_or("").trim();
    ["sys.exit(", "os._exit("].iter().any(|c| code.contains(c))
        || code.starts_with("exit(")
        || code.starts_with("quit(")
        || code.starts_with("raise SystemExit")
}

/// The first line at or after `line` (1-based) that [`exits`], within the function whose body
/// holds `line` (up to the first code line indented no deeper than its `def`).
fn exit_after(text: &str, line: i32) -> Option<(i32, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let here = indent(lines.get(at)?);
    let def = (0..at).rev().find(|&i| {
        let t = lines[i].trim_start();
        (t.starts_with("def ") || t.starts_with("async def ")) && indent(lines[i]) < here
    })?;
    let base = indent(lines[def]);
    for (i, l) in lines.iter().enumerate().skip(at) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if i > at && indent(l) <= base {
            break;
        }
        if exits(l) {
            return Some((i as i32 + 1, t.to_string()));
        }
    }
    None
}

/// Fills `exit_at` of the gone processes that exited (not by a signal) with a user line in
/// their last stack: the first exit call at or after a user frame's line in its function,
/// innermost user frame first (an outer caller may exit once the inner call returns).
pub fn exit_lines(snap: &mut Snapshot) {
    // Each file read once (a churning Pool's workers share theirs), at most MAX_FILES.
    let mut texts: HashMap<String, Option<String>> = HashMap::new();
    for g in &mut snap.gone {
        if !g.ended.as_deref().is_some_and(|e| e.starts_with("exit ")) {
            continue;
        }
        let Some(last) = g.last_stack.as_mut() else {
            continue;
        };
        if last.exit_at.is_some() {
            continue;
        }
        let found = last
            .threads
            .iter()
            .flat_map(|t| t.own_frames().iter().filter(|f| f.is_user_code()))
            .find_map(|f| {
                if !texts.contains_key(&f.file) && texts.len() < MAX_FILES {
                    let ok = std::fs::metadata(&f.file)
                        .is_ok_and(|m| m.is_file() && m.len() <= MAX_BYTES);
                    let text = ok.then(|| std::fs::read_to_string(&f.file).ok()).flatten();
                    texts.insert(f.file.clone(), text);
                }
                let text = texts.get(&f.file)?.as_deref()?;
                let (line, _) = exit_after(text, f.line)?;
                Some(PyFrame {
                    line,
                    entry: false,
                    ..f.clone()
                })
            });
        last.exit_at = found;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_from_exceptions() {
        assert_eq!(
            init_class("TypeError: MyError.__init__() missing 1 required positional argument: 'b'"),
            Some("MyError")
        );
        assert_eq!(
            init_class("TypeError: app.errors.Bad.__init__() takes 3 positional arguments"),
            Some("Bad")
        );
        assert_eq!(init_class("TypeError: __init__() missing 1"), None);
        assert_eq!(init_class("RuntimeError: boom"), None);
    }

    #[test]
    fn init_of_a_class() {
        let src = "import x\n\nclass MyErrorX(Exception):\n    pass\n\nclass MyError(Exception):\n    '''doc'''\n\n    def __init__(self, a, b):\n        super().__init__(a)\n";
        assert_eq!(find_init(src, "MyError"), Some((9, "__init__".into())));
        assert_eq!(
            find_init("class A:\n    x = 1\n", "A"),
            Some((1, "A".into()))
        );
        assert_eq!(find_init("class B:\n    pass\n", "A"), None);
    }

    #[test]
    fn exit_calls_after_a_line_in_its_function() {
        let src = "def task(x):\n    if x == 0:\n        ev.wait()\n        # sys.exit(9) in a comment\n\n        sys.exit(CODE)  # why\n    return x\n\ndef other():\n    sys.exit(1)\n";
        assert_eq!(
            exit_after(src, 3),
            Some((6, "sys.exit(CODE)  # why".into()))
        );
        assert_eq!(
            exit_after(src, 7),
            None,
            "the next function's exit is not this one's"
        );
        assert_eq!(exit_after(src, 10), Some((10, "sys.exit(1)".into())));
        assert_eq!(
            exit_after("x = 1\nsys.exit(0)\n", 1),
            None,
            "only inside a function"
        );
        let more = "def f():\n    g()\n    os._exit(3)\ndef h():\n    g()\n    raise SystemExit(2)\ndef q():\n    g()\n    exit()\n";
        assert_eq!(exit_after(more, 2).map(|e| e.0), Some(3));
        assert_eq!(exit_after(more, 5).map(|e| e.0), Some(6));
        assert_eq!(exit_after(more, 8).map(|e| e.0), Some(9));
        assert!(!exits("    self.exit_code = sys_exit_code(1)"));
        assert!(!exits("    if code:  # sys.exit(code)"));
    }
}
