//! Analysis: from a [`Snapshot`] to per-thread verdicts and named findings. Pure, no IO.
//!
//! 1. [`blocked`]: what each thread waits for (pipe, socket, semaphore, mutex, child, ...).
//! 2. [`graph`]: who could release it (providers), which threads can progress by themselves
//!    (seeds, including movement seen between looks), and the least fixpoint: what is left can
//!    never progress.
//! 3. [`patterns`]: named explanations of the stuck set, with chain, culprit line and fix.

pub mod blocked;
pub mod describe;
pub mod graph;
pub mod index;
pub mod past;
mod pattern_id;
pub mod patterns;
pub mod progress;
pub mod providers;
pub mod rollcall;
pub mod tcp;
mod types;

pub use pattern_id::PatternId;
pub use types::*;

use crate::model::Snapshot;

/// Everything concluded from one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub threads: Vec<ThreadVerdict>,
    pub findings: Vec<Finding>,
    /// Where the ranks of a symmetric job are, when there are ranks to call.
    pub roll_call: Option<RollCall>,
    /// Waits whose other side is on a host that sent no report (merged snapshots).
    pub unknown: Vec<UnknownEdge>,
}

/// Analyses a snapshot.
pub fn analyze(snap: &Snapshot) -> Analysis {
    let idx = index::Index::new(snap);
    let g = graph::build(&idx);
    let threads = g
        .order
        .iter()
        .map(|r| ThreadVerdict {
            thread: *r,
            blocked_on: g.blocked(*r).cloned().unwrap_or(BlockedOn::Unknown {
                what: "not resolved".into(),
            }),
            progress: g.progress.get(r).copied().unwrap_or(Progress::CanProgress),
            because: g.because.get(r).cloned(),
            providers: g.providers(*r).to_vec(),
            line: describe::line(&idx, &g, *r),
            stack: merged_stack(&idx, *r),
            housekeeping: g.housekeeping.contains(r),
            providers_all_of: Vec::new(),
            stack_as: None,
        })
        .collect();
    let mut findings = patterns::run(&idx, &g);
    past::link(snap, &mut findings);
    let roll_call = rollcall::roll_call(&idx, &g);
    let unknown = tcp::unknown_edges(&idx, &g);
    Analysis {
        threads,
        findings,
        roll_call,
        unknown,
    }
}

/// Timed waiters not seen to wake yet on which the verdict depends (excluding them as
/// periodic would leave more threads stuck), with the time left in their wait when known.
/// Looking again until they wake (or their wait is long) settles the verdict.
pub fn undecided(snap: &Snapshot) -> Vec<(crate::model::ThreadRef, Option<u64>)> {
    let idx = index::Index::new(snap);
    graph::build(&idx).undecided
}

/// The merged stack of a thread that has native frames (empty otherwise).
fn merged_stack(
    idx: &index::Index<'_>,
    r: crate::model::ThreadRef,
) -> Vec<crate::model::merge::MergedFrame> {
    let Some((_, t)) = idx.thread(r) else {
        return Vec::new();
    };
    match &t.native {
        Some(native) if !native.is_empty() => {
            let py = t.py.as_ref().map(|p| p.frames.as_slice()).unwrap_or(&[]);
            let entries: Vec<bool> = py.iter().map(|f| f.entry).collect();
            crate::model::merge::merge_with_entries(py, &entries, native)
        }
        _ => Vec::new(),
    }
}
