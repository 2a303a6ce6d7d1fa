//! Live multi-host tests: ranks in network-namespace "hosts" talk over TCP; `mphang report
//! --json` runs inside each host, `mphang merge` puts the reports together. Each test asserts
//! the exact finding and its host-qualified chain, and the same scenario with one host's report
//! missing gives "unknown" instead of a verdict.

use super::net::{self, Cluster};
use crate::util::{marked_lines, pythons};
use mphang::model::{host, Pid};
use mphang::render::Report;
use std::path::{Path, PathBuf};

/// One Python is enough here (the behaviour is the kernel's sockets); the newest found.
fn python() -> Option<PathBuf> {
    if let Some(why) = net::unavailable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "multi-host tests cannot run under CI: {why}"
        );
        eprintln!("skipping: {why}");
        return None;
    }
    pythons().pop().map(|p| p.path)
}

fn script(name: &str) -> PathBuf {
    crate::util::repo()
        .join("fixtures/multi_host")
        .join(format!("{name}.py"))
}

/// `mphang merge --json FILES` -> (exit code, report), plus the text rendering for messages.
fn merge(files: &[PathBuf]) -> (i32, Report, String) {
    let out = crate::util::bin()
        .arg("merge")
        .arg("--json")
        .args(files)
        .output()
        .expect("run mphang merge");
    let code = out.status.code().unwrap_or(-1);
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "merge output is not a report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let text = crate::util::bin()
        .args(["merge", "--color", "never"])
        .args(files)
        .output()
        .expect("run mphang merge");
    (
        code,
        report,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

/// The host-qualified pid of `rank`'s process, as the merge names it.
fn qpid(c: &Cluster, rank: usize) -> Pid {
    let code = host::code(&net::hostname(rank)).expect("host code");
    Pid(c.rank(rank).ready.pid("rank").expect("rank pid")).qualified(code)
}

fn culprit_line(name: &str) -> i32 {
    marked_lines(&format!("multi_host/{name}"), "CULPRIT")[0]
}

fn start_all(c: &mut Cluster, py: &Path, name: &str, world: usize) {
    c.start_job(py, &script(name), world);
}

#[test]
fn cross_host_recv_cycle_and_missing_host() {
    let Some(py) = python() else { return };
    let mut c = Cluster::new(2);
    start_all(&mut c, &py, "recv_cycle", 2);
    let files = c.reports();
    let (code, r, text) = merge(&files);
    let patterns: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(patterns, ["ipc_cycle"], "{text}");
    assert_eq!(code, 1);
    let f = &r.findings[0];
    let chain: Vec<Pid> = f.chain.iter().map(|l| l.thread.pid).collect();
    assert_eq!(chain, [qpid(&c, 0), qpid(&c, 1)], "{text}");
    assert!(
        f.chain[0]
            .waits_on
            .starts_with("recv tcp 10.77.0.1:29500 -> 10.77.0.2:"),
        "{text}"
    );
    assert!(
        f.chain[1].waits_on.starts_with("recv tcp 10.77.0.2:")
            && f.chain[1].waits_on.ends_with(" -> 10.77.0.1:29500"),
        "{text}"
    );
    let culprit = f.culprit.as_ref().expect("culprit");
    assert!(culprit.file.ends_with("multi_host/recv_cycle.py"), "{text}");
    assert_eq!(culprit.line, culprit_line("recv_cycle"), "{text}");
    assert_eq!(culprit.pid, qpid(&c, 0));
    assert!(text.contains(&format!("{}/", net::hostname(1))), "{text}");
    assert_eq!(r.snapshot.hosts.len(), 2);

    // Without node-b's report the edge leads to a host that sent no report: unknown.
    let (code, r, text) = merge(&files[..1]);
    assert!(r.findings.is_empty(), "{text}");
    assert_eq!(code, 0);
    assert_eq!(r.unknown.len(), 1, "{text}");
    assert_eq!(r.unknown[0].thread.pid, qpid(&c, 0));
    assert_eq!(r.unknown[0].remote.ip().to_string(), net::addr(1));
    assert!(text.contains("UNKNOWN:"), "{text}");
}

#[test]
fn store_key_never_set_names_the_rank_elsewhere() {
    let Some(py) = python() else { return };
    let mut c = Cluster::new(3);
    start_all(&mut c, &py, "store_key", 3);
    let files = c.reports();
    let (code, r, text) = merge(&files);
    let patterns: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(patterns, ["store_key_never_set"], "{text}");
    assert_eq!(code, 1);
    let f = &r.findings[0];
    let culprit = f.culprit.as_ref().expect("culprit");
    assert_eq!(culprit.pid, qpid(&c, 1), "{text}");
    assert_eq!(culprit.line, culprit_line("store_key"), "{text}");
    // The chain: the rank elsewhere, then the store's server thread on node-a.
    let store_tid = c.rank(0).ready.pid("store_tid").expect("store tid");
    let code_a = host::code(&net::hostname(0)).expect("code");
    assert_eq!(f.chain.len(), 2, "{text}");
    assert_eq!(f.chain[0].thread.pid, qpid(&c, 1), "{text}");
    assert_eq!(f.chain[1].thread.pid, qpid(&c, 0), "{text}");
    assert_eq!(
        f.chain[1].thread.tid,
        mphang::model::Tid(store_tid).qualified(code_a),
        "{text}"
    );
    for rank in 0..3 {
        assert!(f.pids.contains(&qpid(&c, rank)), "rank {rank}: {text}");
    }
    let rc = r.roll_call.as_ref().expect("roll call");
    let sentence = mphang::analysis::rollcall::sentence(rc);
    let wait_line = marked_lines("multi_host/store_key", "OTHER-SIDE")[0];
    assert_eq!(
        sentence,
        format!(
            "2 of 3 ranks wait together at store_key.py:{wait_line} in wait_for_peers; \
             rank 1 (host node-b) is elsewhere, at store_key.py:{} in handshake",
            culprit_line("store_key")
        ),
        "{text}"
    );
    assert!(text.contains(&sentence), "{text}");

    // Without node-b: the store waits on a host that sent no report; no verdict.
    let (code, r, text) = merge(&[files[0].clone(), files[2].clone()]);
    assert!(r.findings.is_empty(), "{text}");
    assert_eq!(code, 0);
    assert!(
        r.unknown
            .iter()
            .any(|u| u.remote.ip().to_string() == net::addr(1)),
        "{text}"
    );
}

#[test]
fn dead_peer_is_named_across_hosts() {
    let Some(py) = python() else { return };
    let mut c = Cluster::new(2);
    // The agent (rank 1) listens first; rank 0 retries its connect until then.
    start_all(&mut c, &py, "dead_peer", 2);
    let files = c.reports();
    let (code, r, text) = merge(&files);
    let patterns: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(patterns, ["tcp_peer_closed"], "{text}");
    assert_eq!(code, 1);
    let f = &r.findings[0];
    assert_eq!(f.chain.len(), 1);
    assert_eq!(f.chain[0].thread.pid, qpid(&c, 0), "{text}");
    let culprit = f.culprit.as_ref().expect("culprit");
    assert_eq!(culprit.line, culprit_line("dead_peer"), "{text}");
    let ev = f.evidence.join("\n");
    assert!(ev.contains("-> 10.77.0.2:29500 CLOSE-WAIT"), "{ev}");
    let server = c.rank(1).ready.pid("server").expect("server pid");
    let code_b = host::code(&net::hostname(1)).expect("code");
    assert!(
        ev.contains(&format!("{} exited", Pid(server).qualified(code_b))),
        "{ev}"
    );

    // Alone, node-a's report still proves the peer closed the connection (CLOSE-WAIT is
    // node-a's own fact), and says node-b is unknown.
    let (_, r, text) = merge(&files[..1]);
    let patterns: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
    assert_eq!(patterns, ["tcp_peer_closed"], "{text}");
    assert!(
        r.findings[0]
            .evidence
            .join("\n")
            .contains("on a host that sent no report"),
        "{text}"
    );
}

#[test]
fn slow_server_look_alike_stays_quiet() {
    let Some(py) = python() else { return };
    let mut c = Cluster::new(2);
    start_all(&mut c, &py, "slow_server", 2);
    // Reports taken one after the other: the server may answer in between.
    let files = vec![c.report(0), c.report(1)];
    let (code, r, text) = merge(&files);
    assert!(r.findings.is_empty(), "{text}");
    assert!(!r.hang);
    assert_eq!(code, 0, "{text}");
}
