//! A hand-made report of the join-before-drain hang, the input of the TUI snapshot tests:
//! parent 3694 in wait4(3736); child 3736's main thread joining its QueueFeederThread at exit;
//! the feeder (3737) in write() on pipe:[6692] with 48352 bytes buffered, read only by 3694.

use mphang::analysis::{
    BlockedOn, ChainLink, CodeLine, Finding, PatternId, Progress, Severity, ThreadVerdict,
};
use mphang::model::{
    Access, Decoded, FdEntry, FdKind, Futex, FutexRegion, Inode, NativeFrame, Pid, PipeSnap,
    ProcessSnap, PyFrame, PyThread, Role, Snapshot, Syscall, SyscallState, ThreadRef, ThreadSnap,
    Tid, SCHEMA,
};
use mphang::render::{Report, REPORT_SCHEMA};

pub const PARENT: Pid = Pid(3694);
pub const CHILD: Pid = Pid(3736);
pub const FEEDER: Tid = Tid(3737);
/// 2025-11-21 06:01:01 UTC.
pub const T0_MS: u64 = 1_763_704_861_000;

const LIB: &str = "/root/.pyenv/versions/3.11.7/lib/python3.11";
const USER: &str = "/home/dev/app/join_before_drain.py";

fn frames(list: &[(&str, &str, i32)]) -> Vec<PyFrame> {
    list.iter()
        .map(|(function, file, line)| PyFrame {
            function: function.to_string(),
            file: file.replace("$LIB", LIB).replace("$USER", USER),
            line: *line,
            // Entered from C: the outermost frame of each eval loop (thread bootstrap, and
            // `Thread.run`, called through `_PyFunction_Vectorcall` in the feeder's native stack).
            entry: matches!(*function, "_bootstrap" | "run"),
        })
        .collect()
}

fn py(name: &str, thread_id: u64, f: &[(&str, &str, i32)]) -> Option<PyThread> {
    Some(PyThread {
        thread_id,
        name: Some(name.to_string()),
        owns_gil: false,
        active: false,
        frames: frames(f),
    })
}

fn blocked(nr: i64, args: [u64; 6], decoded: Decoded) -> SyscallState {
    SyscallState::Blocked(Syscall {
        nr,
        name: mphang::model::syscall_name(nr),
        args,
        sp: 0x7ffd_5a3c_1e28,
        pc: 0x7f3b_9c2e_51a7,
        decoded,
    })
}

fn native(list: &[(&str, &str)]) -> Option<Vec<NativeFrame>> {
    Some(
        list.iter()
            .enumerate()
            .map(|(i, (function, module))| NativeFrame {
                addr: 0x7f3b_9c00_0000 + (i as u64) * 0x1000,
                module: Some(module.to_string()),
                function: Some(function.to_string()),
                file: None,
                line: None,
            })
            .collect(),
    )
}

fn process(
    pid: Pid,
    ppid: Pid,
    role: Role,
    threads: Vec<ThreadSnap>,
    fds: Vec<FdEntry>,
) -> ProcessSnap {
    ProcessSnap {
        pid,
        ppid,
        ns_pid: None,
        net_ns: None,
        rank: None,
        comm: "python3".into(),
        cmdline: vec![
            "/root/.pyenv/versions/3.11.7/bin/python3".into(),
            USER.into(),
        ],
        exe: Some("/root/.pyenv/versions/3.11.7/bin/python3.11".into()),
        uid: Some(1000),
        state: 'S',
        start_ticks: 91_000 + pid.0 as u64,
        cpu_ticks: 12,
        num_threads: threads.len() as u32,
        nofile_limit: Some(1024),
        fd_count: fds.len(),
        python_version: Some("3.11.7".into()),
        role,
        threads,
        fds,
        appeared: Vec::new(),
        sem_maps: Vec::new(),
        status_fds: Vec::new(),
        fds_as: None,
    }
}

/// The snapshot, taken at `T0_MS + later_ms`.
pub fn snapshot(later_ms: u64) -> Snapshot {
    let parent_main = ThreadSnap {
        tid: Tid(PARENT.0),
        comm: "python3".into(),
        state: 'S',
        wchan: Some("do_wait".into()),
        syscall: blocked(
            61,
            [3736, 0x7ffd_5a3c_1f00, 0, 0, 0, 0],
            Decoded::WaitChild { pid: Some(CHILD) },
        ),
        cpu_ticks: 9,
        py: py(
            "MainThread",
            139_894_000_000_000,
            &[
                ("_try_wait", "$LIB/multiprocessing/popen_fork.py", 27),
                ("wait", "$LIB/multiprocessing/popen_fork.py", 43),
                ("join", "$LIB/multiprocessing/process.py", 149),
                ("main", "$USER", 31),
                ("<module>", "$USER", 40),
            ],
        ),
        native: None,
        native_as: None,
        later: Vec::new(),
        sched: None,
    };
    let child_main = ThreadSnap {
        tid: Tid(CHILD.0),
        comm: "python3".into(),
        state: 'S',
        wchan: Some("futex_wait_queue".into()),
        syscall: blocked(
            202,
            [0x55d0_0a1b_2c30, 0x189, 0, 0, 0, 0xffff_ffff],
            Decoded::Futex(Futex {
                uaddr: 0x55d0_0a1b_2c30,
                op: 0x189,
                val: 0,
                shared: false,
                timed: false,
                region: FutexRegion::Heap,
                word: None,
                lock: None,
            }),
        ),
        cpu_ticks: 2,
        py: py(
            "MainThread",
            139_894_000_000_000,
            &[
                ("_wait_for_tstate_lock", "$LIB/threading.py", 1132),
                ("join", "$LIB/threading.py", 1112),
                ("_finalize_join", "$LIB/multiprocessing/queues.py", 199),
                ("__call__", "$LIB/multiprocessing/util.py", 224),
                ("_run_finalizers", "$LIB/multiprocessing/util.py", 300),
                ("_exit_function", "$LIB/multiprocessing/util.py", 360),
                ("_bootstrap", "$LIB/multiprocessing/process.py", 317),
                ("_launch", "$LIB/multiprocessing/popen_fork.py", 71),
                ("__init__", "$LIB/multiprocessing/popen_fork.py", 19),
                ("_Popen", "$LIB/multiprocessing/context.py", 281),
                ("start", "$LIB/multiprocessing/process.py", 121),
                ("main", "$USER", 29),
                ("<module>", "$USER", 40),
            ],
        ),
        native: None,
        native_as: None,
        later: Vec::new(),
        sched: None,
    };
    let feeder = ThreadSnap {
        tid: FEEDER,
        comm: "python3".into(),
        state: 'S',
        wchan: Some("pipe_write".into()),
        syscall: blocked(
            1,
            [4, 0x7f3b_8800_1000, 3009, 0, 0, 0],
            Decoded::Write { fd: 4, count: 3009 },
        ),
        cpu_ticks: 1,
        py: py(
            "QueueFeederThread",
            139_893_900_000_000,
            &[
                ("_send", "$LIB/multiprocessing/connection.py", 373),
                ("_send_bytes", "$LIB/multiprocessing/connection.py", 410),
                ("send_bytes", "$LIB/multiprocessing/connection.py", 199),
                ("_feed", "$LIB/multiprocessing/queues.py", 250),
                ("run", "$LIB/threading.py", 975),
                ("_bootstrap_inner", "$LIB/threading.py", 1038),
                ("_bootstrap", "$LIB/threading.py", 995),
            ],
        ),
        native: native(&[
            ("__GI___libc_write", "/lib/x86_64-linux-gnu/libc.so.6"),
            ("_Py_write", "libpython3.11.so.1.0"),
            ("os_write", "libpython3.11.so.1.0"),
            ("_PyEval_EvalFrameDefault", "libpython3.11.so.1.0"),
            ("_PyFunction_Vectorcall", "libpython3.11.so.1.0"),
            ("_PyEval_EvalFrameDefault", "libpython3.11.so.1.0"),
            ("thread_run", "libpython3.11.so.1.0"),
            ("pythread_wrapper", "libpython3.11.so.1.0"),
            ("start_thread", "/lib/x86_64-linux-gnu/libc.so.6"),
            ("__clone3", "/lib/x86_64-linux-gnu/libc.so.6"),
        ]),
        native_as: None,
        later: Vec::new(),
        sched: None,
    };
    let pipe_end = |fd, access| FdEntry {
        fd,
        access,
        kind: FdKind::Pipe { inode: Inode(6692) },
    };
    Snapshot {
        schema: SCHEMA.into(),
        mphang_version: "0.1.0".into(),
        taken_at_ms: T0_MS + later_ms,
        root: PARENT,
        clock_ticks: 100,
        looks: 1,
        interval_ms: 1000,
        collect_ms: 38,
        max_stop_us: None,
        hosts: Vec::new(),
        processes: vec![
            process(
                PARENT,
                Pid(3001),
                Role::Main,
                vec![parent_main],
                vec![pipe_end(3, Access::Read)],
            ),
            process(
                CHILD,
                PARENT,
                Role::ForkChild,
                vec![child_main, feeder],
                vec![pipe_end(4, Access::Write)],
            ),
        ],
        pipes: vec![PipeSnap {
            inode: Inode(6692),
            buffered: Some(48352),
            capacity: Some(65536),
            later_buffered: Vec::new(),
            outside: None,
        }],
        semaphores: Vec::new(),
        gone: Vec::new(),
        diagnostics: Vec::new(),
        tracebacks: Vec::new(),
        gone_threads: Vec::new(),
        watched: None,
    }
}

fn tref(pid: Pid, tid: i32) -> ThreadRef {
    ThreadRef { pid, tid: Tid(tid) }
}

fn verdict(
    thread: ThreadRef,
    blocked_on: BlockedOn,
    providers: Vec<ThreadRef>,
    line: &str,
) -> ThreadVerdict {
    ThreadVerdict {
        thread,
        blocked_on,
        progress: Progress::Stuck,
        because: None,
        providers,
        line: line.into(),
        housekeeping: false,
        providers_all_of: Vec::new(),
        stack_as: None,
        stack: Vec::new(),
    }
}

/// The culprit: `p.join()` before `q.get()` in the parent.
pub fn culprit() -> CodeLine {
    CodeLine {
        pid: PARENT,
        tid: Tid(PARENT.0),
        file: USER.into(),
        line: 31,
        function: "main".into(),
    }
}

/// The report on [`snapshot`]`(later_ms)`, with hand-written verdicts and the finding.
pub fn report(later_ms: u64) -> Report {
    let parent = tref(PARENT, PARENT.0);
    let child = tref(CHILD, CHILD.0);
    let feeder = tref(CHILD, FEEDER.0);
    let threads = vec![
        verdict(
            parent,
            BlockedOn::Child {
                pid: Some(CHILD),
                sentinel: None,
            },
            vec![child],
            "wait4(3736): child 3736 cannot exit; its main thread is joining QueueFeederThread 3737",
        ),
        verdict(
            child,
            BlockedOn::ThreadLock { uaddr: 0x55d0_0a1b_2c30 },
            vec![feeder],
            "joining QueueFeederThread 3737 at exit (Queue._finalize_join); 3737 is blocked writing pipe:[6692]",
        ),
        verdict(
            feeder,
            BlockedOn::PipeWrite { inode: Inode(6692), pending: 3009 },
            vec![parent],
            "write to pipe:[6692] (48352 B buffered, full); read end held by 3694, which is blocked in wait4(3736)",
        ),
    ];
    let finding = Finding {
        pattern: PatternId::JoinBeforeDrain,
        severity: Severity::Hang,
        summary: "Process 3694 joins child 3736 before draining its Queue: 3736 cannot exit until \
                  its feeder thread flushes 48352 buffered bytes into pipe:[6692], which only 3694 reads."
            .into(),
        chain: vec![
            ChainLink { thread: parent, name: "main".into(), waits_on: "wait4(3736)".into() },
            ChainLink {
                thread: child,
                name: "MainThread".into(),
                waits_on: "join QueueFeederThread".into(),
            },
            ChainLink {
                thread: feeder,
                name: "QueueFeederThread".into(),
                waits_on: "write pipe:[6692] (reader 3694)".into(),
            },
        ],
        pids: vec![PARENT, CHILD],
        threads: vec![parent, child, feeder],
        user_lines: vec![culprit()],
        culprit: Some(culprit()),
        fix: "drain the queue (q.get()) before p.join()".into(),
        evidence: vec![
            "pipe:[6692] holds 48352 B of 65536 (full counted in page slots)".into(),
            "3694 holds the read end as fd 3 and sits in wait4(3736)".into(),
            "3737 (QueueFeederThread) sits in write(fd 4, 3009 B)".into(),
        ],
        doc: "docs/patterns/join_before_drain.md".into(),
        assumed: Vec::new(),
    };
    Report {
        schema: REPORT_SCHEMA.into(),
        hang: true,
        findings: vec![finding],
        threads,
        roll_call: None,
        unknown: Vec::new(),
        snapshot: snapshot(later_ms),
    }
}
