//! Combining per-host snapshots into one (`mphang merge`): group the inputs by host (same boot
//! and PID namespace = same pids), label each host by its hostname (made unique), qualify every
//! id with the host (see [`super::qualify`]), and concatenate. The result is an ordinary
//! snapshot, analysed by the same engine as one host's.

use super::host::{HostInfo, Source};
use super::{Snapshot, SCHEMA};
use std::collections::{BTreeMap, HashSet};

/// One input: where it came from and what it holds.
pub struct Input {
    pub file: String,
    pub snapshot: Snapshot,
}

/// Inputs from one host: its key (boot id, PID namespace), identity, and snapshots.
type Group = (Option<(String, u64)>, HostInfo, Vec<Input>);

/// Combines the snapshots of several hosts. Two inputs from the same host (same boot id and PID
/// namespace) share that host's ids, and a process in both is kept once (from the first).
pub fn combine(inputs: Vec<Input>) -> Result<Snapshot, String> {
    if inputs.is_empty() {
        return Err("nothing to merge".into());
    }
    // Group by host key, in input order.
    let mut groups: Vec<Group> = Vec::new();
    for input in inputs {
        if input.snapshot.is_merged() {
            return Err(format!(
                "{} is already a merged report; merge the per-host reports instead",
                input.file
            ));
        }
        let host = input
            .snapshot
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| HostInfo {
                label: None,
                // An older report without host identity: a host of its own, named by its file.
                hostname: file_stem(&input.file),
                boot_id: None,
                machine_id: None,
                pid_ns: None,
                net_ns: Vec::new(),
                sources: Vec::new(),
            });
        let key = host.key();
        match groups
            .iter_mut()
            .find(|(k, _, _)| key.is_some() && *k == key)
        {
            Some((_, h, members)) => {
                for ns in host.net_ns {
                    if !h.net_ns.iter().any(|n| n.inode == ns.inode) {
                        h.net_ns.push(ns);
                    }
                }
                members.push(input);
            }
            None => groups.push((key, host, vec![input])),
        }
    }
    let mut used: HashSet<String> = HashSet::new();
    let mut out: Option<Snapshot> = None;
    let mut hosts = Vec::new();
    let (mut seen_pids, mut seen_pipes, mut seen_gone) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    let mut sems: BTreeMap<super::SemKey, super::SemaphoreSnap> = BTreeMap::new();
    for (_, mut host, members) in groups {
        let label = unique_label(&host.hostname, &mut used);
        let code = super::host::code(&label).ok_or_else(|| {
            format!(
                "more than {} hosts: merge them in parts",
                super::ids::MAX_HOSTS
            )
        })?;
        host.label = Some(label.clone());
        for input in members {
            let mut s = input.snapshot;
            s.hosts.clear();
            super::qualify::qualify(&mut s, code, &label);
            host.sources.push(Source {
                file: input.file,
                mphang_version: s.mphang_version.clone(),
                root: s.root,
                taken_at_ms: s.taken_at_ms,
            });
            let acc = out.get_or_insert_with(|| Snapshot {
                schema: SCHEMA.to_string(),
                mphang_version: env!("CARGO_PKG_VERSION").to_string(),
                taken_at_ms: s.taken_at_ms,
                root: s.root,
                clock_ticks: s.clock_ticks,
                looks: s.looks,
                interval_ms: s.interval_ms,
                collect_ms: 0,
                max_stop_us: None,
                hosts: Vec::new(),
                processes: Vec::new(),
                pipes: Vec::new(),
                semaphores: Vec::new(),
                gone: Vec::new(),
                diagnostics: Vec::new(),
                tracebacks: Vec::new(),
                gone_threads: Vec::new(),
                watched: None,
            });
            acc.taken_at_ms = acc.taken_at_ms.min(s.taken_at_ms);
            acc.looks = acc.looks.min(s.looks);
            acc.collect_ms = acc.collect_ms.max(s.collect_ms);
            acc.max_stop_us = match (acc.max_stop_us, s.max_stop_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            acc.processes
                .extend(s.processes.into_iter().filter(|p| seen_pids.insert(p.pid)));
            acc.pipes
                .extend(s.pipes.into_iter().filter(|p| seen_pipes.insert(p.inode)));
            acc.gone
                .extend(s.gone.into_iter().filter(|g| seen_gone.insert(g.pid)));
            acc.diagnostics.extend(s.diagnostics);
            for sem in s.semaphores {
                match sems.get_mut(&sem.key) {
                    Some(e) => {
                        for p in sem.mapped_by {
                            if !e.mapped_by.contains(&p) {
                                e.mapped_by.push(p);
                            }
                        }
                        if let Some(h) = sem.holders {
                            e.holders.get_or_insert_with(Vec::new).extend(h);
                        }
                    }
                    None => {
                        sems.insert(sem.key.clone(), sem);
                    }
                }
            }
        }
        hosts.push(host);
    }
    let mut snap = out.ok_or("nothing to merge")?;
    snap.semaphores = sems.into_values().collect();
    snap.hosts = hosts;
    Ok(snap)
}

/// `node-b`, or `node-b#2` when another host already has that name.
fn unique_label(hostname: &str, used: &mut HashSet<String>) -> String {
    let base: String = hostname
        .chars()
        .map(|c| {
            if c == '/' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let base = if base.is_empty() { "host".into() } else { base };
    let mut label = base.clone();
    let mut n = 1;
    while !used.insert(label.clone()) {
        n += 1;
        label = format!("{base}#{n}");
    }
    label
}

fn file_stem(file: &str) -> String {
    std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file)
        .to_string()
}
