//! The snapshot of a process tree: the serializable boundary between collection and analysis.
//!
//! A [`Snapshot`] is what `collect` produces from live processes, what `--save` writes and
//! `--from` reads, and what the replay fixtures hold. Everything downstream is a pure function
//! of it. Wire format: JSON, schema string [`SCHEMA`]; unknown fields are accepted (and dropped)
//! when read, so newer writers can add fields. docs/snapshot.schema.json is generated from these
//! types.

pub mod combine;
mod diag;
mod fd;
pub mod host;
mod ids;
pub mod merge;
pub mod past;
mod process;
pub mod qualify;
pub mod safe;
mod stack;
mod syscall;

pub use diag::{DiagKind, Diagnostic, Stage};
pub use fd::{Access, FdEntry, FdKind, OutsideHolder, PipeSnap, TcpEndpoint, TcpState};
pub use host::{HostInfo, NetNs};
pub use ids::{Inode, Pid, SemKey, ThreadRef, Tid};
pub use past::{GoneThread, LastStack, Sender, Traceback, TracebackKind, Watched};
pub use process::{
    Appeared, FdsAs, ProcessSnap, Role, SchedStat, SemMapping, StatusFd, ThreadLook, ThreadSnap,
    TimedWait,
};
pub use stack::{waits_for_gil, NativeFrame, PyFrame, PyThread};
pub use syscall::{
    mutex_owner, syscall_name, Decoded, Futex, FutexRegion, FutexWord, LockObject, MutexKind,
    MutexOwner, Syscall, SyscallState,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The schema string every snapshot carries; bumped on any incompatible change.
pub const SCHEMA: &str = "mphang/snapshot/v1";

/// A whole process tree at one moment, plus short later looks for progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// Always `mphang/snapshot/v1` ([`SCHEMA`]).
    #[schemars(extend("const" = "mphang/snapshot/v1"))]
    pub schema: String,
    /// Version of the mphang that took it.
    pub mphang_version: String,
    /// Wall-clock time of the first look, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The pid the user named.
    pub root: Pid,
    /// Kernel clock ticks per second (to turn `*_ticks` into time).
    pub clock_ticks: u64,
    /// How many looks were taken (1 = no progress check) and how far apart.
    pub looks: u32,
    pub interval_ms: u64,
    /// How long collection took, in milliseconds (first look only).
    pub collect_ms: u64,
    /// The longest time any thread was held stopped for native stacks, in microseconds
    /// (absent when nothing was stopped: `--nonblocking`, or a snapshot without native stacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stop_us: Option<u64>,
    /// The host it was taken on (one entry), or every host of a merged snapshot (one entry
    /// per host, each labelled; ids are then host-qualified). Empty in older snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostInfo>,
    /// The tree, parents before children.
    pub processes: Vec<ProcessSnap>,
    /// Every pipe any process in the tree holds, once each.
    pub pipes: Vec<PipeSnap>,
    /// Every shared semaphore mapped in the tree, once each (matched by dev:inode).
    pub semaphores: Vec<SemaphoreSnap>,
    /// Processes that were seen and then vanished, or that died while being watched (`run`).
    pub gone: Vec<GoneProcess>,
    pub diagnostics: Vec<Diagnostic>,
    /// Python tracebacks the tree printed to stderr while `mphang run` watched it (latest
    /// [`past::MAX_TRACEBACKS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracebacks: Vec<Traceback>,
    /// Threads that went away while their process lived on, with their last stacks (`run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone_threads: Vec<GoneThread>,
    /// Since when `run` or `attach` watched: what happened before is unknown. Absent from a
    /// one-shot `report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched: Option<Watched>,
}

/// A POSIX semaphore shared between processes (a multiprocessing SemLock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SemaphoreSnap {
    pub key: SemKey,
    /// The names it is mapped under (temp name `(deleted)` for the creator, `sem.mp-…` for
    /// spawn children).
    pub paths: Vec<String>,
    /// `sem_t` value: low 32 bits of the first 8 bytes.
    pub value: Option<u32>,
    /// `sem_t` waiter count: high 32 bits.
    pub nwaiters: Option<u32>,
    /// Processes that map it.
    pub mapped_by: Vec<Pid>,
    /// `_multiprocessing.SemLock` objects found pointing at it, per process (only when a
    /// thread waits on it with value 0; see the field guide §3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<SemLockSeen>>,
}

/// A `_multiprocessing.SemLock` object found in one process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SemLockSeen {
    pub pid: Pid,
    /// This process's acquire count; > 0 means this process holds it (for a lock).
    pub count: i32,
    pub maxvalue: i32,
    /// 0 recursive mutex, 1 semaphore.
    pub kind: i32,
    /// TID of the last acquirer in this process, when it could be read (0 when gone).
    pub last_tid: Option<i32>,
}

/// A process that is no longer there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GoneProcess {
    pub pid: Pid,
    pub ppid: Option<Pid>,
    pub cmdline: Vec<String>,
    /// How it ended, when known (`exit 0`, `signal 9 (SIGKILL)`).
    pub ended: Option<String>,
    /// Milliseconds since the Unix epoch when it was seen to end, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Its last Python stack, when `run` or `attach` saw it alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stack: Option<LastStack>,
}

impl Snapshot {
    pub fn process(&self, pid: Pid) -> Option<&ProcessSnap> {
        self.processes.iter().find(|p| p.pid == pid)
    }
    pub fn thread(&self, r: ThreadRef) -> Option<(&ProcessSnap, &ThreadSnap)> {
        let p = self.process(r.pid)?;
        Some((p, p.thread(r.tid)?))
    }
    pub fn pipe(&self, inode: Inode) -> Option<&PipeSnap> {
        self.pipes.iter().find(|p| p.inode == inode)
    }
    pub fn semaphore(&self, key: &SemKey) -> Option<&SemaphoreSnap> {
        self.semaphores.iter().find(|s| &s.key == key)
    }
    /// The host a (possibly qualified) pid lives on, when the snapshot records hosts.
    pub fn host_of(&self, pid: Pid) -> Option<&HostInfo> {
        let code = pid.host();
        self.hosts.iter().find(|h| h.code() == code)
    }
    /// True for a snapshot merged from several hosts (`mphang merge`).
    pub fn is_merged(&self) -> bool {
        self.hosts.iter().any(|h| h.label.is_some())
    }
}
