//! Source lines a traceback implies but does not show: `TypeError: MyError.__init__() missing
//! 1 required positional argument` (an exception that cannot be unpickled, which kills a Pool's
//! result handler) names a class, not a frame. The fix goes in that class's `__init__`, so it
//! is looked up in the user files on the tree's stacks (at most [`MAX_FILES`] files of at most
//! [`MAX_BYTES`] each) and recorded as the traceback's `fix_at`.

use crate::model::{PyFrame, Snapshot};

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
}
