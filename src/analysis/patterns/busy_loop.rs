//! `busy_loop`: a thread spins at full CPU without blocking and without progress (the same
//! innermost function in every look, the line moving only within it), e.g. polling a flag that fork made private. A warning, not a
//! proven hang. Fixture: busy_loop.py.

use super::{Ctx, Draft};
use crate::analysis::types::{BlockedOn, Finding, Severity};
use crate::analysis::PatternId;
use crate::model::Role;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let hz = ctx.idx.snap.clock_ticks.max(1);
    for p in &ctx.idx.snap.processes {
        if p.role == Role::PoolWorker {
            continue; // a busy worker runs a task; long tasks look the same
        }
        for t in &p.threads {
            let r = crate::model::ThreadRef {
                pid: p.pid,
                tid: t.tid,
            };
            if !matches!(ctx.blocked(r), Some(BlockedOn::Running)) || t.later.is_empty() {
                continue;
            }
            let Some(py) = &t.py else { continue };
            let Some(top) = py.frames.first() else {
                continue;
            };
            if !top.is_user_code() {
                continue;
            }
            let here = top.top_key();
            let last = t.later.last();
            // Same function of the same file in every look; the line may move within a loop.
            let spinning = t.later.iter().all(|l| {
                l.alive && l.py_top.as_deref().map(without_line) == Some(without_line(&here))
            });
            let Some(last) = last else { continue };
            let used = last.cpu_ticks.saturating_sub(t.cpu_ticks);
            let wall_ticks = last.after_ms * hz / 1000;
            // Runnable the whole time (on a CPU or waiting for one), from the scheduler's
            // accounting: a spinning thread on a loaded machine gets a small share of CPU but
            // never sleeps. Without schedstat, 40% of a CPU between the looks.
            let busy = match (t.sched, last.sched) {
                (Some(a), Some(b)) if b.at_ns > a.at_ns => {
                    let wall = b.at_ns - a.at_ns;
                    let run = b.run_ns.saturating_sub(a.run_ns);
                    let runnable = run + b.wait_ns.saturating_sub(a.wait_ns);
                    run > 0 && runnable * 10 >= wall * 8
                }
                _ => wall_ticks > 0 && used * 10 >= wall_ticks * 4,
            };
            if !spinning || !busy {
                continue;
            }
            // Name the loop's head: the lowest line seen in the spinning function.
            let culprit = ctx.code_line(r).map(|mut c| {
                let seen = t.later.iter().filter_map(|l| {
                    l.py_top
                        .as_deref()?
                        .split_once(' ')?
                        .0
                        .rsplit_once(':')?
                        .1
                        .parse::<i32>()
                        .ok()
                });
                c.line = seen.fold(c.line, i32::min);
                c
            });
            out.push(
                Draft {
                    pattern: PatternId::BusyLoop,
                    summary: format!(
                        "Thread {} of {} spins at full CPU at {} without blocking and without moving on.",
                        t.display_name(),
                        p.pid,
                        top.short_location()
                    ),
                    chain: vec![ctx.link_with(r, format!("running at {here}"))],
                    threads: vec![r],
                    culprit,
                    fix: "Don't poll a flag in a loop: a module global set in the parent after fork is not seen by the child. Share state with multiprocessing.Event or Value and wait on it (event.wait()).",
                    evidence: std::iter::once({
                        // The first look read the thread's CPU time at its start: the two reads
                        // are the first look's duration plus `after_ms` apart (measured).
                        let measured = ctx.idx.snap.collect_ms + last.after_ms;
                        format!(
                            "{used} CPU ticks in the {measured} ms measured between two reads of \
                             its CPU time ({}% of one CPU); innermost frame {here} in every look",
                            (used * 1000 / hz * 100 / measured.max(1)).min(100)
                        )
                    })
                    .chain(runnable_share(t.sched, last.sched))
                    .collect(),
                }
                .finish(Severity::Warning),
            );
        }
    }
    out
}

/// `busy_loop.py:30 spin` -> (`busy_loop.py`, `spin`).
fn without_line(key: &str) -> (&str, &str) {
    let (loc, func) = key.split_once(' ').unwrap_or((key, ""));
    (loc.rsplit_once(':').map(|(f, _)| f).unwrap_or(loc), func)
}

/// `runnable 97% of the time between the looks (on a CPU 38%)`, from schedstat.
fn runnable_share(
    a: Option<crate::model::SchedStat>,
    b: Option<crate::model::SchedStat>,
) -> Option<String> {
    let (a, b) = (a?, b?);
    let wall = b.at_ns.checked_sub(a.at_ns).filter(|w| *w > 0)?;
    let run = b.run_ns.saturating_sub(a.run_ns);
    let wait = b.wait_ns.saturating_sub(a.wait_ns);
    Some(format!(
        "runnable {}% of the time between the looks (on a CPU {}%): it never sleeps",
        ((run + wait) * 100 / wall).min(100),
        (run * 100 / wall).min(100)
    ))
}
