//! Partial failures recorded as data: a vanished process, EPERM on one child, a non-Python child.

use super::ids::{Pid, Tid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which collection step a diagnostic comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Walking `/proc/PID/task/*/children`.
    Tree,
    /// `/proc/PID/{stat,status,cmdline,exe,limits}`.
    Process,
    /// `/proc/PID/task/TID/{stat,syscall,wchan}`.
    Threads,
    /// `/proc/PID/fd` and pipe queries.
    Fds,
    /// `/proc/PID/maps`.
    Maps,
    /// Reading target memory (futex words, poll sets, semaphores).
    Memory,
    /// Unix socket peers via sock_diag netlink.
    SockDiag,
    /// Python stacks through the py-spy library.
    Python,
    /// Native stacks through ptrace.
    Native,
    /// The second (and later) looks used to detect progress.
    Resample,
}

/// What kind of failure it was; decides how the report words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagKind {
    /// The process or thread exited while it was being read.
    Gone,
    /// The kernel refused (EPERM/EACCES): another uid, no CAP_SYS_PTRACE, Yama.
    PermissionDenied,
    /// The process is not a Python interpreter mphang can read; /proc data is still recorded.
    NotPython,
    /// Anything else; the message says what.
    Failed,
}

/// One partial failure: where it happened and what the OS or library said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnostic {
    pub pid: Option<Pid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Tid>,
    pub stage: Stage,
    pub kind: DiagKind,
    pub message: String,
}
