//! Result types of the analysis: per-thread verdicts and findings (part of the JSON contract).

use crate::model::{Inode, Pid, SemKey, ThreadRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What a thread waits for, resolved from its syscall, wchan, memory and stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum BlockedOn {
    /// On a CPU or runnable: making progress by definition.
    Running,
    /// `read` on a pipe: needs a writer (or EOF when every write end closes).
    PipeRead { inode: Inode },
    /// `write` on a full pipe: needs a reader.
    PipeWrite { inode: Inode, pending: u64 },
    /// Reading a unix socket: needs its peer to send.
    SocketRead { inode: Inode, peer: Option<Inode> },
    /// Writing a unix socket with a full buffer: needs its peer to read.
    SocketWrite { inode: Inode, peer: Option<Inode> },
    /// Reading a TCP socket whose receive queue is empty (recv, or poll for input): needs the
    /// peer to send. The peer may be in the tree, on another host of a merge, or gone.
    TcpRead {
        inode: Inode,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    },
    /// Writing a TCP socket whose send buffer is full: needs the peer to read.
    TcpWrite {
        inode: Inode,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        pending: u64,
    },
    /// `accept` on a listening socket: waits for a client.
    Accept { inode: Option<Inode> },
    /// A socket or file whose other side is outside the tree (network, tty, file).
    External { what: String },
    /// A multiprocessing SemLock (POSIX semaphore in /dev/shm), shared between processes.
    Semaphore { key: SemKey },
    /// A glibc pthread mutex; `owner_tid` from `__owner` (target PID namespace).
    Mutex { uaddr: u64, owner_tid: Option<i32> },
    /// A `threading` lock, condition or event (a private `sem_t`): only this process can release
    /// it. `uaddr` is the futex address, or for a PyMutex-based lock (3.14+) the PyMutex's.
    ThreadLock { uaddr: u64 },
    /// A parking-lot wait (3.13+: Thread.join, SimpleQueue.get, Condition waiters; 3.14+ locks
    /// whose object was not found); `key` is the awaited object.
    ParkingLot { uaddr: u64, key: u64 },
    /// Waiting for the GIL: CPU contention, not a hang.
    Gil,
    /// `wait4`/`waitid` for a child (None = any child); or, under forkserver, `Process.join`
    /// polling the child's `sentinel` pipe, which only the forkserver writes (mapped to the
    /// child through the forkserver's `pid_to_fd`).
    Child {
        pid: Option<Pid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sentinel: Option<Inode>,
    },
    /// `poll`/`select`/`epoll` on several fds: progresses when any of them does.
    Any { of: Vec<BlockedOn> },
    /// A timed sleep or a timed wait that will return by itself.
    Timed { what: String },
    /// `pause`/`sigwait`: waits for a signal.
    Signal,
    /// Nothing could be resolved (no rights, unknown syscall).
    Unknown { what: String },
}

/// Whether a thread can still make progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Running, in a timed wait, waiting on something outside the tree, or seen to move
    /// between looks.
    CanProgress,
    /// Proven unable to progress: everything that could wake it is itself stuck or gone.
    Stuck,
}

/// The verdict on one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThreadVerdict {
    pub thread: ThreadRef,
    pub blocked_on: BlockedOn,
    pub progress: Progress,
    /// Why it can progress (seed reason or the provider that can), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// Threads that could release what it waits for ("the other side").
    pub providers: Vec<ThreadRef>,
    /// One line for people: what it waits on and who is on the other side.
    pub line: String,
    /// Python and native frames merged into one stack (Python frames in place of the
    /// interpreter's eval loop), innermost first; present when native stacks were sampled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<crate::model::merge::MergedFrame>,
    /// A periodic thread: seen to wake and go back to the same timed wait at the same line, or
    /// a known library timer or monitor loop (threading.Timer, tqdm's monitor, a Manager's
    /// serve_forever, a Pool's worker handler). It can progress, but is never progress for
    /// others, and provides only with positive evidence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub housekeeping: bool,
    /// Compact reports only (docs/json-format.md): every thread of these processes, other than
    /// this one, is a provider too. Readers expand it and it is then empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers_all_of: Vec<Pid>,
    /// Compact reports only: the same `stack` as the verdict of that thread, written earlier.
    /// Readers expand it and it is then `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_as: Option<ThreadRef>,
}

/// How bad a finding is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Proven: the threads involved can never progress.
    Hang,
    /// Suspicious but not proven stuck (e.g. a busy loop).
    Warning,
}

/// A line of user code involved in a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CodeLine {
    pub pid: Pid,
    pub tid: crate::model::Tid,
    pub file: String,
    pub line: i32,
    pub function: String,
}

/// One link of a wait chain: a thread and what it waits on next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChainLink {
    pub thread: ThreadRef,
    /// `main`, `QueueFeederThread`, ...
    pub name: String,
    /// What this thread waits on, in words (`wait4(3736)`, `write pipe:[6692]`).
    pub waits_on: String,
}

/// An explained hang (or warning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Stable pattern id, e.g. `join_before_drain`; `deadlock`/`stuck` when no pattern fits.
    pub pattern: super::PatternId,
    pub severity: Severity,
    /// One sentence naming the processes.
    pub summary: String,
    /// The chain of waits, starting at the thread the user is most likely looking at.
    pub chain: Vec<ChainLink>,
    /// Processes involved.
    pub pids: Vec<Pid>,
    /// Threads involved.
    pub threads: Vec<ThreadRef>,
    /// The user-code line of each involved thread (innermost frame outside stdlib/site-packages).
    pub user_lines: Vec<CodeLine>,
    /// The line most likely to need changing.
    pub culprit: Option<CodeLine>,
    /// What to change.
    pub fix: String,
    /// Facts the verdict rests on (fds, inodes, byte counts, owners).
    pub evidence: Vec<String>,
    /// `docs/patterns/<id>.md`.
    pub doc: String,
    /// Periodic threads (and receivers fed from outside the tree) the verdict assumes will not
    /// provide what a thread of the finding waits for (each is also one line of `evidence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumed: Vec<Assumption>,
}

/// A periodic thread left out of the providers of a finding's threads: seen to wake and go back
/// to the same timed wait at the same line, or a known library timer, or a receiver blocked on
/// a pipe or socket fed from outside the tree (execnet, an RPC channel), with no sign that it
/// uses what they wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Assumption {
    pub thread: ThreadRef,
    /// Its name and where it waits: `heartbeat, sleeping at app.py:40`.
    pub periodic: String,
    /// What it is assumed not to do: `read pipe:[6692]`, `end process 3736`.
    pub will_not: Vec<String>,
}

/// A wait whose other side is on a host that sent no report (merged snapshots): "unknown",
/// never the basis of a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnknownEdge {
    pub thread: ThreadRef,
    /// What it waits on (`recv tcp 10.0.0.1:41234 -> 10.0.0.3:29500`).
    pub waits_on: String,
    /// The address nobody reported.
    pub remote: SocketAddr,
}

/// Where the ranks of a symmetric job are (one group per innermost user line of their main
/// threads), largest group first: "3 of 4 ranks wait together at train.py:88; rank 1 (host b)
/// is elsewhere, at data.py:40".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollCall {
    /// How many ranks were found.
    pub ranks: usize,
    pub groups: Vec<RollGroup>,
}

/// Ranks at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollGroup {
    /// `train.py:88 in wait_for_key`, or what the main thread does when no user frame is known.
    pub at: String,
    /// The code line, when there is one.
    pub line: Option<CodeLine>,
    pub members: Vec<RankRef>,
}

/// One rank: its process, rank number (from the environment) and host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RankRef {
    pub pid: Pid,
    pub rank: Option<u32>,
    pub host: String,
    /// At least one of its threads is proven stuck.
    pub stuck: bool,
}
