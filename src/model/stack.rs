//! Stack frames: Python frames from py-spy, native frames from the unwinder.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One Python frame, innermost first in a stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PyFrame {
    /// Function (code object) name, e.g. `join` or `<module>`.
    pub function: String,
    /// Full path of the source file as the interpreter knows it.
    pub file: String,
    /// Line being executed (0 when unknown).
    pub line: i32,
    /// The frame was entered from C (py-spy's `is_entry || is_shim_entry`): the outermost frame
    /// of its eval loop. Lets native and Python stacks be merged exactly (3.11+ runs several
    /// Python frames in one eval loop).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entry: bool,
}

impl PyFrame {
    /// True for code the user wrote: not the standard library, not site-packages, not frozen.
    /// Derived from the path so that recorded snapshots are judged the same way.
    pub fn is_user_code(&self) -> bool {
        let f = self.file.as_str();
        !(f.starts_with('<')
            || f.contains("/lib/python")
            || f.contains("/site-packages/")
            || f.contains("/dist-packages/")
            || f.contains("/lib64/python"))
    }

    /// Short `file:line` with only the file's last path component.
    pub fn short_location(&self) -> String {
        let base = self.file.rsplit('/').next().unwrap_or(&self.file);
        format!("{}:{}", base, self.line)
    }

    /// `file.py:12 function`: how a frame is compared across looks.
    pub fn top_key(&self) -> String {
        format!("{} {}", self.short_location(), self.function)
    }

    /// True when this frame is `function` in a file whose path ends with `file_suffix`.
    /// Accepts qualified names too (`Queue._feed` matches `_feed`: 3.11+ reports qualnames).
    pub fn is(&self, file_suffix: &str, function: &str) -> bool {
        self.file.ends_with(file_suffix) && self.named(function)
    }

    /// True when the function is `name`, bare or qualified (`Class.name`).
    pub fn named(&self, name: &str) -> bool {
        self.function == name
            || (self.function.len() > name.len()
                && self.function.ends_with(name)
                && self.function.as_bytes()[self.function.len() - name.len() - 1] == b'.')
    }
}

/// The Python side of one thread, as read from the interpreter's thread state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PyThread {
    /// `threading.get_ident()`: the thread's `pthread_t`, not a TID.
    pub thread_id: u64,
    /// Name from `threading` (e.g. `MainThread`, `QueueFeederThread`), when known.
    pub name: Option<String>,
    /// This thread holds the GIL.
    pub owns_gil: bool,
    /// py-spy's idle flag (false when the OS shows the thread sleeping).
    pub active: bool,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
}

impl PyThread {
    /// The innermost frame of user code, if any. Frames below multiprocessing's
    /// `BaseProcess._bootstrap` are the parent's stack copied by fork, not this process's work,
    /// so the search stops there.
    pub fn user_frame(&self) -> Option<&PyFrame> {
        self.own_frames().iter().find(|f| f.is_user_code())
    }

    /// The frames this process runs itself: up to and including `_bootstrap` of
    /// `multiprocessing/process.py` when present (the rest was inherited at fork).
    pub fn own_frames(&self) -> &[PyFrame] {
        match self
            .frames
            .iter()
            .position(|f| f.is("multiprocessing/process.py", "_bootstrap"))
        {
            Some(i) => &self.frames[..=i],
            None => &self.frames,
        }
    }
    /// True when any of the process's own frames ([`PyThread::own_frames`]: not those
    /// inherited at fork) is `function` in a file ending with `file_suffix`.
    pub fn has_frame(&self, file_suffix: &str, function: &str) -> bool {
        self.own_frames()
            .iter()
            .any(|f| f.is(file_suffix, function))
    }
}

/// One native frame from the CFI unwinder, symbolized where symbols exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct NativeFrame {
    /// The instruction address (for caller frames: the return address).
    pub addr: u64,
    /// The mapped file the address falls in (e.g. `libc.so.6`).
    pub module: Option<String>,
    /// Symbol name, demangled where it applies.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// True when a native stack is waiting to take the GIL (a `take_gil` frame, as pystack and
/// CPython's gdb helpers decide).
pub fn waits_for_gil(frames: &[NativeFrame]) -> bool {
    frames.iter().any(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n == "take_gil" || n.starts_with("take_gil."))
    })
}
