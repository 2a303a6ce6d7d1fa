//! What happened before the hang was observed, as `run` and `attach` saw it while watching:
//! Python tracebacks printed to the tree's stderr ([`Traceback`]), and the last Python stack of
//! a process or thread that went away ([`LastStack`]), with the process most likely to have
//! signalled it ([`Sender`]). All bounded ([`MAX_TRACEBACKS`], [`MAX_FRAMES`]) and free of
//! locals; written by `cmd::run` (and `attach`), read by `analysis::past`.

use super::{Pid, PyFrame, PyThread};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many tracebacks are kept (the latest win).
pub const MAX_TRACEBACKS: usize = 32;
/// At most this many frames per traceback or per thread of a last stack (innermost kept).
pub const MAX_FRAMES: usize = 40;
/// At most this many threads per last stack.
pub const MAX_THREADS: usize = 16;

/// How a traceback on stderr was introduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TracebackKind {
    /// A bare `Traceback (most recent call last):` (an uncaught exception in a main thread).
    Uncaught,
    /// `Exception in thread NAME:` (`threading.excepthook`): the thread died.
    Thread,
    /// multiprocessing's `Process NAME:` header (`BaseProcess._bootstrap`): the process exits 1.
    Process,
    /// `Exception ignored in: ...` (`sys.unraisablehook`: a finalizer, a `__del__`).
    Ignored,
    /// A `RemoteTraceback` (a Pool or executor task's exception re-raised in the caller).
    Remote,
}

/// One Python traceback read from the tree's stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Traceback {
    pub kind: TracebackKind,
    /// Milliseconds since the Unix epoch when its first line was read.
    pub at_ms: u64,
    /// The process name multiprocessing printed (`Process NAME:`), e.g. `ForkPoolWorker-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_name: Option<String>,
    /// The thread name threading printed (`Exception in thread NAME:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    /// The process that printed it, when it could be told (a process that died right after
    /// printing it, or the only one of that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<Pid>,
    /// Why `pid` is believed (`exited 12 ms later with exit 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributed: Option<String>,
    /// Frames, innermost first (as stacks are), at most [`MAX_FRAMES`]; of a chained
    /// exception, the frames of the first (root) one.
    pub frames: Vec<PyFrame>,
    /// The exception line, e.g. `RuntimeError: producer crashed` (of the root exception).
    pub exception: String,
    /// The line where a fix goes when it is not a frame: `MyError.__init__` of an exception
    /// class that cannot be unpickled (found in the source of the files on the stacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_at: Option<PyFrame>,
}

impl Traceback {
    /// The innermost frame of user code.
    pub fn user_frame(&self) -> Option<&PyFrame> {
        self.fix_at
            .as_ref()
            .or_else(|| self.frames.iter().find(|f| f.is_user_code()))
    }
}

/// The last Python stack seen of a process (or of a thread) before it went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LastStack {
    /// Milliseconds since the Unix epoch of the look.
    pub seen_at_ms: u64,
    /// Its Python threads then (at most [`MAX_THREADS`], [`MAX_FRAMES`] frames each).
    pub threads: Vec<PyThread>,
    /// The process that most likely sent the signal it died of, when one was seen in a
    /// signal-sending call right after the exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    /// Where it most likely ended itself, when it exited (not killed by a signal) and no
    /// look caught the call: the first line calling `sys.exit(...)`, `os._exit(...)`,
    /// `exit(...)`/`quit(...)` or raising `SystemExit` at or after a user line of this stack,
    /// in the same function (read from the source by `run`, innermost user frame first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_at: Option<PyFrame>,
}

impl LastStack {
    /// The innermost user frame of the main thread (the first thread), else of any thread.
    pub fn user_frame(&self) -> Option<(&PyThread, &PyFrame)> {
        self.threads
            .iter()
            .find_map(|t| t.user_frame().map(|f| (t, f)))
    }
}

/// The likely sender of the signal that ended a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    pub pid: Pid,
    /// The call it was in: `Pool.terminate`, `Process.terminate`, `os.kill`, ...
    pub call: String,
    /// Its innermost user frame then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_line: Option<PyFrame>,
    /// How it was found: `python stack at exit` (a look at the other processes' stacks the
    /// moment the proc connector reported the exit).
    pub method: String,
}

/// A thread that went away while its process lived on (a dead Pool result handler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GoneThread {
    pub pid: Pid,
    /// Milliseconds since the Unix epoch when it was first missed.
    pub gone_at_ms: u64,
    /// Its last stack (one thread).
    pub last: LastStack,
}

/// Keeps the innermost [`MAX_FRAMES`] frames of each thread and at most [`MAX_THREADS`]
/// threads.
pub fn bound_threads(threads: &mut Vec<PyThread>) {
    threads.truncate(MAX_THREADS);
    for t in threads {
        t.frames.truncate(MAX_FRAMES);
    }
}

/// How long `run` or `attach` watched the tree for its past (tracebacks, last stacks, senders):
/// only what happened after `since_ms` can be known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Watched {
    /// `run` (from the command's start) or `attach` (from the moment it attached).
    pub by: String,
    /// Milliseconds since the Unix epoch when the watch began.
    pub since_ms: u64,
    /// What cannot be known, in words: for `attach`, that what happened before it started
    /// (processes that ended, tracebacks, signals) is unknown.
    pub unknown: String,
}
