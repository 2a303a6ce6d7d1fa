//! Large `--json` reports without quadratic or repeated parts. A process whose 1,000 threads
//! wait on one lock gives each thread every other thread as a provider (1,000,000 entries,
//! 81 MB), and 1,000 identical stacks twice (merged and native). Reports of more than
//! [`AUTO_THREADS`] threads are therefore written with three shorthands (docs/json-format.md):
//!
//! * `threads[].providers_all_of: [pid]`: every thread of these processes (other than the
//!   verdict's own) is a provider; those threads are left out of `providers`;
//! * `threads[].stack_as: {pid, tid}`: the same merged `stack` as that earlier verdict;
//! * `snapshot.processes[].threads[].native_as: {pid, tid}`: the same `native` stack as that
//!   earlier thread.
//!
//! [`expand`] undoes them on a JSON value before it is parsed into types
//! ([`super::json::parse_report`], `report --from`).

use super::Report;
use crate::model::{Pid, ThreadRef};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// Reports with more threads than this are written compact.
pub const AUTO_THREADS: usize = 256;

fn tref(v: &Value) -> Option<(i64, i64)> {
    Some((v.get("pid")?.as_i64()?, v.get("tid")?.as_i64()?))
}

/// The report as a JSON value with the shorthands (keys in alphabetical order).
pub fn to_value(report: &Report) -> serde_json::Result<Value> {
    let threads_of: HashMap<Pid, HashSet<crate::model::Tid>> = report
        .snapshot
        .processes
        .iter()
        .map(|p| (p.pid, p.threads.iter().map(|t| t.tid).collect()))
        .collect();
    let mut seen_stacks: HashMap<String, ThreadRef> = HashMap::new();
    let mut verdicts = Vec::with_capacity(report.threads.len());
    for v in &report.threads {
        // Providers by process; a process all of whose other threads provide is summarised.
        let mut by_pid: HashMap<Pid, HashSet<crate::model::Tid>> = HashMap::new();
        for p in &v.providers {
            by_pid.entry(p.pid).or_default().insert(p.tid);
        }
        let mut all_of: Vec<Pid> = by_pid
            .iter()
            .filter(|(pid, tids)| {
                let Some(all) = threads_of.get(pid) else {
                    return false;
                };
                let mine = **pid == v.thread.pid;
                // Every thread of the process except the verdict's own, and at least two.
                tids.len() >= 2
                    && !(mine && tids.contains(&v.thread.tid))
                    && tids.iter().all(|t| all.contains(t))
                    && tids.len() == all.len() - usize::from(mine && all.contains(&v.thread.tid))
            })
            .map(|(pid, _)| *pid)
            .collect();
        all_of.sort();
        let mut reduced = v.clone();
        reduced.providers.retain(|p| !all_of.contains(&p.pid));
        let stack_key = (!v.stack.is_empty())
            .then(|| serde_json::to_string(&v.stack))
            .transpose()?;
        let same_stack = stack_key.as_ref().and_then(|k| seen_stacks.get(k).copied());
        if same_stack.is_some() {
            reduced.stack.clear();
        } else if let Some(k) = stack_key {
            seen_stacks.insert(k, v.thread);
        }
        let mut val = serde_json::to_value(&reduced)?;
        if let Value::Object(o) = &mut val {
            if !all_of.is_empty() {
                o.insert("providers_all_of".into(), json!(all_of));
            }
            if let Some(t) = same_stack {
                o.insert("stack_as".into(), json!({"pid": t.pid, "tid": t.tid}));
            }
        }
        verdicts.push(val);
    }
    let mut snapshot = serde_json::to_value(&report.snapshot)?;
    compact_native(&mut snapshot);
    let mut o = Map::new();
    o.insert("schema".into(), json!(report.schema));
    o.insert("hang".into(), json!(report.hang));
    o.insert("findings".into(), serde_json::to_value(&report.findings)?);
    o.insert("threads".into(), Value::Array(verdicts));
    o.insert("snapshot".into(), snapshot);
    Ok(Value::Object(o))
}

/// Replaces each thread's `native` that equals an earlier thread's with `native_as`.
fn compact_native(snapshot: &mut Value) {
    let mut seen: HashMap<String, (Value, Value)> = HashMap::new();
    let Some(procs) = snapshot.get_mut("processes").and_then(Value::as_array_mut) else {
        return;
    };
    for p in procs {
        let pid = p.get("pid").cloned().unwrap_or(Value::Null);
        let Some(threads) = p.get_mut("threads").and_then(Value::as_array_mut) else {
            continue;
        };
        for t in threads {
            let Some(o) = t.as_object_mut() else { continue };
            let Some(native) = o.get("native") else {
                continue;
            };
            let key = native.to_string();
            let tid = o.get("tid").cloned().unwrap_or(Value::Null);
            match seen.get(&key) {
                Some((p0, t0)) => {
                    let r = json!({"pid": p0, "tid": t0});
                    o.remove("native");
                    o.insert("native_as".into(), r);
                }
                None => {
                    seen.insert(key, (pid.clone(), tid));
                }
            }
        }
    }
}

/// Undoes the shorthands of [`to_value`] in a report or snapshot JSON value.
pub fn expand(v: &mut Value) {
    let snapshot_is_root = v.get("processes").is_some();
    {
        let snap = if snapshot_is_root {
            Some(&mut *v)
        } else {
            v.get_mut("snapshot")
        };
        if let Some(s) = snap {
            expand_native(s);
        }
    }
    if snapshot_is_root {
        return;
    }
    let threads_of: HashMap<i64, Vec<i64>> = v
        .pointer("/snapshot/processes")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let pid = p.get("pid")?.as_i64()?;
                    let tids = p
                        .get("threads")?
                        .as_array()?
                        .iter()
                        .filter_map(|t| t.get("tid")?.as_i64())
                        .collect();
                    Some((pid, tids))
                })
                .collect()
        })
        .unwrap_or_default();
    let Some(verdicts) = v.get_mut("threads").and_then(Value::as_array_mut) else {
        return;
    };
    let wanted: HashSet<(i64, i64)> = verdicts
        .iter()
        .filter_map(|x| tref(x.get("stack_as")?))
        .collect();
    let stacks: HashMap<(i64, i64), Value> = verdicts
        .iter()
        .filter_map(|x| Some((tref(x.get("thread")?)?, x)))
        .filter(|(k, _)| wanted.contains(k))
        .filter_map(|(k, x)| Some((k, x.get("stack")?.clone())))
        .collect();
    for x in verdicts.iter_mut() {
        let me = x.get("thread").and_then(tref);
        let Some(o) = x.as_object_mut() else { continue };
        if let Some(r) = o.remove("stack_as") {
            if let Some(s) = tref(&r).and_then(|k| stacks.get(&k)) {
                o.insert("stack".into(), s.clone());
            }
        }
        if let Some(Value::Array(pids)) = o.remove("providers_all_of") {
            let mut add = Vec::new();
            for pid in pids.iter().filter_map(Value::as_i64) {
                for &tid in threads_of.get(&pid).into_iter().flatten() {
                    if Some((pid, tid)) != me {
                        add.push(json!({"pid": pid, "tid": tid}));
                    }
                }
            }
            if let Some(Value::Array(p)) = o.get_mut("providers") {
                p.extend(add);
            }
        }
    }
}

fn expand_native(snapshot: &mut Value) {
    let Some(procs) = snapshot.get_mut("processes").and_then(Value::as_array_mut) else {
        return;
    };
    // Only the stacks something refers to are copied.
    let wanted: HashSet<(i64, i64)> = procs
        .iter()
        .flat_map(|p| {
            p.get("threads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|t| tref(t.get("native_as")?))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let natives: HashMap<(i64, i64), Value> = procs
        .iter()
        .flat_map(|p| {
            let pid = p.get("pid").and_then(Value::as_i64);
            p.get("threads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(move |t| Some(((pid?, t.get("tid")?.as_i64()?), t)))
        })
        .filter(|(k, _)| wanted.contains(k))
        .filter_map(|(k, t)| Some((k, t.get("native")?.clone())))
        .collect();
    for p in procs.iter_mut() {
        let Some(threads) = p.get_mut("threads").and_then(Value::as_array_mut) else {
            continue;
        };
        for t in threads {
            let Some(o) = t.as_object_mut() else { continue };
            if let Some(r) = o.remove("native_as") {
                if let Some(n) = tref(&r).and_then(|k| natives.get(&k)) {
                    o.insert("native".into(), n.clone());
                }
            }
        }
    }
}
