//! What a thread is doing in the kernel: the decoded `/proc/PID/task/TID/syscall` line.

use super::ids::{Pid, SemKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kernel-side activity of a thread at the moment it was read.
// One per thread; boxing the syscall would only add an allocation per blocked thread.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SyscallState {
    /// The file says `running`: on a CPU or runnable in user space.
    Running,
    /// `-1 SP PC`: stopped in user space (signal or ptrace stop while computing).
    UserStopped,
    /// Blocked (or about to block) in a system call.
    Blocked(Syscall),
    /// Not readable (no ptrace rights, or the thread exited).
    Unknown,
}

/// A system call with its raw registers and what mphang could decode from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Syscall {
    /// x86_64 syscall number (e.g. 0 read, 1 write, 7 poll, 61 wait4, 202 futex, 219 restart_syscall).
    pub nr: i64,
    /// Name of `nr`, e.g. `futex`; `syscall_N` when unknown.
    pub name: String,
    /// The six argument registers.
    pub args: [u64; 6],
    /// User stack pointer at the time of the call.
    pub sp: u64,
    /// User program counter (inside the libc wrapper).
    pub pc: u64,
    /// The call decoded from its arguments.
    pub decoded: Decoded,
}

/// A decoded system call: the arguments that say what the thread waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Decoded {
    /// `read`, `readv`, `recvfrom`, `recvmsg`: waits for data on `fd`.
    Read { fd: i32 },
    /// `write`, `writev`, `sendto`, `sendmsg`: waits for room on `fd`; `count` bytes pending.
    Write { fd: i32, count: u64 },
    /// `poll`/`ppoll`/`pselect6`/`select` on a set of fds. `timeout_ms` None = forever.
    Poll {
        fds: Vec<i32>,
        timeout_ms: Option<i64>,
        /// pselect6(0, NULL, NULL, NULL, t): how `time.sleep` looks on 3.8–3.10.
        sleep_only: bool,
    },
    /// `epoll_wait`/`epoll_pwait`: `fds` are the watched fds from the epoll fd's fdinfo.
    EpollWait {
        epfd: i32,
        fds: Vec<i32>,
        timeout_ms: Option<i64>,
    },
    /// `futex` wait (or `restart_syscall` of a timed one).
    Futex(Futex),
    /// `wait4`/`waitid`: waits for a child to exit. `pid` None = any child.
    WaitChild { pid: Option<Pid> },
    /// `nanosleep`, `clock_nanosleep`: a timed sleep.
    Sleep,
    /// `accept`/`accept4` on a listening socket.
    Accept { fd: i32 },
    /// `pause`, `rt_sigtimedwait`, `rt_sigsuspend`: waits for a signal.
    Signal,
    /// `restart_syscall` whose original call could not be told.
    Restart,
    /// Anything else.
    Other,
}

/// A futex wait decoded per the field guide §1.2 and §3.8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Futex {
    pub uaddr: u64,
    /// Raw op (arg 1), e.g. 0x109 SemLock, 0x189 threading lock, 0x80 pthread mutex.
    pub op: u32,
    /// Expected value (arg 2): 2 for a contended pthread mutex, 0 for a semaphore.
    pub val: u32,
    /// `FUTEX_PRIVATE_FLAG` clear: the word may be shared between processes.
    pub shared: bool,
    /// A timeout can end the wait (timed acquire, Event.wait(t), the GIL's 5 ms slices).
    pub timed: bool,
    /// Where the futex word lives, from `/proc/PID/maps`.
    pub region: FutexRegion,
    /// What the memory at `uaddr` says, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word: Option<FutexWord>,
    /// The `threading` lock object behind the futex, when a thread acquires it directly and
    /// the bounded memory scan found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockObject>,
}

/// A `_thread.lock` or `_thread.RLock` object found in the waiting process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LockObject {
    /// `_thread.lock` (no owner is recorded) or `_thread.RLock`.
    pub kind: String,
    /// Address of the object.
    pub object: u64,
    /// RLock `rlock_owner`: the owner's `pthread_t` (0 when unowned or a plain lock).
    pub owner: u64,
    /// The owner's TID when its `struct pthread` names a live thread of this process; None
    /// for an owner that does not exist here (e.g. a parent thread, after fork).
    pub owner_tid: Option<i32>,
    /// RLock `rlock_count`: how many times the owner acquired it.
    pub count: u64,
    /// When the owner is not a thread of this process: the `(pid, tid)` that `pthread_t` names
    /// in the parent process (a fork child inherits the lock held by that thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_in_parent: Option<(i32, i32)>,
}

/// The mapping a futex word lies in; tells a SemLock from a thread lock from the GIL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "region", rename_all = "snake_case")]
pub enum FutexRegion {
    /// A POSIX semaphore in `/dev/shm` (a multiprocessing SemLock): cross-process.
    SharedSem { key: SemKey },
    /// On the waiting thread's own stack: the 3.13 parking lot (object at uaddr-8).
    OwnStack { key: u64 },
    /// In libpython's (or the python binary's) data: the GIL or a runtime condition.
    Interpreter,
    /// Heap or anonymous memory: a `threading` lock, condition waiter or pthread mutex.
    Heap,
    /// Some other mapping.
    Other { path: Option<String> },
}

/// The first 16 bytes at a futex address, interpreted both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FutexWord {
    /// `sem_t` value or `pthread_mutex_t.__lock` (low 32 bits at uaddr).
    pub value: u32,
    /// `sem_t` waiter count (high 32 bits at uaddr).
    pub high: u32,
    /// `pthread_mutex_t.__owner` (i32 at uaddr+8; glibc sets it for every mutex kind). For a
    /// target in another PID namespace it is translated to mphang's TIDs when the owner is a
    /// thread of the tree.
    pub owner_tid: i32,
}

/// `FUTEX_TID_MASK`: the owner TID bits of a robust or PI futex word.
pub const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// How a pthread mutex records its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutexKind {
    /// Normal or recursive, process-private: `__lll_lock_wait`, futex op 0x80, val 2.
    Private,
    /// `PTHREAD_PROCESS_SHARED`: op 0x00, val 2.
    Shared,
    /// Robust: the futex word is the owner TID (| 0x80000000 when there are waiters).
    Robust,
    /// Priority inheritance: FUTEX_LOCK_PI (or LOCK_PI2), the word is the owner TID.
    PriorityInheritance,
}

/// The owner of a contended pthread mutex, as stored in the target's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutexOwner {
    pub kind: MutexKind,
    /// The owner's TID (0 = released meanwhile, or unknown): in the target's PID namespace as
    /// read, or mphang's when the `__owner` field was translated (`FutexWord::owner_tid`).
    pub tid: i32,
}

/// The one decoder of a pthread mutex wait: whether a futex wait `(op, val)` on a word whose
/// lock field is `lock` and `__owner` field is `owner` is a glibc mutex, and who owns it.
/// `__owner` (glibc sets it for every kind) is preferred; a robust or PI mutex's own word
/// names the owner too. `None` for anything else (semaphores, condition variables, the
/// parking lot).
pub fn mutex_owner(op: u32, val: u32, lock: u32, owner: i32) -> Option<MutexOwner> {
    let private = op & 0x80 != 0;
    let (kind, word_tid) = match op & 0x7f {
        6 | 13 => (
            MutexKind::PriorityInheritance,
            (lock & FUTEX_TID_MASK) as i32,
        ),
        0 if val == 2 => (
            if private {
                MutexKind::Private
            } else {
                MutexKind::Shared
            },
            0,
        ),
        0 if val & 0x8000_0000 != 0 && val & FUTEX_TID_MASK != 0 => {
            (MutexKind::Robust, (val & FUTEX_TID_MASK) as i32)
        }
        _ => return None,
    };
    let tid = if owner > 0 { owner } else { word_tid };
    Some(MutexOwner { kind, tid })
}

impl Futex {
    /// [`mutex_owner`] of this wait, from its word (read with the target's glibc layout).
    pub fn mutex_owner(&self) -> Option<MutexOwner> {
        let w = self.word.as_ref()?;
        mutex_owner(self.op, self.val, w.value, w.owner_tid)
    }

    /// A glibc pthread mutex wait: `__lll_lock_wait` (op 0x80/0x00, val 2), a robust mutex
    /// (val = owner TID | 0x80000000), or LOCK_PI.
    pub fn is_mutex(&self) -> bool {
        let cmd = self.op & 0x7f;
        // normal/recursive/pshared: WAIT with val 2; robust: WAIT with the owner TID and the
        // waiters bit as val; PI: LOCK_PI / LOCK_PI2.
        (cmd == 0 && (self.val == 2 || self.val & 0x8000_0000 != 0)) || cmd == 6 || cmd == 13
    }
}

/// Returns the name of an x86_64 syscall number.
pub fn syscall_name(nr: i64) -> String {
    let s = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        101 => "ptrace",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        219 => "restart_syscall",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        441 => "epoll_pwait2",
        _ => return format!("syscall_{nr}"),
    };
    s.to_string()
}
