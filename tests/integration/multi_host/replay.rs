//! Replays: host qualification is complete (every recorded snapshot merged with a copy of
//! itself from another host gives each finding twice and the same verdict on every thread),
//! and merge input is read leniently.

use mphang::analysis::analyze;
use mphang::model::combine::{combine, Input};
use mphang::model::{HostInfo, Snapshot};
use mphang::render;

fn recorded() -> Vec<(String, Snapshot)> {
    let dir = crate::util::repo().join("fixtures/snapshots");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("snapshots dir").flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let (snap, _) = render::lenient::parse_snapshot(&text).expect("parse");
        if snap.is_merged() {
            continue;
        }
        out.push((path.display().to_string(), snap));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 20, "recorded snapshots: {}", out.len());
    out
}

fn on_host(mut s: Snapshot, name: &str, pid_ns: u64) -> Snapshot {
    s.hosts = vec![HostInfo {
        label: None,
        hostname: name.into(),
        boot_id: Some(format!("boot-{name}")),
        machine_id: None,
        pid_ns: Some(pid_ns),
        net_ns: Vec::new(),
        sources: Vec::new(),
    }];
    s
}

#[test]
fn replay_merged_twice_gives_every_verdict_twice() {
    for (file, snap) in recorded() {
        let single = analyze(&snap);
        let merged = combine(vec![
            Input {
                file: "a.json".into(),
                snapshot: on_host(snap.clone(), "replay-a", 1),
            },
            Input {
                file: "b.json".into(),
                snapshot: on_host(snap.clone(), "replay-b", 2),
            },
        ])
        .expect("combine");
        assert_eq!(merged.processes.len(), 2 * snap.processes.len(), "{file}");
        let both = analyze(&merged);
        let mut want: Vec<String> = single
            .findings
            .iter()
            .chain(single.findings.iter())
            .map(|f| format!("{} {}", f.pattern, f.threads.len()))
            .collect();
        let mut got: Vec<String> = both
            .findings
            .iter()
            .map(|f| format!("{} {}", f.pattern, f.threads.len()))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{file}");
        for v in &both.threads {
            let local = single
                .threads
                .iter()
                .find(|s| {
                    s.thread.pid.0 == v.thread.pid.local() && s.thread.tid.0 == v.thread.tid.local()
                })
                .unwrap_or_else(|| panic!("{file}: {:?} not in the single analysis", v.thread));
            assert_eq!(v.progress, local.progress, "{file}: {:?}", v.thread);
            assert_eq!(
                v.providers.len(),
                local.providers.len(),
                "{file}: {:?}",
                v.thread
            );
            assert!(
                v.providers
                    .iter()
                    .all(|p| p.pid.host() == v.thread.pid.host()),
                "{file}: a provider on another host"
            );
        }
        // The merged report round-trips through JSON with host-qualified ids.
        let report = render::Report::analyze(merged);
        let text = serde_json::to_string(&report).expect("json");
        let back: render::Report = serde_json::from_str(&text).expect("read back");
        assert_eq!(back, report, "{file}");
    }
}

#[test]
fn same_host_reports_share_ids_and_keep_each_process_once() {
    let (_, snap) = recorded().remove(0);
    let merged = combine(vec![
        Input {
            file: "x.json".into(),
            snapshot: on_host(snap.clone(), "replay-same", 7),
        },
        Input {
            file: "y.json".into(),
            snapshot: on_host(snap.clone(), "replay-same", 7),
        },
    ])
    .expect("combine");
    assert_eq!(merged.hosts.len(), 1);
    assert_eq!(merged.hosts[0].sources.len(), 2);
    assert_eq!(merged.processes.len(), snap.processes.len());
}

#[test]
fn merged_reports_are_refused_as_input() {
    let (_, snap) = recorded().remove(0);
    let merged = combine(vec![Input {
        file: "x.json".into(),
        snapshot: on_host(snap, "replay-once", 9),
    }])
    .expect("combine");
    let again = combine(vec![Input {
        file: "m.json".into(),
        snapshot: merged,
    }]);
    assert!(again.is_err());
}

/// The per-host snapshots recorded from the live scenarios (fixtures/snapshots/multi_host/).
fn scenario(name: &str) -> Vec<std::path::PathBuf> {
    let dir = crate::util::repo()
        .join("fixtures/snapshots/multi_host")
        .join(name);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenario dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn merged(files: &[std::path::PathBuf]) -> render::Report {
    let inputs = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            Input {
                file: f.display().to_string(),
                snapshot: render::lenient::parse_snapshot(&text).expect("parse").0,
            }
        })
        .collect();
    render::Report::analyze(combine(inputs).expect("combine"))
}

fn patterns(r: &render::Report) -> Vec<&str> {
    r.findings.iter().map(|f| f.pattern.as_str()).collect()
}

#[test]
fn replay_multi_host_scenarios() {
    let cycle = merged(&scenario("recv_cycle"));
    assert_eq!(patterns(&cycle), ["ipc_cycle"]);
    let chain: Vec<String> = cycle.findings[0]
        .chain
        .iter()
        .map(|l| l.thread.pid.to_string())
        .collect();
    assert_eq!(chain, ["node-a/3", "node-b/3"]);
    let alone = merged(&scenario("recv_cycle")[..1]);
    assert_eq!(patterns(&alone), Vec::<&str>::new());
    assert_eq!(alone.unknown.len(), 1);

    let store = merged(&scenario("store_key"));
    assert_eq!(patterns(&store), ["store_key_never_set"]);
    let f = &store.findings[0];
    assert_eq!(f.chain[0].thread.pid.to_string(), "node-b/3");
    assert!(f
        .culprit
        .as_ref()
        .is_some_and(|c| c.function == "handshake"));
    let rc = store.roll_call.as_ref().expect("roll call");
    let sentence = mphang::analysis::rollcall::sentence(rc);
    assert!(
        sentence.starts_with("2 of 3 ranks wait together at store_key.py:")
            && sentence.contains(" in wait_for_peers; rank 1 (host node-b) is elsewhere, at "),
        "{sentence}"
    );

    let dead = merged(&scenario("dead_peer"));
    assert_eq!(patterns(&dead), ["tcp_peer_closed"]);
    assert!(dead.findings[0].evidence[1].contains("CLOSE-WAIT (the peer closed it)"));
    assert!(
        dead.findings[0].evidence[1].contains("10.77.0.2 is host node-b, where node-b/4 exited")
    );

    let slow = merged(&scenario("slow_server"));
    assert_eq!(patterns(&slow), Vec::<&str>::new());
}

#[test]
fn merge_reads_reports_of_other_versions() {
    let files = scenario("recv_cycle");
    let dir = crate::util::tempdir("mh-versions");
    // A "newer" report: unknown fields at several levels and an unknown fd kind.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("json");
    v["mphang_version"] = "9.0.0".into();
    v["new_top_level"] = serde_json::json!({"x": 1});
    v["processes"][0]["cgroup_v3"] = "x".into();
    v["processes"][0]["fds"][0]["kind"] = serde_json::json!({"kind": "io_uring", "ring": 3});
    let newer = dir.join("node-a.json");
    std::fs::write(&newer, v.to_string()).expect("write");
    // An "older" report: no host identity, no TCP details, no ranks.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).expect("read")).expect("json");
    old["mphang_version"] = "0.0.9".into();
    old.as_object_mut().expect("object").remove("hosts");
    let older = dir.join("old-node.json");
    std::fs::write(&older, old.to_string()).expect("write");
    let out = crate::util::bin()
        .args(["merge", "--json"])
        .arg(&newer)
        .arg(&older)
        .output()
        .expect("merge");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("io_uring"), "{stderr}");
    let r: render::Report = serde_json::from_slice(&out.stdout).expect("report");
    let versions: Vec<&str> = r
        .snapshot
        .hosts
        .iter()
        .flat_map(|h| h.sources.iter().map(|s| s.mphang_version.as_str()))
        .collect();
    assert_eq!(versions, ["9.0.0", "0.0.9"]);
    // The host without identity is named after its file; the cycle is still found (the old
    // report still has its TCP endpoints here; only the host facts are gone).
    assert_eq!(r.snapshot.hosts[1].name(), "old-node");
    assert_eq!(
        patterns(&r),
        ["ipc_cycle"],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
