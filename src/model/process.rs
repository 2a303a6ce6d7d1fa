//! Processes and threads: everything read about one pid and its tasks.

use super::fd::FdEntry;
use super::ids::{Pid, SemKey, Tid};
use super::stack::{NativeFrame, PyThread};
use super::syscall::SyscallState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The part a process plays in a multiprocessing program, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The root of the tree, or a Python process whose parent is not Python.
    Main,
    /// A `fork` start-method child (same binary and layout as its parent, not exec'd).
    ForkChild,
    /// A `spawn` child (`spawn_main(...) --multiprocessing-fork`).
    SpawnChild,
    /// A child forked by the forkserver.
    ForkserverChild,
    /// A `multiprocessing.Pool` worker (stack inside `pool.worker`).
    PoolWorker,
    /// A `multiprocessing.Manager` server process.
    ManagerServer,
    /// The `resource_tracker` helper.
    ResourceTracker,
    /// The forkserver process itself.
    Forkserver,
    /// A process that is not a Python interpreter (e.g. `sleep`, a shell).
    NonPython,
    /// Python, but nothing more specific is known.
    Python,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::ForkChild => "fork child",
            Role::SpawnChild => "spawn child",
            Role::ForkserverChild => "forkserver child",
            Role::PoolWorker => "Pool worker",
            Role::ManagerServer => "Manager server",
            Role::ResourceTracker => "resource_tracker",
            Role::Forkserver => "forkserver",
            Role::NonPython => "not Python",
            Role::Python => "python",
        }
    }
}

/// Everything read about one live (or zombie) process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessSnap {
    pub pid: Pid,
    pub ppid: Pid,
    /// The pid inside the target's own PID namespace, when it differs (last `NSpid` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<i32>,
    /// Inode of its network namespace (`/proc/PID/ns/net`): TCP loopback is scoped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ns: Option<u64>,
    /// Its rank in a distributed job, from the environment (`RANK`, `SLURM_PROCID`,
    /// `OMPI_COMM_WORLD_RANK`, `PMI_RANK`); no other variable is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    /// Kernel state letter of the process (R, S, D, T, t, Z).
    pub state: char,
    /// Start time in clock ticks since boot (field 22 of stat).
    pub start_ticks: u64,
    /// User + system CPU time in clock ticks.
    pub cpu_ticks: u64,
    pub num_threads: u32,
    /// Soft RLIMIT_NOFILE.
    pub nofile_limit: Option<u64>,
    pub fd_count: usize,
    /// `3.11.7` when the process is a Python interpreter mphang could read.
    pub python_version: Option<String>,
    pub role: Role,
    pub threads: Vec<ThreadSnap>,
    /// Every open fd, by number; in a written report, with `fds_as`, only those that differ
    /// from the other process's.
    pub fds: Vec<FdEntry>,
    /// Written reports only (docs/json-format.md): this process's fds are those of that earlier
    /// process (a forked child inherits its parent's and its older siblings' pipes), less
    /// `without`, with `fds` added or replacing by number. Readers expand it
    /// (`render::compact::expand_snapshot`) and it is then `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds_as: Option<FdsAs>,
    /// `/dev/shm/sem.*` mappings of this process.
    pub sem_maps: Vec<SemMapping>,
    /// Threads and child processes that appeared during the later looks (progress evidence:
    /// this process started them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appeared: Vec<Appeared>,
    /// For a forkserver: each live child it forked and the fd (here) of that child's status
    /// pipe, whose read end is the sentinel its client's `Process.join` polls (`pid_to_fd` in
    /// the forkserver's main loop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_fds: Vec<StatusFd>,
}

/// A process's fds written as another's (`ProcessSnap::fds_as`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FdsAs {
    /// The earlier process (in `processes`) whose fds these start from.
    pub pid: Pid,
    /// Fd numbers of that process that this one does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without: Vec<i32>,
}

/// One child of a forkserver and the fd of its status pipe in the forkserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusFd {
    pub child: Pid,
    pub fd: i32,
}

/// A task first seen in a later look: a new thread of the process (`pid` is the process) or a
/// new child process (`pid` is the child, `tid` its main thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Appeared {
    pub after_ms: u64,
    pub pid: Pid,
    pub tid: Tid,
}

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadSnap {
    pub tid: Tid,
    pub comm: String,
    /// Kernel state letter (R, S, D, T, t, Z).
    pub state: char,
    /// Kernel wait channel with `.constprop.N`-style suffixes stripped; None when 0.
    pub wchan: Option<String>,
    pub syscall: SyscallState,
    pub cpu_ticks: u64,
    /// The Python thread running on this TID, when the interpreter knows one.
    pub py: Option<PyThread>,
    /// Native stack, innermost first, when native sampling ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<Vec<NativeFrame>>,
    /// Compact reports only (docs/json-format.md): the same `native` frames as that earlier
    /// thread. Readers expand it (`render::compact::expand_snapshot`) and it is then `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_as: Option<super::ThreadRef>,
    /// Later looks, in order, used to see progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later: Vec<ThreadLook>,
    /// Scheduler accounting at the first look, when the kernel has `schedstat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched: Option<SchedStat>,
}

/// A thread's scheduler accounting (`/proc/PID/task/TID/schedstat`) and when it was read: a
/// thread that spins is on a CPU or waiting for one the whole time, however loaded the
/// machine is, while its share of CPU time depends on the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchedStat {
    /// Time spent on a CPU, ns.
    pub run_ns: u64,
    /// Time spent runnable, waiting for a CPU, ns.
    pub wait_ns: u64,
    /// How many times the thread was scheduled onto a CPU (field 3); a blocked thread's count
    /// grows only when it wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<u64>,
    /// `CLOCK_MONOTONIC` when read, ns.
    pub at_ns: u64,
}

/// A cheap later look at a thread: enough to tell that it moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadLook {
    /// Milliseconds after the first look ended (measured). The first look read each thread at
    /// its start, so the two reads of a thread are at most `collect_ms + after_ms` apart.
    pub after_ms: u64,
    /// False when the thread had exited by then.
    pub alive: bool,
    pub state: char,
    pub cpu_ticks: u64,
    /// The raw syscall line's number and first three args (`None` when running or unreadable).
    pub syscall: Option<(i64, u64, u64, u64)>,
    /// Innermost Python frame as `file:line function`, when stacks were re-read (the lowest
    /// line seen in that function over a few quick reads, so a loop shows its head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub py_top: Option<String>,
    /// Scheduler accounting at this look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched: Option<SchedStat>,
    /// How many times the thread has been scheduled onto a CPU (`schedstat` field 3, else the
    /// voluntary + involuntary context switches of `status`). A blocked thread's count grows
    /// only when it wakes. Read without stopping anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switches: Option<u64>,
    /// The system call of this look has a timeout (a sleep, a timed lock or condition wait, a
    /// poll, select or epoll with a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed: Option<TimedWait>,
    /// py-spy saw this thread hold the GIL in this look (only set when stacks were re-read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owns_gil: bool,
}

/// A wait with a timeout, seen in a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TimedWait {
    /// At most this many milliseconds were left (exact for absolute deadlines, the whole
    /// timeout for relative ones); None when the timeout could not be read.
    pub left_ms: Option<u64>,
}

/// One `/dev/shm/sem.*` mapping in one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SemMapping {
    pub key: SemKey,
    pub start: u64,
    pub end: u64,
    pub path: String,
}

impl ProcessSnap {
    pub fn thread(&self, tid: Tid) -> Option<&ThreadSnap> {
        self.threads.iter().find(|t| t.tid == tid)
    }
    /// The fd numbered `fd`.
    pub fn fd(&self, fd: i32) -> Option<&super::fd::FdEntry> {
        self.fds.iter().find(|e| e.fd == fd)
    }
    pub fn is_python(&self) -> bool {
        self.python_version.is_some()
    }
    /// The main thread (tid == pid), if it is still there.
    pub fn main_thread(&self) -> Option<&ThreadSnap> {
        self.thread(Tid(self.pid.0))
    }
    /// Short label used in text: `1234 (Pool worker)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.pid, self.role.label())
    }
}

impl ThreadSnap {
    /// Python thread name if known, else the kernel comm.
    pub fn display_name(&self) -> &str {
        self.py
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .unwrap_or(&self.comm)
    }
}
