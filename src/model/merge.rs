//! Merging a thread's Python stack with its native stack, the way `py-spy dump --native` shows
//! it: each run of CPython eval-loop frames is replaced by the Python frame(s) it executes, other
//! interpreter-internal frames are dropped unless they say something about waiting (locks,
//! sleeps, the GIL), and frames of libc and extension modules are kept. Pure: no IO.

use super::{NativeFrame, PyFrame};

/// One frame of a merged stack (innermost first). JSON: `{"python": {...}}` or
/// `{"native": {...}}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MergedFrame {
    /// A Python frame, in place of the eval-loop frame that runs it.
    Python(PyFrame),
    /// A native frame (C, C++, Rust: libc, extension modules, interesting interpreter parts).
    Native(NativeFrame),
}

/// The eval loop itself. On 2.7 and ≤3.5 this is `PyEval_EvalFrameEx` (see [`anchor_names`]).
const EVAL_LOOP: &str = "_PyEval_EvalFrameDefault";
/// Wrappers around one eval-loop invocation; they fold into the adjacent eval frame.
const EVAL_WRAPPERS: &[&str] = &[
    "PyEval_EvalFrameEx",
    "PyEval_EvalFrame",
    "_PyEval_EvalFrame",
];

/// Interpreter functions worth keeping (first token of the name split on `_` and `.`): py-spy's
/// list, plus the GIL, `acquire_timed`, and the 3.13 parking lot.
const KEEP_PREFIXES: &[&str] = &[
    "time",
    "sys",
    "gc",
    "os",
    "unicode",
    "thread",
    "stringio",
    "sre",
    "PyGilState",
    "PyThread",
    "lock",
    "rlock",
    "acquire",
    "PyParkingLot",
    "PySemaphore",
    "PyMutex",
    "PyEvent",
    "PyCOND",
    "PyMUTEX",
];
const KEEP_NAMES: &[&str] = &["take_gil", "drop_gil"];
/// Process and thread entry points that add nothing to a hang report.
const OUTER_NOISE: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "__libc_start_main_impl",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "start_thread",
];

/// The function name without `.cold`, `.constprop.0`, `.isra.0` … suffixes.
fn base_name(f: &NativeFrame) -> Option<&str> {
    let n = f.function.as_deref()?;
    Some(n.split('.').next().unwrap_or(n))
}

fn is_interpreter(f: &NativeFrame) -> bool {
    f.module
        .as_deref()
        .is_some_and(|m| m.starts_with("libpython") || m.starts_with("python"))
}

fn keep_interpreter_frame(name: &str) -> bool {
    if KEEP_NAMES.contains(&name) {
        return true;
    }
    let first = name.split(['_', '.']).find(|t| !t.is_empty());
    first.is_some_and(|t| KEEP_PREFIXES.contains(&t))
}

/// A native frame's role in merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The eval loop: starts a new run.
    Anchor,
    /// An eval-loop wrapper: joins the neighbouring run.
    Wrapper,
    Other,
}

fn role(group: &[NativeFrame], anchors: &[&str]) -> Role {
    let mut r = Role::Other;
    for f in group {
        match base_name(f) {
            Some(n) if anchors.contains(&n) => return Role::Anchor,
            Some(n) if EVAL_WRAPPERS.contains(&n) => r = Role::Wrapper,
            _ => {}
        }
    }
    r
}

/// The functions that count as "the eval loop" for this stack: `_PyEval_EvalFrameDefault` when
/// present (3.6+), else `PyEval_EvalFrameEx` (2.7, ≤3.5).
fn anchor_names(native: &[NativeFrame]) -> &'static [&'static str] {
    if native.iter().any(|f| base_name(f) == Some(EVAL_LOOP)) {
        &[EVAL_LOOP]
    } else {
        &["PyEval_EvalFrameEx"]
    }
}

enum Item {
    Native(Vec<NativeFrame>),
    /// One eval-loop invocation: its native frames (kept if no Python frame is left for it).
    Run(Vec<NativeFrame>),
}

/// Merges `py` (innermost first, from py-spy) into `native` (innermost first, from
/// the native sampler (`collect::native::sample`)). Without py-spy's `is_entry` flags the split of Python frames over eval
/// runs is a heuristic: with as many runs as Python frames (3.8–3.10) it is one to one; with
/// fewer (3.11+, where Python-to-Python calls stay in one eval loop) each inner run takes one
/// frame and the outermost run takes the rest. Use [`merge_with_entries`] when the flags are
/// known. If the native stack has no eval frame at all (a failed unwind), the Python frames
/// follow the native ones; an eval run left without Python frames (py-spy saw fewer frames,
/// or none) stays as its native frames.
pub fn merge(py: &[PyFrame], native: &[NativeFrame]) -> Vec<MergedFrame> {
    merge_inner(py, None, native)
}

/// [`merge`] with py-spy's per-frame `is_entry` flag (`entries[i]` for `py[i]`; 3.11+: the
/// frame was entered from C, so it is the outermost frame of its eval loop). Pass
/// `is_entry || is_shim_entry`, as py-spy does for 3.12+.
pub fn merge_with_entries(
    py: &[PyFrame],
    entries: &[bool],
    native: &[NativeFrame],
) -> Vec<MergedFrame> {
    merge_inner(py, Some(entries), native)
}

fn merge_inner(
    py: &[PyFrame],
    entries: Option<&[bool]>,
    native: &[NativeFrame],
) -> Vec<MergedFrame> {
    let anchors = anchor_names(native);
    // Group inlined frames (same address) and classify; fold wrappers into runs.
    let mut items: Vec<Item> = Vec::new();
    let mut i = 0;
    while i < native.len() {
        let addr = native[i].addr;
        let mut j = i + 1;
        while j < native.len() && native[j].addr == addr {
            j += 1;
        }
        let group = native[i..j].to_vec();
        match (role(&group, anchors), items.last_mut()) {
            (Role::Anchor, _) => items.push(Item::Run(group)),
            // A wrapper is the caller of the eval loop just inside it: same invocation.
            (Role::Wrapper, Some(Item::Run(frames))) => frames.extend(group),
            // A wrapper on its own (stopped inside it) stands for an eval invocation.
            (Role::Wrapper, _) => items.push(Item::Run(group)),
            (Role::Other, _) => items.push(Item::Native(group)),
        }
        i = j;
    }
    let runs = items.iter().filter(|it| matches!(it, Item::Run(_))).count();

    // How many Python frames each run takes, innermost run first.
    let mut takes = vec![0usize; runs];
    match entries {
        Some(e) => {
            let mut k = 0;
            for t in takes.iter_mut() {
                let start = k;
                while k < py.len() {
                    k += 1;
                    if e.get(k - 1).copied().unwrap_or(true) {
                        break;
                    }
                }
                *t = k - start;
            }
        }
        None => {
            if runs > 0 {
                for t in takes.iter_mut().take(py.len().min(runs)) {
                    *t = 1;
                }
                if py.len() > runs {
                    takes[runs - 1] += py.len() - runs;
                }
            }
        }
    }

    let mut out = Vec::new();
    let mut k = 0; // next Python frame
    let mut run = 0;
    for it in items {
        match it {
            Item::Native(group) => {
                for f in group {
                    let Some(name) = base_name(&f).map(str::to_string) else {
                        if !is_interpreter(&f) {
                            out.push(MergedFrame::Native(f));
                        }
                        continue;
                    };
                    if OUTER_NOISE.contains(&name.as_str()) {
                        continue;
                    }
                    if is_interpreter(&f) && !keep_interpreter_frame(&name) {
                        continue;
                    }
                    out.push(MergedFrame::Native(f));
                }
            }
            Item::Run(frames) => {
                let n = takes.get(run).copied().unwrap_or(0);
                run += 1;
                if n == 0 || k >= py.len() {
                    out.extend(frames.into_iter().map(MergedFrame::Native));
                    continue;
                }
                for f in py.iter().skip(k).take(n) {
                    out.push(MergedFrame::Python(f.clone()));
                }
                k += n;
            }
        }
    }
    // Python frames no eval run accounted for (no eval frames found, or more entries than runs).
    for f in py.iter().skip(k) {
        out.push(MergedFrame::Python(f.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(addr: u64, module: &str, function: &str) -> NativeFrame {
        NativeFrame {
            addr,
            module: Some(module.into()),
            function: Some(function.into()),
            file: None,
            line: None,
        }
    }
    fn p(function: &str) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: "/app/x.py".into(),
            line: 1,
            entry: false,
        }
    }
    const LP: &str = "libpython3.11.so.1.0";

    fn names(m: &[MergedFrame]) -> Vec<String> {
        m.iter()
            .map(|f| match f {
                MergedFrame::Python(p) => format!("py:{}", p.function),
                MergedFrame::Native(n) => format!("c:{}", n.function.clone().unwrap_or_default()),
            })
            .collect()
    }

    #[test]
    fn one_run_takes_all_python_frames_311() {
        let native = vec![
            n(1, "libc.so.6", "__futex_abstimed_wait_common"),
            n(2, "libc.so.6", "sem_wait"),
            n(3, LP, "PyThread_acquire_lock_timed"),
            n(4, LP, "acquire_timed"),
            n(5, LP, "lock_PyThread_acquire_lock"),
            n(6, LP, "method_vectorcall_VARARGS_KEYWORDS"),
            n(7, LP, "_PyEval_EvalFrameDefault"),
            n(8, LP, "_PyEval_Vector"),
            n(9, LP, "thread_run"),
            n(10, LP, "pythread_wrapper"),
            n(11, "libc.so.6", "start_thread"),
            n(12, "libc.so.6", "clone3"),
        ];
        let py = vec![
            p("worker"),
            p("run"),
            p("_bootstrap_inner"),
            p("_bootstrap"),
        ];
        assert_eq!(
            names(&merge(&py, &native)),
            vec![
                "c:__futex_abstimed_wait_common",
                "c:sem_wait",
                "c:PyThread_acquire_lock_timed",
                "c:acquire_timed",
                "c:lock_PyThread_acquire_lock",
                "py:worker",
                "py:run",
                "py:_bootstrap_inner",
                "py:_bootstrap",
                // py-spy keeps `thread*` interpreter frames; so do we.
                "c:thread_run",
            ]
        );
    }

    #[test]
    fn one_to_one_on_310_and_c_in_between_is_kept() {
        let native = vec![
            n(1, "libc.so.6", "read"),
            n(2, "_socket.cpython-310-x86_64-linux-gnu.so", "sock_recv"),
            n(3, LP, "_PyEval_EvalFrameDefault"),
            n(4, LP, "function_code_fastcall"),
            n(5, LP, "_PyEval_EvalFrameDefault"),
            n(6, "ext.so", "call_back_into_python"),
            n(7, LP, "_PyEval_EvalFrameDefault.cold"),
        ];
        let py = vec![p("inner"), p("middle"), p("outer")];
        assert_eq!(
            names(&merge(&py, &native)),
            vec![
                "c:read",
                "c:sock_recv",
                "py:inner",
                "py:middle",
                "c:call_back_into_python",
                "py:outer"
            ]
        );
    }

    #[test]
    fn entries_split_runs_exactly() {
        let native = vec![
            n(1, "libc.so.6", "poll"),
            n(2, LP, "_PyEval_EvalFrameDefault"),
            n(3, "ext.so", "cb"),
            n(4, LP, "_PyEval_EvalFrameDefault"),
        ];
        let py = vec![p("a"), p("b"), p("c"), p("d")];
        // a,b run in the inner loop (b entered from C); c,d in the outer one.
        let m = merge_with_entries(&py, &[false, true, false, true], &native);
        assert_eq!(
            names(&m),
            vec!["c:poll", "py:a", "py:b", "c:cb", "py:c", "py:d"]
        );
        // Heuristic without flags: inner run takes one, outer takes the rest.
        assert_eq!(
            names(&merge(&py, &native)),
            vec!["c:poll", "py:a", "c:cb", "py:b", "py:c", "py:d"]
        );
    }

    #[test]
    fn inlined_frames_of_an_eval_frame_go_with_it() {
        let native = vec![
            n(1, "libc.so.6", "epoll_wait"),
            n(2, LP, "_PyObject_VectorcallTstate"),
            n(2, LP, "_PyEval_EvalFrameDefault"),
        ];
        assert_eq!(
            names(&merge(&[p("select")], &native)),
            vec!["c:epoll_wait", "py:select"]
        );
    }

    #[test]
    fn wrappers_fold_into_the_eval_loop() {
        let native = vec![
            n(1, "libc.so.6", "sem_wait"),
            n(2, LP, "_PyEval_EvalFrameDefault"),
            n(3, LP, "PyEval_EvalFrameEx"),
            n(4, LP, "gen_send_ex"),
            n(5, LP, "_PyEval_EvalFrameDefault"),
        ];
        assert_eq!(
            names(&merge(&[p("gen"), p("main")], &native)),
            vec!["c:sem_wait", "py:gen", "py:main"]
        );
    }

    #[test]
    fn no_eval_frames_appends_python() {
        let native = vec![n(1, "libc.so.6", "read")];
        assert_eq!(names(&merge(&[p("f")], &native)), vec!["c:read", "py:f"]);
        assert_eq!(names(&merge(&[p("f")], &[])), vec!["py:f"]);
    }

    #[test]
    fn more_runs_than_frames_keeps_order() {
        let native = vec![
            n(1, LP, "_PyEval_EvalFrameDefault"),
            n(2, "x.so", "c"),
            n(3, LP, "_PyEval_EvalFrameDefault"),
        ];
        assert_eq!(
            names(&merge(&[p("f")], &native)),
            vec!["py:f", "c:c", "c:_PyEval_EvalFrameDefault"]
        );
        // No Python frames at all (py-spy failed for the thread): the native stack stays whole.
        assert_eq!(
            names(&merge(&[], &native)),
            vec![
                "c:_PyEval_EvalFrameDefault",
                "c:c",
                "c:_PyEval_EvalFrameDefault"
            ]
        );
    }

    #[test]
    fn python27_uses_evalframeex_as_the_loop() {
        let lp = "libpython2.7.so.1.0";
        let native = vec![
            n(1, "libc.so.6", "sem_wait"),
            n(2, lp, "PyEval_EvalFrameEx"),
            n(3, lp, "fast_function"),
            n(4, lp, "PyEval_EvalFrameEx"),
        ];
        assert_eq!(
            names(&merge(&[p("a"), p("b")], &native)),
            vec!["c:sem_wait", "py:a", "py:b"]
        );
    }
}
