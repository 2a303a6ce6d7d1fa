//! Replay tests for what changed with current CPythons: snapshots recorded on 3.14 and 3.15
//! under each one's default start method (forkserver) or with PyMutex-based locks, pinned
//! with insta, plus the structural facts each verdict rests on.

use crate::replay::{load, text};
use mphang::analysis::BlockedOn;
use mphang::model::Role;
use mphang::render::Report;

/// The report of a recorded snapshot, its pattern ids checked and its text and findings pinned.
fn replay(name: &str, want: &[&str]) -> Report {
    let report = Report::analyze(load(name));
    let got: Vec<&str> = report.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(got, want, "{name}");
    insta::assert_snapshot!(format!("{name}_text"), text(&report));
    insta::assert_json_snapshot!(format!("{name}_findings"), report.findings);
    report
}

/// Under forkserver, join polls a sentinel pipe that only the forkserver writes; the
/// forkserver's pid_to_fd maps it back to the child.
#[test]
fn join_before_drain_under_forkserver() {
    let r = replay("join_before_drain_forkserver", &["join_before_drain"]);
    let root = r.snapshot.root;
    let parent = r
        .threads
        .iter()
        .find(|v| v.thread.pid == root && v.thread.tid.0 == root.0)
        .expect("parent main");
    let BlockedOn::Child {
        pid: Some(child),
        sentinel: Some(_),
    } = parent.blocked_on
    else {
        panic!("{:?}", parent.blocked_on)
    };
    let fs = r
        .snapshot
        .processes
        .iter()
        .find(|p| p.role == Role::Forkserver)
        .expect("forkserver");
    assert!(fs.status_fds.iter().any(|s| s.child == child));
    assert_eq!(
        r.snapshot.process(child).map(|p| p.role),
        Some(Role::ForkserverChild)
    );
}

/// Pool workers are the forkserver's children; the dead one left no zombie.
#[test]
fn pool_worker_died_under_forkserver() {
    let r = replay("pool_worker_died_forkserver", &["pool_worker_died"]);
    assert!(r.snapshot.processes.iter().all(|p| p.state != 'Z'));
    let workers: Vec<_> = r
        .snapshot
        .processes
        .iter()
        .filter(|p| p.role == Role::PoolWorker)
        .collect();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w.ppid != r.snapshot.root));
}

/// The producer exited and the forkserver reaped it: only its sentinel at EOF tells.
#[test]
fn peer_exited_under_forkserver() {
    let r = replay("peer_exited_forkserver", &["peer_exited"]);
    assert!(r.snapshot.processes.iter().all(|p| p.state != 'Z'));
    assert!(r.findings[0]
        .evidence
        .iter()
        .any(|e| e.contains("sentinel pipe") && e.contains("at EOF")));
}

/// 3.14: an RLock is a `_PyRecursiveMutex`; its owner and count come from the object found
/// by the parking-lot key.
#[test]
fn fork_inherited_rlock_on_314() {
    let r = replay("fork_inherited_rlock_314", &["fork_inherited_lock"]);
    let ev = r.findings[0].evidence.join("\n");
    assert!(ev.contains("rlock_count = 2"), "{ev}");
}

/// 3.14: an AB-BA cycle of two threading.Locks, both PyMutexes parked on.
#[test]
fn lock_order_cycle_threads_on_314() {
    replay("lock_order_cycle_threads_314", &["lock_order_cycle"]);
}

/// 3.15: a BufferedWriter's lock is a heap PyMutex; the object is found through the pointer to
/// it and names its owner.
#[test]
fn fork_inherited_io_lock_on_315() {
    let r = replay("fork_inherited_io_lock", &["fork_inherited_lock"]);
    let ev = r.findings[0].evidence.join("\n");
    assert!(ev.contains("_io.BufferedWriter at"), "{ev}");
    assert!(ev.contains("in the parent"), "{ev}");
}

/// A barrier party died and the forkserver reaped it: the co-waiters are one `peer_exited`
/// (not an `ipc_cycle`: they all wait on the same barrier), told by the sentinel at EOF.
#[test]
fn barrier_party_died_under_forkserver() {
    let r = replay("barrier_party_died_forkserver", &["peer_exited"]);
    let f = &r.findings[0];
    assert!(f.pids.len() >= 2, "{:?}", f.pids);
    assert!(f.evidence.iter().any(|e| e.contains("sentinel pipe")));
}

/// 3.14+ forkserver: the forkserver's own preload of `__main__` blocks; `start()` waits on a
/// connection still in the forkserver's accept queue.
#[test]
fn reimported_main_blocks_in_the_forkserver() {
    let r = replay(
        "reimported_main_blocks_forkserver",
        &["reimported_main_blocks"],
    );
    let f = &r.findings[0];
    let fs = r
        .snapshot
        .processes
        .iter()
        .find(|p| p.role == Role::Forkserver)
        .expect("forkserver");
    assert_eq!(f.culprit.as_ref().map(|c| c.pid), Some(fs.pid));
    assert_eq!(
        f.culprit.as_ref().map(|c| c.function.as_str()),
        Some("<module>")
    );
    assert!(
        f.evidence[0].contains("waits to be accepted"),
        "{}",
        f.evidence[0]
    );
}

/// spawn (and forkserver before 3.14): the child's re-import blocks; the parent's join waits.
#[test]
fn reimported_main_blocks_in_a_spawn_child() {
    let r = replay("reimported_main_blocks_spawn", &["reimported_main_blocks"]);
    let c = r.findings[0].culprit.as_ref().expect("culprit");
    assert_eq!(
        r.snapshot.process(c.pid).map(|p| p.role),
        Some(Role::SpawnChild)
    );
}
