//! The process tree: root pid -> every descendant, parents before children, tolerant of exits.

use std::collections::{HashMap, HashSet, VecDeque};

/// Children of `pid` from `/proc/PID/task/*/children` (needs CONFIG_PROC_CHILDREN), or None
/// when the kernel has no such file.
fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for t in tasks.flatten() {
        let p = t.path().join("children");
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                any = true;
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => any = true,
        }
    }
    any.then_some(out)
}

/// Children of `pid` (empty when unknown).
pub fn children_of(pid: i32) -> Vec<i32> {
    children(pid).unwrap_or_default()
}

/// Every process's parent, from a scan of `/proc/*/stat` (fallback).
fn ppid_map() -> HashMap<i32, Vec<i32>> {
    let mut m: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(st) = super::procfs::read_stat(pid) {
                m.entry(st.ppid).or_default().push(pid);
            }
        }
    }
    m
}

/// Breadth-first walk from `roots`: parents before children, each pid once.
pub fn walk(roots: &[i32]) -> Vec<i32> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut queue: VecDeque<i32> = roots.iter().copied().collect();
    let mut fallback: Option<HashMap<i32, Vec<i32>>> = None;
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        order.push(pid);
        let kids = match children(pid) {
            Some(k) => k,
            None => fallback
                .get_or_insert_with(ppid_map)
                .get(&pid)
                .cloned()
                .unwrap_or_default(),
        };
        let mut kids = kids;
        kids.sort_unstable();
        queue.extend(kids);
    }
    order
}
