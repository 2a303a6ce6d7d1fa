//! Replay tests: recorded snapshots (fixtures/snapshots/*.json) -> analysis -> text and JSON,
//! pinned with insta; the progress veto, the round trip, and pure fixpoint checks (the JSON
//! contract itself: schema.rs).

use crate::util::repo;
use mphang::analysis::{analyze, BlockedOn, Progress, ThreadVerdict};
use mphang::model::{Snapshot, ThreadSnap};
use mphang::render::{self, Report};

pub(crate) fn load(name: &str) -> Snapshot {
    let path = repo()
        .join("fixtures/snapshots")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("read snapshot");
    render::json::parse_snapshot(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub(crate) fn text(report: &Report) -> String {
    let mut out = Vec::new();
    render::text::render(
        report,
        &render::text::TextOptions { color: false },
        &mut out,
    )
    .expect("render");
    String::from_utf8(out).expect("utf8")
}

fn patterns(s: &Snapshot) -> Vec<String> {
    analyze(s)
        .findings
        .into_iter()
        .map(|f| f.pattern.to_string())
        .collect()
}

macro_rules! replay {
    ($test:ident, $name:literal, [$($p:literal),*]) => {
        #[test]
        fn $test() {
            let snap = load($name);
            assert_eq!(patterns(&snap), vec![$($p.to_string()),*] as Vec<String>);
            let report = Report::analyze(snap);
            insta::assert_snapshot!(concat!($name, "_text"), text(&report));
            insta::assert_json_snapshot!(concat!($name, "_findings"), report.findings);
        }
    };
}

replay!(
    replay_join_before_drain,
    "join_before_drain",
    ["join_before_drain"]
);
replay!(
    replay_join_before_drain_spawn,
    "join_before_drain_spawn",
    ["join_before_drain"]
);
replay!(
    replay_undrained_queue_at_exit,
    "undrained_queue_at_exit",
    ["undrained_queue_at_exit"]
);
replay!(
    replay_undrained_queue_main_exit,
    "undrained_queue_main_exit",
    ["undrained_queue_at_exit"]
);
replay!(
    replay_fork_inherited_lock,
    "fork_inherited_lock",
    ["fork_inherited_lock"]
);
replay!(
    replay_fork_inherited_threading_lock,
    "fork_inherited_threading_lock",
    ["fork_inherited_lock"]
);
replay!(replay_orphaned_lock, "orphaned_lock", ["orphaned_lock"]);
replay!(
    replay_fork_inherited_rlock,
    "fork_inherited_rlock",
    ["fork_inherited_lock"]
);
replay!(
    replay_orphaned_lock_pool,
    "orphaned_lock_pool",
    ["orphaned_lock"]
);
replay!(
    replay_pool_worker_died,
    "pool_worker_died",
    ["pool_worker_died"]
);
replay!(
    replay_pool_result_handler_died,
    "pool_result_handler_died",
    ["pool_result_handler_died"]
);
replay!(replay_peer_exited, "peer_exited", ["peer_exited"]);
replay!(
    replay_peer_exited_bounded,
    "peer_exited_bounded",
    ["peer_exited"]
);
replay!(replay_no_live_writer, "no_live_writer", ["no_live_writer"]);
replay!(replay_pipe_self_eof, "pipe_self_eof", ["pipe_self_eof"]);
replay!(replay_ipc_cycle, "ipc_cycle", ["ipc_cycle"]);
replay!(
    replay_ipc_cycle_joinable,
    "ipc_cycle_joinable",
    ["ipc_cycle"]
);
replay!(
    replay_lock_order_cycle,
    "lock_order_cycle",
    ["lock_order_cycle"]
);
replay!(
    replay_lock_order_cycle_threads,
    "lock_order_cycle_threads",
    ["lock_order_cycle"]
);
replay!(
    replay_thread_blocks_exit,
    "thread_blocks_exit",
    ["thread_blocks_exit"]
);
replay!(
    replay_finalizer_deadlock,
    "finalizer_deadlock",
    ["finalizer_deadlock"]
);
replay!(replay_busy_loop, "busy_loop", ["busy_loop"]);
replay!(
    replay_gil_held_while_blocked,
    "gil_held_while_blocked",
    ["gil_held_while_blocked"]
);
replay!(
    replay_join_before_drain_noise,
    "join_before_drain_noise",
    ["join_before_drain"]
);
replay!(
    replay_join_before_drain_sibling,
    "join_before_drain_sibling",
    ["join_before_drain"]
);
replay!(
    replay_peer_exited_joined,
    "peer_exited_joined",
    ["peer_exited"]
);
replay!(
    replay_orphaned_lock_manager,
    "orphaned_lock_manager",
    ["orphaned_lock"]
);
replay!(
    replay_neg_slow_consumer_noise,
    "neg_slow_consumer_noise",
    []
);
replay!(replay_neg_external_writer, "neg_external_writer", []);
replay!(replay_pool_idle, "pool_idle", []);
replay!(replay_many_fds, "many_fds", []);
replay!(replay_non_python_child, "non_python_child", []);
replay!(replay_spawn_child, "spawn_child", []);
replay!(replay_forkserver_child, "forkserver_child", []);
replay!(replay_neg_sleep, "neg_sleep", []);
replay!(replay_neg_busy_pool, "neg_busy_pool", []);
replay!(replay_neg_slow_consumer, "neg_slow_consumer", []);
replay!(replay_neg_periodic_producer, "neg_periodic_producer", []);
replay!(replay_neg_fork_logging, "neg_fork_logging", []);

/// The feeder thread of the join-before-drain child.
fn feeder(s: &mut Snapshot) -> &mut mphang::model::ThreadSnap {
    s.processes
        .iter_mut()
        .flat_map(|p| p.threads.iter_mut())
        .find(|t| t.py.as_ref().and_then(|p| p.name.as_deref()) == Some("QueueFeederThread"))
        .expect("feeder thread")
}

/// A parent joining the first of eight children that each filled a queue: one finding, every
/// process in it (the other children only wait on the parent), no spurious cycle among the
/// children although each inherited the others' queue pipes.
#[test]
fn many_children_of_one_join_are_one_finding() {
    let s = load("join_before_drain_8_children");
    let a = analyze(&s);
    assert_eq!(
        a.findings.len(),
        1,
        "{:#?}",
        a.findings.iter().map(|f| &f.pattern).collect::<Vec<_>>()
    );
    assert_eq!(a.findings[0].pattern, "join_before_drain");
    let mut pids = a.findings[0].pids.clone();
    pids.dedup();
    assert_eq!(pids.len(), s.processes.len());
}

#[test]
fn cpu_seen_between_looks_vetoes_the_verdict() {
    let mut s = load("join_before_drain");
    let f = feeder(&mut s);
    let later = f.later.first_mut().expect("a later look");
    later.cpu_ticks = f.cpu_ticks + 3;
    assert_eq!(patterns(&s), Vec::<String>::new());
    let a = analyze(&s);
    assert!(a
        .threads
        .iter()
        .all(|v| v.progress == Progress::CanProgress));
}

#[test]
fn syscall_change_between_looks_vetoes_the_verdict() {
    let mut s = load("join_before_drain");
    let f = feeder(&mut s);
    f.later[0].syscall = Some((0, 3, 0, 4));
    assert!(patterns(&s).is_empty());
}

#[test]
fn pipe_fill_change_between_looks_vetoes_the_verdict() {
    let mut s = load("join_before_drain");
    for p in &mut s.pipes {
        p.later_buffered = vec![p.buffered.map(|b| b.saturating_sub(3022))];
    }
    assert!(patterns(&s).is_empty());
}

#[test]
fn a_single_look_still_finds_the_hang() {
    let mut s = load("join_before_drain");
    s.looks = 1;
    for t in s.processes.iter_mut().flat_map(|p| p.threads.iter_mut()) {
        t.later.clear();
    }
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
}

#[test]
fn a_running_provider_makes_everything_progress() {
    // If the parent were running (e.g. about to read), nothing is stuck.
    let mut s = load("join_before_drain");
    let root = s.root;
    let main = s
        .processes
        .iter_mut()
        .find(|p| p.pid == root)
        .and_then(|p| p.threads.first_mut())
        .expect("parent main");
    main.state = 'R';
    main.syscall = mphang::model::SyscallState::Running;
    let a = analyze(&s);
    assert!(a.findings.is_empty());
    assert!(
        a.threads
            .iter()
            .all(|v| v.progress == Progress::CanProgress),
        "{:#?}",
        a.threads
    );
}

#[test]
fn stuck_set_is_exactly_the_hung_threads() {
    let s = load("join_before_drain");
    let a = analyze(&s);
    let stuck: Vec<_> = a
        .threads
        .iter()
        .filter(|v| v.progress == Progress::Stuck)
        .collect();
    assert_eq!(stuck.len(), 3, "parent main, child main, feeder");
    assert!(stuck
        .iter()
        .any(|v| matches!(v.blocked_on, BlockedOn::Child { .. })));
    assert!(stuck
        .iter()
        .any(|v| matches!(v.blocked_on, BlockedOn::PipeWrite { .. })));
}

#[test]
fn idle_pool_is_not_stuck() {
    let s = load("pool_idle");
    let a = analyze(&s);
    let main = a
        .threads
        .iter()
        .find(|v| v.thread.tid.0 == s.root.0)
        .expect("main");
    assert_eq!(main.progress, Progress::CanProgress);
}

/// With the pattern broken (the child no longer looks forked), the stuck set is still reported:
/// a dead end, as `stuck`.
#[test]
fn unexplained_dead_end_is_reported_as_stuck() {
    let mut s = load("fork_inherited_lock");
    for p in &mut s.processes {
        if p.role == mphang::model::Role::ForkChild {
            p.role = mphang::model::Role::Python;
        }
    }
    let a = analyze(&s);
    assert_eq!(
        a.findings
            .iter()
            .map(|f| f.pattern.as_str())
            .collect::<Vec<_>>(),
        vec!["stuck"]
    );
    assert!(!a.findings[0].chain.is_empty());
}

/// Without the exit-time frames and the parent's read end, the child's main thread and its
/// feeder wait only on each other: an unexplained cycle, reported as `deadlock`.
#[test]
fn unexplained_cycle_is_reported_as_deadlock() {
    let mut s = load("join_before_drain");
    let root = s.root;
    for p in &mut s.processes {
        if p.pid == root {
            p.fds.retain(|f| f.pipe_inode().is_none());
        }
        for t in &mut p.threads {
            if let Some(py) = &mut t.py {
                py.frames.retain(|f| {
                    !f.function.contains("_finalize_join") && !f.function.contains("_exit_function")
                });
            }
        }
    }
    let a = analyze(&s);
    let f: Vec<_> = a.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(f, vec!["deadlock"], "{:#?}", a.findings);
    assert!(a.findings[0].chain.len() >= 2);
}

#[test]
fn snapshot_round_trips() {
    let s = load("orphaned_lock_pool");
    let text = serde_json::to_string(&s).expect("serialize");
    let back: Snapshot = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(s, back);
    let report = Report::analyze(s);
    let text = serde_json::to_string(&report).expect("serialize report");
    let back: Report = serde_json::from_str(&text).expect("deserialize report");
    assert_eq!(report, back);
    // A report is accepted where a snapshot is expected.
    assert_eq!(
        render::json::parse_snapshot(&text).expect("report as input"),
        report.snapshot
    );
}

#[test]
fn a_wrong_schema_string_is_rejected() {
    // Unknown fields are accepted (tests/integration/schema.rs); another schema string is not.
    let s = load("ipc_cycle");
    let mut v = serde_json::to_value(&s).expect("value");
    v["schema"] = serde_json::json!("mphang/snapshot/v0");
    let err = render::json::parse_snapshot(&v.to_string()).expect_err("wrong schema");
    assert!(err.contains("mphang/snapshot/v0"), "{err}");
}

/// A synthetic chain of `n` processes: process i reads a pipe whose only writer is process
/// i+1; the last one reads a pipe whose write end it holds itself (`pipe_self_eof`).
fn chain_snapshot(n: usize) -> Snapshot {
    use mphang::model::{
        Access, Decoded, FdEntry, FdKind, Inode, Pid, PipeSnap, ProcessSnap, Role, Syscall,
        SyscallState, ThreadSnap, Tid,
    };
    let base = 1000;
    let pipe = |i: usize| Inode(10_000 + i as u64);
    let processes = (0..n)
        .map(|i| {
            let pid = Pid((base + i) as i32);
            let mut fds = vec![FdEntry {
                fd: 3,
                access: Access::Read,
                kind: FdKind::Pipe { inode: pipe(i) },
            }];
            // The writer of pipe i is process i+1 (the last one writes its own).
            if i + 1 == n {
                fds.push(FdEntry {
                    fd: 4,
                    access: Access::Write,
                    kind: FdKind::Pipe { inode: pipe(i) },
                });
            }
            if i > 0 {
                fds.push(FdEntry {
                    fd: 5,
                    access: Access::Write,
                    kind: FdKind::Pipe { inode: pipe(i - 1) },
                });
            }
            ProcessSnap {
                pid,
                ppid: Pid(if i == 0 { 1 } else { (base + i - 1) as i32 }),
                ns_pid: None,
                comm: "python3".into(),
                cmdline: vec!["python3".into()],
                exe: None,
                uid: Some(0),
                state: 'S',
                start_ticks: 0,
                cpu_ticks: 0,
                num_threads: 1,
                nofile_limit: None,
                fd_count: fds.len(),
                python_version: None,
                role: if i == 0 { Role::Main } else { Role::ForkChild },
                threads: vec![ThreadSnap {
                    tid: Tid(pid.0),
                    comm: "python3".into(),
                    state: 'S',
                    wchan: Some("anon_pipe_read".into()),
                    syscall: SyscallState::Blocked(Syscall {
                        nr: 0,
                        name: "read".into(),
                        args: [3, 0, 4, 0, 0, 0],
                        sp: 0,
                        pc: 0,
                        decoded: Decoded::Read { fd: 3 },
                    }),
                    cpu_ticks: 0,
                    py: None,
                    native: None,
                    native_as: None,
                    later: Vec::new(),
                    sched: None,
                }],
                fds,
                sem_maps: Vec::new(),
                appeared: Vec::new(),
                status_fds: Vec::new(),
                fds_as: None,
                net_ns: None,
                rank: None,
            }
        })
        .collect();
    Snapshot {
        schema: mphang::model::SCHEMA.into(),
        mphang_version: "test".into(),
        taken_at_ms: 0,
        root: Pid(base as i32),
        clock_ticks: 100,
        looks: 1,
        interval_ms: 500,
        collect_ms: 0,
        max_stop_us: None,
        processes,
        pipes: (0..n)
            .map(|i| PipeSnap {
                inode: pipe(i),
                buffered: Some(0),
                capacity: Some(65536),
                later_buffered: Vec::new(),
                outside: None,
            })
            .collect(),
        semaphores: Vec::new(),
        gone: Vec::new(),
        diagnostics: Vec::new(),
        hosts: Vec::new(),
        tracebacks: Vec::new(),
        gone_threads: Vec::new(),
        watched: None,
    }
}

/// The fixpoint and the attachment of dependents are linear: a 100,000-deep chain is one
/// finding with every thread, within seconds of CPU (quadratic work would take hours; the bound
/// only catches that).
#[test]
fn a_100k_deep_chain_is_one_finding_in_seconds() {
    let n = 100_000;
    let s = chain_snapshot(n);
    // This thread's CPU time, not wall time: a loaded machine must not fail the bound.
    let cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let started = cpu();
    let a = analyze(&s);
    let took = cpu() - started;
    assert_eq!(
        a.findings
            .iter()
            .map(|f| f.pattern.as_str())
            .collect::<Vec<_>>(),
        vec!["pipe_self_eof"]
    );
    assert_eq!(a.findings[0].threads.len(), n);
    assert!(a.threads.iter().all(|v| v.progress == Progress::Stuck));
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    // A writer that runs frees the whole chain.
    let mut s = chain_snapshot(1000);
    s.processes[999].threads[0].state = 'R';
    s.processes[999].threads[0].syscall = mphang::model::SyscallState::Running;
    let a = analyze(&s);
    assert!(a.findings.is_empty());
    assert!(a
        .threads
        .iter()
        .all(|v| v.progress == Progress::CanProgress));
}

fn verdict(a: &mphang::analysis::Analysis, t: mphang::model::ThreadRef) -> &ThreadVerdict {
    a.threads
        .iter()
        .find(|v| v.thread == t)
        .expect("a verdict for the thread")
}

fn named<'s>(s: &'s Snapshot, name: &str) -> Vec<(mphang::model::ThreadRef, &'s ThreadSnap)> {
    s.processes
        .iter()
        .flat_map(|p| p.threads.iter().map(move |t| (p, t)))
        .filter(|(_, t)| t.display_name() == name)
        .map(|(p, t)| {
            (
                mphang::model::ThreadRef {
                    pid: p.pid,
                    tid: t.tid,
                },
                t,
            )
        })
        .collect()
}

/// Periodic threads (a heartbeat, a timed Event.wait loop, select with a timeout, a
/// threading.Timer, a tqdm-style monitor) in both processes of a join-before-drain are neither
/// progress nor providers: the hang is named, and the finding lists each as an assumption.
#[test]
fn periodic_threads_are_neither_progress_nor_providers() {
    let s = load("join_before_drain_noise");
    let a = analyze(&s);
    let f = &a.findings[0];
    assert_eq!(f.pattern, "join_before_drain");
    let feeder_pipe = a
        .threads
        .iter()
        .find_map(|v| match v.blocked_on {
            BlockedOn::PipeWrite { inode, .. } => Some(inode),
            _ => None,
        })
        .expect("the feeder's pipe");
    for name in ["heartbeat", "ticker", "selector", "watchdog", "monitor"] {
        let threads = named(&s, name);
        assert_eq!(threads.len(), 2, "{name}: one in each process");
        for (r, _) in threads {
            let v = verdict(&a, r);
            assert!(v.housekeeping, "{name} {r:?} is periodic");
            assert_eq!(v.progress, Progress::CanProgress, "{name}");
            assert!(
                a.threads.iter().all(|w| !w.providers.contains(&r)),
                "{name} provides nothing"
            );
            let assumption = f
                .assumed
                .iter()
                .find(|x| x.thread == r)
                .unwrap_or_else(|| panic!("{name} {r:?} assumed"));
            assert!(assumption.periodic.starts_with(name), "{assumption:?}");
        }
    }
    // The parent's periodic threads are assumed not to read the feeder's pipe.
    let root = s.root;
    let readers: Vec<_> = f.assumed.iter().filter(|x| x.thread.pid == root).collect();
    assert_eq!(readers.len(), 5);
    for x in readers {
        assert!(
            x.will_not.contains(&format!("read pipe:[{feeder_pipe}]")),
            "{x:?}"
        );
    }
    assert!(f
        .evidence
        .iter()
        .any(|e| e.starts_with("assuming thread") && e.contains("heartbeat, sleeping at")));
}

/// A timed waiter never seen to wake (its schedule count unchanged, no known loop) may still
/// return and provide: no hang verdict rests on it, and `undecided` says that looking again
/// would settle it.
#[test]
fn a_timed_waiter_not_seen_to_wake_is_a_plausible_provider() {
    let mut s = load("join_before_drain_noise");
    let root = s.root;
    let hb = named(&s, "heartbeat")
        .into_iter()
        .find(|(r, _)| r.pid == root)
        .map(|(r, _)| r)
        .expect("parent heartbeat");
    for p in &mut s.processes {
        for t in &mut p.threads {
            if p.pid == hb.pid && t.tid == hb.tid {
                let first = t.later.first().and_then(|l| l.switches);
                let call = t.later.iter().find_map(|l| l.syscall);
                let timed = t.later.iter().find_map(|l| l.timed);
                for l in &mut t.later {
                    l.switches = first;
                    l.syscall = call;
                    l.timed = timed;
                }
            }
        }
    }
    let a = analyze(&s);
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert!(!verdict(&a, hb).housekeeping);
    assert_eq!(
        mphang::analysis::undecided(&s)
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>(),
        vec![hb]
    );
}

/// Readers and releasers are plausible ones: the parent joining the producer holds the full
/// bounded queue but waits for the producer's process, so it is not a provider of the
/// producer's put; the producer is peer_exited, and the joining parent is part of the finding.
#[test]
fn a_thread_waiting_for_the_waiters_process_is_not_its_provider() {
    let s = load("peer_exited_joined");
    let a = analyze(&s);
    let root = s.root;
    let parent_main = mphang::model::ThreadRef {
        pid: root,
        tid: mphang::model::Tid(root.0),
    };
    assert!(matches!(
        verdict(&a, parent_main).blocked_on,
        BlockedOn::Child { .. }
    ));
    let producer = a
        .threads
        .iter()
        .find(|v| matches!(v.blocked_on, BlockedOn::Semaphore { .. }))
        .expect("the producer's put");
    assert!(!producer.providers.contains(&parent_main));
    assert!(producer
        .providers
        .iter()
        .all(|p| p.pid == producer.thread.pid));
    let f = &a.findings[0];
    assert_eq!(f.pattern, "peer_exited");
    assert!(f.threads.contains(&parent_main));
}

/// A pipe whose writer is outside the tree (found machine-wide) is external: the reader can
/// progress; with the holder unknown too it is never called stuck.
#[test]
fn a_pipe_end_held_outside_the_tree_is_external() {
    let mut s = load("neg_external_writer");
    let a = analyze(&s);
    let root = s.root;
    let reader = a
        .threads
        .iter()
        .find(|v| v.thread.pid == root && matches!(v.blocked_on, BlockedOn::PipeRead { .. }))
        .expect("the reader");
    assert_eq!(reader.progress, Progress::CanProgress);
    let BlockedOn::PipeRead { inode } = reader.blocked_on else {
        unreachable!()
    };
    let outside = s
        .pipe(inode)
        .and_then(|p| p.outside.clone())
        .expect("looked up");
    assert!(!outside.is_empty() && outside.iter().all(|h| h.access.can_write()));
    assert!(reader.line.contains("held outside the tree by"));
    for p in &mut s.pipes {
        p.outside = None;
    }
    let a = analyze(&s);
    assert!(a.findings.is_empty());
    assert!(a
        .threads
        .iter()
        .all(|v| v.progress == Progress::CanProgress));
}

fn feeder_pipe_snapshot() -> Snapshot {
    let mut s = load("join_before_drain");
    // Threads were stopped for native stacks during the first look.
    s.max_stop_us = Some(900);
    s
}

/// mphang's own stop is not progress: a write resumed with the rest of the message in a new
/// buffer, a restarted call, one CPU tick while threads were stopped. A wake between two later
/// looks, or a second tick, is.
#[test]
fn our_own_stop_is_not_progress() {
    let mut s = feeder_pipe_snapshot();
    let f = feeder(&mut s);
    let (nr, fd, buf, count) = f.later[0].syscall.expect("blocked in write");
    assert_eq!(nr, 1);
    // Resumed: same fd, a new (lower) buffer address, fewer bytes.
    f.later[0].syscall = Some((1, fd, buf.wrapping_sub(0x10_0000), count / 2));
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
    // Restarted.
    let f = feeder(&mut s);
    f.later[0].syscall = Some((219, fd, buf, count));
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
    // One tick of slack while mphang stopped threads; not two.
    let f = feeder(&mut s);
    f.later[0].cpu_ticks = f.cpu_ticks + 1;
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
    let f = feeder(&mut s);
    f.later[0].cpu_ticks = f.cpu_ticks + 2;
    assert!(patterns(&s).is_empty());
    // Woken between two later looks (the first look's own stop is not compared).
    let mut s = feeder_pipe_snapshot();
    let f = feeder(&mut s);
    let mut second = f.later[0].clone();
    f.later[0].switches = Some(9);
    second.after_ms += 200;
    second.switches = Some(9);
    f.later.push(second.clone());
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
    let f = feeder(&mut s);
    f.later[1].switches = Some(10);
    assert!(patterns(&s).is_empty());
}

/// The joined child's ticker thread in `join_before_drain_noise`.
fn child_ticker(s: &mut Snapshot) -> &mut mphang::model::ThreadSnap {
    s.processes
        .iter_mut()
        .find(|p| p.pid.0 == 22434)
        .and_then(|p| p.threads.iter_mut().find(|t| t.tid.0 == 22436))
        .expect("the child's ticker")
}

/// A loop caught between two of its waits is periodic, not a running seed: the joined child's
/// ticker (`Event.wait(0.5)`) seen running at the first look and back in its timed wait at the
/// same line in every later look does not make the join able to progress (seen in CI under
/// load: orphaned_lock_pool with noise lost the Pool's owner from its finding this way).
#[test]
fn a_loop_caught_running_between_its_waits_is_periodic() {
    let mut s = load("join_before_drain_noise");
    let t = child_ticker(&mut s);
    t.state = 'R';
    t.syscall = mphang::model::SyscallState::Running;
    assert_eq!(patterns(&s), vec!["join_before_drain".to_string()]);
    let a = analyze(&s);
    let v = a
        .threads
        .iter()
        .find(|v| v.thread.tid.0 == 22436)
        .expect("a verdict");
    assert!(v.housekeeping, "caught between waits: periodic, confirmed");
    // Seen running in a later look too: not known to loop, and the child may still exit.
    let t = child_ticker(&mut s);
    t.later[2].syscall = None;
    t.later[2].timed = None;
    t.later[2].py_top = Some("_fixture.py:99 elsewhere".into());
    assert!(patterns(&s).is_empty());
}
