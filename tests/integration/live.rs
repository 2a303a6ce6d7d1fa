//! Live tests: each fixture reaches its hang (or healthy look-alike) on every CPython 3.8–3.15
//! present, under each start method it applies to (the matrix of `util::runs`); mphang must
//! name the exact pattern, the processes, and the culprit line, and stay quiet on the negative
//! controls. Every fixture's process group is killed and reaped on drop.

use crate::util::{
    self, each_run, fixture_methods, line_of, marked_lines, report_json, runs, Method, Run, Share,
};
use mphang::analysis::{BlockedOn, Severity};
use mphang::cmd::fixture::Ready;
use mphang::model::{Decoded, FdKind, Pid, Role, SyscallState};
use mphang::render::Report;

/// Which line mphang must name as the culprit.
#[derive(Clone, Copy)]
enum Culprit {
    /// The line marked `# MARK` in the fixture.
    Mark(&'static str),
    /// The first line containing this text.
    Text(&'static str),
    /// No user line can be on any stack (the culprit has returned).
    None,
}

struct Case {
    fixture: &'static str,
    pattern: &'static str,
    culprit: Culprit,
    /// Names in the ready file whose pids must be in the finding.
    pids: &'static [&'static str],
}

/// CPU-bound fixtures run alone.
fn share(fixture: &str) -> Share {
    match fixture {
        "busy_loop" | "neg_busy_pool" => Share::Alone,
        _ => Share::Concurrent,
    }
}

/// Fixtures whose noise run also happens on the Pythons between the oldest and the newest (the
/// others run with noise on the oldest and newest only, to keep CI time down): a pipe reader
/// behind a joiner, a private lock with no releaser, a semaphore whose peer exited, and a
/// healthy program whose producer is periodic.
const NOISE_SUBSET: &[&str] = &[
    "join_before_drain",
    "fork_inherited_threading_lock",
    "peer_exited_bounded",
    "neg_periodic_producer",
];

/// What must be the same with and without noise: the id, the processes of the chain (in
/// order) and of the finding, named by the ready file (unnamed ones by role), the culprit
/// line, and the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Signature {
    pattern: String,
    chain: Vec<String>,
    pids: Vec<String>,
    culprit: Option<i32>,
    code: i32,
}

/// The ready-file name of `pid`, else its role.
fn pid_name(ready: &Ready, r: &Report, pid: Pid) -> String {
    ready
        .pids
        .iter()
        .find(|(n, v)| !n.ends_with("_tid") && v.as_i64() == Some(i64::from(pid.0)))
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| match r.snapshot.process(pid) {
            Some(p) => format!("{:?}", p.role),
            None => "gone".into(),
        })
}

fn signature(ready: &Ready, r: &Report, code: i32) -> Signature {
    let f = &r.findings[0];
    let mut pids: Vec<String> = f.pids.iter().map(|p| pid_name(ready, r, *p)).collect();
    pids.sort();
    pids.dedup();
    Signature {
        pattern: f.pattern.to_string(),
        chain: f
            .chain
            .iter()
            .map(|l| pid_name(ready, r, l.thread.pid))
            .collect(),
        pids,
        culprit: f.culprit.as_ref().map(|c| c.line),
        code,
    }
}

/// Runs each case on its matrix of Pythons and start methods, and again with noise where
/// [`util::noise_on`] says: the noise run must give the same [`Signature`] and name no noise
/// process.
fn check_case(case: &Case) {
    each_run(
        case.fixture,
        case.pattern,
        runs(&fixture_methods(case.fixture)),
        share(case.fixture),
        |run| {
            let plain = run_case(case, run, false);
            if util::noise_on(run, case.fixture, NOISE_SUBSET) {
                let noisy = run_case(case, run, true);
                assert_eq!(
                    noisy,
                    plain,
                    "{} on {}: noise changed the verdict",
                    case.fixture,
                    run.label()
                );
            }
        },
    );
}

fn run_case(case: &Case, run: &Run, noise: bool) -> Signature {
    let fx = util::start_run_noise(run, case.fixture, noise);
    let (code, report) = report_json(fx.root(), &[]);
    let ctx = format!(
        "{} on {}{}",
        case.fixture,
        run.label(),
        if noise { " with noise" } else { "" }
    );
    let patterns: Vec<&str> = report.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(patterns, vec![case.pattern], "{ctx}: findings {patterns:?}");
    let f = &report.findings[0];
    let expected_code = if f.severity == Severity::Hang { 1 } else { 0 };
    assert_eq!(code, expected_code, "{ctx}: exit code");
    for name in case.pids {
        let pid = fx
            .ready
            .pid(name)
            .unwrap_or_else(|| panic!("{ctx}: no pid {name}"));
        assert!(
            f.pids.contains(&Pid(pid)),
            "{ctx}: {name}={pid} not in finding pids {:?}",
            f.pids
        );
    }
    match case.culprit {
        Culprit::None => assert!(
            f.culprit.is_none(),
            "{ctx}: unexpected culprit {:?}",
            f.culprit
        ),
        Culprit::Mark(m) | Culprit::Text(m) => {
            let want = match case.culprit {
                Culprit::Mark(_) => marked_lines(case.fixture, m)[0],
                _ => line_of(case.fixture, m),
            };
            let c = f
                .culprit
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: no culprit"));
            assert!(
                c.file.ends_with(&format!("{}.py", case.fixture)),
                "{ctx}: culprit file {}",
                c.file
            );
            assert_eq!(c.line, want, "{ctx}: culprit line");
        }
    }
    assert!(
        !f.chain.is_empty() && !f.fix.is_empty() && !f.evidence.is_empty(),
        "{ctx}: chain, fix and evidence"
    );
    assert_eq!(f.doc, format!("docs/patterns/{}.md", case.pattern));
    assert!(
        util::repo().join(&f.doc).exists(),
        "{ctx}: {} missing",
        f.doc
    );
    extra_checks(case.fixture, run, &fx.ready, &report, &ctx);
    for (name, _) in fx
        .ready
        .pids
        .iter()
        .filter(|(n, _)| n.starts_with("noise_"))
    {
        let pid = Pid(fx.ready.pid(name).unwrap_or(0));
        assert!(
            !report.findings.iter().any(|f| f.pids.contains(&pid)),
            "{ctx}: noise process {name} in a finding"
        );
    }
    signature(&fx.ready, &report, code)
}

/// Pattern-specific evidence beyond the id.
fn extra_checks(fixture: &str, run: &Run, ready: &Ready, r: &Report, ctx: &str) {
    let pid = |n: &str| Pid(ready.pid(n).unwrap_or(0));
    match fixture {
        "join_before_drain" | "join_before_drain_spawn" => {
            check_join_before_drain(run, ready, r, ctx)
        }
        "fork_inherited_lock" => {
            let holder = ready.pid("holder_tid").unwrap_or(0);
            let ev = r.findings[0].evidence.join("\n");
            assert!(
                ev.contains(&format!("__owner = {holder}")),
                "{ctx}: owner TID in evidence: {ev}"
            );
        }
        "fork_inherited_rlock" => {
            let holder = ready.pid("holder_tid").unwrap_or(0);
            let ev = r.findings[0].evidence.join("\n");
            assert!(
                ev.contains("rlock_count = 2"),
                "{ctx}: RLock read from memory: {ev}"
            );
            assert!(
                ev.contains(&format!("is thread {holder}")),
                "{ctx}: holder in the parent: {ev}"
            );
        }
        "fork_inherited_io_lock" => {
            let holder = ready.pid("holder_tid").unwrap_or(0);
            let ev = r.findings[0].evidence.join("\n");
            assert!(
                ev.contains("_io.BufferedWriter at") && ev.contains(&format!("is thread {holder}")),
                "{ctx}: the BufferedWriter and its owner in the parent: {ev}"
            );
        }
        "orphaned_lock" | "orphaned_lock_pool" => {
            assert!(
                r.findings[0].evidence[0].contains("no live process holds it"),
                "{ctx}"
            );
            let sem_waited = r.snapshot.semaphores.iter().any(|s| {
                s.value == Some(0)
                    && s.holders
                        .as_ref()
                        .is_some_and(|h| !h.is_empty() && h.iter().all(|x| x.count <= 0))
            });
            assert!(
                sem_waited,
                "{ctx}: a scanned semaphore with value 0 and no holder"
            );
        }
        "lock_order_cycle_threads" => {
            let t = ready.pid("worker_tid").unwrap_or(0);
            assert!(
                r.findings[0].threads.iter().any(|x| x.tid.0 == t),
                "{ctx}: worker thread in cycle"
            );
        }
        "gil_held_while_blocked" => {
            let t = ready.pid("worker_tid").unwrap_or(0);
            let f = &r.findings[0];
            assert!(
                f.threads.iter().any(|x| x.tid.0 == t),
                "{ctx}: GIL waiter named"
            );
            assert!(
                f.evidence.iter().any(|e| e.contains("owns the GIL")),
                "{ctx}"
            );
            let main = r
                .snapshot
                .process(pid("parent"))
                .and_then(|p| p.main_thread())
                .expect("main");
            assert!(
                main.py.as_ref().is_some_and(|p| p.owns_gil),
                "{ctx}: py-spy sees the holder"
            );
        }
        "thread_blocks_exit" => {
            let t = ready.pid("thread_tid").unwrap_or(0);
            assert!(
                r.findings[0].threads.iter().any(|x| x.tid.0 == t),
                "{ctx}: blocking thread named"
            );
        }
        "pool_worker_died" => {
            assert!(
                r.snapshot
                    .processes
                    .iter()
                    .filter(|p| p.role == Role::PoolWorker)
                    .count()
                    >= 2,
                "{ctx}"
            );
            assert!(
                !r.snapshot
                    .processes
                    .iter()
                    .any(|p| p.pid == pid("victim") && p.state != 'Z'),
                "{ctx}: victim gone"
            );
        }
        _ => {}
    }
}

fn check_join_before_drain(run: &Run, ready: &Ready, r: &Report, ctx: &str) {
    let parent = Pid(ready.pid("parent").unwrap_or(0));
    let child = Pid(ready.pid("child").unwrap_or(0));
    let s = &r.snapshot;
    let p = s.process(parent).expect("parent in snapshot");
    let c = s.process(child).expect("child in snapshot");
    assert_eq!(p.role, Role::Main, "{ctx}");
    let role = match run.method {
        Method::Fork => Role::ForkChild,
        Method::Spawn => Role::SpawnChild,
        Method::Forkserver => Role::ForkserverChild,
    };
    assert_eq!(c.role, role, "{ctx}");
    assert!(
        p.python_version.is_some() && c.python_version.is_some(),
        "{ctx}: python versions"
    );
    // The parent's main thread is in wait4(child); under forkserver it polls the child's
    // sentinel pipe, which mphang maps back to the child through the forkserver.
    let main = p.main_thread().expect("parent main thread");
    match (&main.syscall, run.method) {
        (SyscallState::Blocked(sc), Method::Forkserver) => {
            // glibc 2.43 issues poll() as ppoll.
            assert!(
                sc.name == "poll" || sc.name == "ppoll",
                "{ctx}: {}",
                sc.name
            );
        }
        (SyscallState::Blocked(sc), _) => {
            assert_eq!(sc.name, "wait4", "{ctx}");
            assert_eq!(sc.decoded, Decoded::WaitChild { pid: Some(child) }, "{ctx}");
        }
        other => panic!("{ctx}: parent main not blocked: {other:?}"),
    }
    let joins = r
        .threads
        .iter()
        .find(|v| v.thread.pid == parent && v.thread.tid.0 == parent.0)
        .map(|v| v.blocked_on.clone());
    assert!(
        matches!(joins, Some(BlockedOn::Child { pid: Some(c), sentinel }) if c == child && sentinel.is_some() == (run.method == Method::Forkserver)),
        "{ctx}: the parent waits for the child: {joins:?}"
    );
    // A child thread writes a pipe whose read end the parent holds, and the pipe has data.
    let writer = c
        .threads
        .iter()
        .find_map(|t| match &t.syscall {
            SyscallState::Blocked(sc) => match sc.decoded {
                Decoded::Write { fd, .. } => c
                    .fds
                    .iter()
                    .find(|e| e.fd == fd)
                    .and_then(|e| e.pipe_inode()),
                _ => None,
            },
            _ => None,
        })
        .expect("a child thread blocked in write on a pipe");
    assert!(
        p.fds
            .iter()
            .any(|e| e.kind == FdKind::Pipe { inode: writer } && e.access.can_read()),
        "{ctx}: parent holds the read end of pipe:[{writer}]"
    );
    let pipe = s.pipe(writer).expect("pipe in snapshot");
    assert!(pipe.buffered.unwrap_or(0) > 0, "{ctx}: buffered bytes");
    assert_eq!(pipe.capacity, Some(65536), "{ctx}");
    // Verdict lines name both ends.
    let v = r
        .threads
        .iter()
        .find(|v| matches!(v.blocked_on, BlockedOn::PipeWrite { inode, .. } if inode == writer))
        .expect("verdict for the writer");
    assert!(
        v.line.contains(&format!("held by {parent}")),
        "{ctx}: {}",
        v.line
    );
    // The chain: parent -> child main -> feeder.
    let chain: Vec<Pid> = r.findings[0].chain.iter().map(|l| l.thread.pid).collect();
    assert_eq!(chain.first(), Some(&parent), "{ctx}");
    assert!(chain.contains(&child), "{ctx}");
}

macro_rules! hang_case {
    ($test:ident, $fixture:literal, $pattern:literal, $culprit:expr, [$($p:literal),*]) => {
        #[test]
        fn $test() {
            check_case(&Case { fixture: $fixture, pattern: $pattern, culprit: $culprit, pids: &[$($p),*] });
        }
    };
}

hang_case!(
    join_before_drain,
    "join_before_drain",
    "join_before_drain",
    Culprit::Mark("CULPRIT"),
    ["parent", "child"]
);
hang_case!(
    join_before_drain_spawn,
    "join_before_drain_spawn",
    "join_before_drain",
    Culprit::Mark("CULPRIT"),
    ["parent", "child"]
);
hang_case!(
    join_before_drain_sibling,
    "join_before_drain_sibling",
    "join_before_drain",
    Culprit::Mark("CULPRIT"),
    ["parent", "child", "sibling"]
);
hang_case!(
    undrained_queue_at_exit,
    "undrained_queue_at_exit",
    "undrained_queue_at_exit",
    Culprit::Mark("OTHER-SIDE"),
    ["parent", "child"]
);
hang_case!(
    undrained_queue_main_exit,
    "undrained_queue_main_exit",
    "undrained_queue_at_exit",
    Culprit::None,
    ["parent"]
);
hang_case!(
    fork_inherited_lock,
    "fork_inherited_lock",
    "fork_inherited_lock",
    Culprit::Mark("CULPRIT"),
    ["child"]
);
hang_case!(
    fork_inherited_threading_lock,
    "fork_inherited_threading_lock",
    "fork_inherited_lock",
    Culprit::Mark("CULPRIT"),
    ["child"]
);
hang_case!(
    fork_inherited_rlock,
    "fork_inherited_rlock",
    "fork_inherited_lock",
    Culprit::Mark("CULPRIT"),
    ["child"]
);
hang_case!(
    fork_inherited_io_lock,
    "fork_inherited_io_lock",
    "fork_inherited_lock",
    Culprit::Mark("CULPRIT"),
    ["child"]
);
hang_case!(
    orphaned_lock,
    "orphaned_lock",
    "orphaned_lock",
    Culprit::Mark("CULPRIT"),
    ["parent", "waiter"]
);
hang_case!(
    orphaned_lock_pool,
    "orphaned_lock_pool",
    "orphaned_lock",
    Culprit::Mark("CULPRIT"),
    ["parent", "worker0", "worker1", "replacement"]
);
hang_case!(
    pool_worker_died,
    "pool_worker_died",
    "pool_worker_died",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    pool_result_handler_died,
    "pool_result_handler_died",
    "pool_result_handler_died",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    peer_exited,
    "peer_exited",
    "peer_exited",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    peer_exited_bounded,
    "peer_exited_bounded",
    "peer_exited",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    barrier_party_died,
    "barrier_party_died",
    "peer_exited",
    Culprit::Mark("CULPRIT"),
    ["parent", "waiter"]
);
hang_case!(
    reimported_main_blocks,
    "reimported_main_blocks",
    "reimported_main_blocks",
    Culprit::Mark("CULPRIT"),
    ["parent", "reimported"]
);
hang_case!(
    peer_exited_joined,
    "peer_exited_joined",
    "peer_exited",
    Culprit::Mark("CULPRIT"),
    ["producer", "parent"]
);
hang_case!(
    orphaned_lock_manager,
    "orphaned_lock_manager",
    "orphaned_lock",
    Culprit::Mark("CULPRIT"),
    ["waiter", "manager"]
);
hang_case!(
    no_live_writer,
    "no_live_writer",
    "no_live_writer",
    Culprit::Text("c.join()"),
    ["parent", "consumer_blocked"]
);
hang_case!(
    pipe_self_eof,
    "pipe_self_eof",
    "pipe_self_eof",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    ipc_cycle,
    "ipc_cycle",
    "ipc_cycle",
    Culprit::Mark("CULPRIT"),
    ["parent", "child"]
);
hang_case!(
    ipc_cycle_joinable,
    "ipc_cycle_joinable",
    "ipc_cycle",
    Culprit::Mark("CULPRIT"),
    ["parent", "consumer"]
);
hang_case!(
    lock_order_cycle,
    "lock_order_cycle",
    "lock_order_cycle",
    Culprit::Mark("CULPRIT"),
    ["parent", "child"]
);
hang_case!(
    lock_order_cycle_threads,
    "lock_order_cycle_threads",
    "lock_order_cycle",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    thread_blocks_exit,
    "thread_blocks_exit",
    "thread_blocks_exit",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    finalizer_deadlock,
    "finalizer_deadlock",
    "finalizer_deadlock",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    gil_held_while_blocked,
    "gil_held_while_blocked",
    "gil_held_while_blocked",
    Culprit::Mark("CULPRIT"),
    ["parent"]
);
hang_case!(
    busy_loop,
    "busy_loop",
    "busy_loop",
    Culprit::Mark("CULPRIT"),
    ["child"]
);

/// Negative controls and foundation fixtures: no finding, exit 0, plus structural checks.
fn check_quiet(fixture: &str, extra: fn(&Ready, &Report, &str)) {
    each_run(
        fixture,
        "quiet",
        runs(&fixture_methods(fixture)),
        share(fixture),
        |run| {
            quiet_run(fixture, run, false, extra);
            if util::noise_on(run, fixture, NOISE_SUBSET) {
                quiet_run(fixture, run, true, extra);
            }
        },
    );
}

fn quiet_run(fixture: &str, run: &Run, noise: bool, extra: fn(&Ready, &Report, &str)) {
    {
        let fx = util::start_run_noise(run, fixture, noise);
        let (code, report) = report_json(fx.root(), &[]);
        let ctx = format!("{fixture} on {}", run.label());
        let found: Vec<String> = report
            .findings
            .iter()
            .map(|f| format!("{}: {}", f.pattern, f.summary))
            .collect();
        assert!(found.is_empty(), "{ctx}: must stay quiet, found {found:#?}");
        assert_eq!(code, 0, "{ctx}: exit code");
        for (name, v) in &fx.ready.pids {
            let named_in_tree = !name.ends_with("_tid") && !name.starts_with("outside_");
            if let Some(p) = v.as_i64().filter(|_| named_in_tree) {
                assert!(
                    report.snapshot.process(Pid(p as i32)).is_some(),
                    "{ctx}: {name}={p} missing from the tree"
                );
            }
        }
        extra(&fx.ready, &report, &ctx);
    }
}

fn no_extra(_: &Ready, _: &Report, _: &str) {}

macro_rules! quiet_case {
    ($test:ident, $fixture:literal) => {
        quiet_case!($test, $fixture, no_extra);
    };
    ($test:ident, $fixture:literal, $extra:expr) => {
        #[test]
        fn $test() {
            check_quiet($fixture, $extra);
        }
    };
}

quiet_case!(neg_busy_pool, "neg_busy_pool");
quiet_case!(neg_sleep, "neg_sleep");
quiet_case!(neg_slow_consumer, "neg_slow_consumer");
quiet_case!(neg_periodic_producer, "neg_periodic_producer");
quiet_case!(neg_fork_logging, "neg_fork_logging");
quiet_case!(neg_external_writer, "neg_external_writer", |r, rep, ctx| {
    // The writer is outside the tree; the lookup found it.
    let writer = Pid(r.pid("outside_writer").unwrap_or(0));
    assert!(
        rep.snapshot.process(writer).is_none(),
        "{ctx}: writer outside"
    );
    assert!(
        rep.snapshot
            .pipes
            .iter()
            .filter_map(|p| p.outside.as_ref())
            .any(|o| o.iter().any(|h| h.pid == writer)),
        "{ctx}: writer found outside the tree"
    );
});
quiet_case!(pool_idle, "pool_idle", |r, rep, ctx| {
    for w in ["worker0", "worker1", "worker2", "worker3"] {
        let p = rep
            .snapshot
            .process(Pid(r.pid(w).unwrap_or(0)))
            .expect("worker");
        assert_eq!(p.role, Role::PoolWorker, "{ctx}: {w}");
    }
});
quiet_case!(many_fds, "many_fds", |r, rep, ctx| {
    let p = rep
        .snapshot
        .process(Pid(r.pid("parent").unwrap_or(0)))
        .expect("parent");
    assert!(
        p.fd_count >= 1000 && p.fds.len() == p.fd_count,
        "{ctx}: {} fds",
        p.fd_count
    );
    assert!(p.nofile_limit.unwrap_or(0) >= 1000, "{ctx}: RLIMIT_NOFILE");
});
quiet_case!(non_python_child, "non_python_child", |r, rep, ctx| {
    let sleep = Pid(r.pid("sleep").unwrap_or(0));
    let p = rep.snapshot.process(sleep).expect("sleep child");
    assert_eq!(p.role, Role::NonPython, "{ctx}");
    assert!(!p.threads.is_empty() && p.python_version.is_none(), "{ctx}");
    assert!(
        rep.snapshot
            .diagnostics
            .iter()
            .any(|d| d.pid == Some(sleep) && d.kind == mphang::model::DiagKind::NotPython),
        "{ctx}: not-Python diagnostic"
    );
});
quiet_case!(spawn_child, "spawn_child", |r, rep, ctx| {
    let c = rep
        .snapshot
        .process(Pid(r.pid("child").unwrap_or(0)))
        .expect("child");
    assert_eq!(c.role, Role::SpawnChild, "{ctx}");
    if let Some(t) = r.pid("resource_tracker") {
        let p = rep.snapshot.process(Pid(t)).expect("resource tracker");
        assert_eq!(p.role, Role::ResourceTracker, "{ctx}");
    }
});
quiet_case!(forkserver_child, "forkserver_child", |r, rep, ctx| {
    let fs = rep
        .snapshot
        .process(Pid(r.pid("forkserver").unwrap_or(0)))
        .expect("forkserver");
    assert_eq!(fs.role, Role::Forkserver, "{ctx}");
    let c = rep
        .snapshot
        .process(Pid(r.pid("child").unwrap_or(0)))
        .expect("child");
    assert_eq!(c.role, Role::ForkserverChild, "{ctx}");
});
