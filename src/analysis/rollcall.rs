//! Roll call for symmetric jobs (STAT's equivalence classes, underworld3's hang report): the
//! ranks grouped by where their main thread is, so that "3 of 4 ranks wait together at
//! train.py:88; rank 1 (host b) is elsewhere, at data.py:40" points at the outlier, the likely
//! culprit, while the majority shows where the collective is.
//!
//! Ranks are processes whose environment names a rank (`RANK`, `SLURM_PROCID`, ...; a forked
//! child that inherited its parent's rank is not another rank); without those, the roots of the
//! reports of a merge that run the same program.

use super::graph::Graph;
use super::index::Index;
use super::types::{CodeLine, RankRef, RollCall, RollGroup};
use crate::model::{Pid, ProcessSnap, ThreadRef, Tid};

/// The roll call, when at least two ranks are found. Ranks are grouped by the user frames of
/// their main thread (the whole user stack, so that two ranks in one helper called from
/// different places differ); each group is shown at its innermost frame that not every group
/// shares ("wait_for_peers", not the shared `recv_line` helper below it).
pub fn roll_call(idx: &Index<'_>, g: &Graph) -> Option<RollCall> {
    let ranks = ranks(idx);
    if ranks.len() < 2 {
        return None;
    }
    // (stack keys, frames) per group, members in rank order.
    let mut groups: Vec<(Vec<String>, Vec<Place>, Vec<RankRef>)> = Vec::new();
    for p in &ranks {
        let stack = position(g, p);
        let keys: Vec<String> = stack.iter().map(|s| s.at.clone()).collect();
        let member = RankRef {
            pid: p.pid,
            rank: p.rank,
            host: host_name(idx, p.pid),
            stuck: p.threads.iter().any(|t| {
                g.stuck(ThreadRef {
                    pid: p.pid,
                    tid: t.tid,
                })
            }),
        };
        match groups.iter_mut().find(|(k, _, _)| *k == keys) {
            Some((_, _, members)) => members.push(member),
            None => groups.push((keys, stack, vec![member])),
        }
    }
    let shared = |key: &String| groups.iter().all(|(k, _, _)| k.contains(key));
    let mut out: Vec<RollGroup> = groups
        .iter()
        .map(|(_, stack, members)| {
            let place = stack
                .iter()
                .find(|s| !shared(&s.at))
                .or(stack.first())
                .cloned()
                .unwrap_or(Place {
                    at: "unknown".into(),
                    line: None,
                });
            RollGroup {
                at: place.at,
                line: place.line,
                members: members.clone(),
            }
        })
        .collect();
    out.sort_by_key(|gr| {
        (
            std::cmp::Reverse(gr.members.len()),
            gr.members.iter().filter_map(|m| m.rank).min(),
        )
    });
    Some(RollCall {
        ranks: ranks.len(),
        groups: out,
    })
}

/// One frame of a rank's position.
#[derive(Clone)]
struct Place {
    at: String,
    line: Option<CodeLine>,
}

/// The host a pid is on, for words (empty for a one-host snapshot without host info).
fn host_name(idx: &Index<'_>, pid: Pid) -> String {
    idx.snap
        .host_of(pid)
        .map(|h| h.name().to_string())
        .unwrap_or_default()
}

fn ranks<'a>(idx: &Index<'a>) -> Vec<&'a ProcessSnap> {
    let snap = idx.snap;
    let mut by_env: Vec<&ProcessSnap> = snap
        .processes
        .iter()
        .filter(|p| p.rank.is_some() && p.state != 'Z')
        .filter(|p| {
            idx.process(p.ppid)
                .is_none_or(|parent| parent.rank != p.rank)
        })
        .collect();
    if by_env.len() >= 2 {
        by_env.sort_by_key(|p| (p.rank, p.pid));
        return by_env;
    }
    // The roots of a merge's reports, when they run the same program.
    let roots: Vec<&ProcessSnap> = snap
        .hosts
        .iter()
        .flat_map(|h| h.sources.iter())
        .filter_map(|s| idx.process(s.root))
        .collect();
    match roots.first() {
        Some(first) if roots.iter().all(|p| program(p) == program(first)) => roots,
        _ => Vec::new(),
    }
}

/// What a process runs: the interpreter's script or module argument.
fn program(p: &ProcessSnap) -> Option<&str> {
    let args = p.cmdline.get(1..)?;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-m" {
            return it.next().map(String::as_str);
        }
        if !a.starts_with('-') {
            return Some(a.rsplit('/').next().unwrap_or(a));
        }
    }
    None
}

/// Where the main thread is, innermost first: its user frames, else its innermost frame, else
/// its wait.
fn position(g: &Graph, p: &ProcessSnap) -> Vec<Place> {
    let main = ThreadRef {
        pid: p.pid,
        tid: Tid(p.pid.0),
    };
    let py = p.main_thread().and_then(|t| t.py.as_ref());
    let at = |f: &crate::model::PyFrame| format!("{} in {}", f.short_location(), f.function);
    if let Some(py) = py {
        let user: Vec<Place> = py
            .own_frames()
            .iter()
            .filter(|f| f.is_user_code())
            .map(|f| Place {
                at: at(f),
                line: Some(CodeLine {
                    pid: main.pid,
                    tid: main.tid,
                    file: f.file.clone(),
                    line: f.line,
                    function: f.function.clone(),
                }),
            })
            .collect();
        if !user.is_empty() {
            return user;
        }
        if let Some(f) = py.frames.first() {
            return vec![Place {
                at: at(f),
                line: None,
            }];
        }
    }
    let what = g
        .blocked(main)
        .map(super::describe::short)
        .unwrap_or_else(|| "unknown".into());
    vec![Place {
        at: what,
        line: None,
    }]
}

/// "3 of 4 ranks wait together at train.py:88 in step; rank 1 (host b) is elsewhere, at
/// data.py:40 in load": the sentence the text report prints. Without a majority, every place
/// with its ranks.
pub fn sentence(rc: &RollCall) -> String {
    let who = |m: &RankRef| -> String {
        let name = match m.rank {
            Some(r) => format!("rank {r}"),
            None => format!("pid {}", m.pid),
        };
        if m.host.is_empty() {
            name
        } else {
            format!("{name} (host {})", m.host)
        }
    };
    let names =
        |g: &RollGroup| -> String { g.members.iter().map(who).collect::<Vec<_>>().join(", ") };
    let Some((first, rest)) = rc.groups.split_first() else {
        return String::new();
    };
    let n = first.members.len();
    let verb = if first.members.iter().all(|m| m.stuck) {
        "wait together"
    } else {
        "are"
    };
    if rest.is_empty() {
        return format!("{n} of {} ranks {verb} at {}", rc.ranks, first.at);
    }
    if n < 2 || rest.iter().any(|g| g.members.len() >= n) {
        let places: Vec<String> = rc
            .groups
            .iter()
            .map(|g| format!("{} at {}", names(g), g.at))
            .collect();
        return format!(
            "the {} ranks are in {} places: {}",
            rc.ranks,
            rc.groups.len(),
            places.join("; ")
        );
    }
    let mut s = format!("{n} of {} ranks {verb} at {}", rc.ranks, first.at);
    for g in rest {
        let is = if g.members.len() == 1 { "is" } else { "are" };
        s.push_str(&format!("; {} {is} elsewhere, at {}", names(g), g.at));
    }
    s
}
