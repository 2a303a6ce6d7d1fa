//! `pool_worker_died`: `Pool.map`/`apply`/`imap` waits for a result whose worker died (SIGKILL,
//! OOM); the Pool replaced the worker but never resubmits the task, so every worker is idle and
//! the result never comes. Fixture: pool_worker_died.py.

use super::pool_result_handler_died::{waits_for_pool, workers};
use super::{at, Ctx, Draft};
use crate::analysis::types::Finding;
use crate::analysis::PatternId;

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in ctx.open_stuck() {
        if !waits_for_pool(ctx, t) || ctx.passive(t) {
            continue;
        }
        let ws = workers(ctx, t.pid);
        if ws.is_empty() {
            continue;
        }
        let worker_threads: Vec<_> = ws.iter().flat_map(|w| ctx.idx.threads_of(*w)).collect();
        // Every worker idle (waiting for a task), none explained by something else.
        let all_idle = ws.iter().all(|w| {
            let m = ctx.main_of(*w);
            ctx.g.stuck(m) && ctx.passive(m)
        });
        if !all_idle || worker_threads.iter().any(|x| ctx.explained.contains(x)) {
            continue;
        }
        let mut evidence = vec![format!(
            "all {} workers ({}) are idle, waiting for a task; none is computing the awaited result",
            ws.len(),
            ws.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")
        )];
        let exits = ctx.idx.exited();
        evidence.extend(exits.iter().map(|(_, s)| s.clone()));
        // A worker that started later than its siblings replaced one that died.
        let starts: Vec<(crate::model::Pid, u64)> = ws
            .iter()
            .filter_map(|w| ctx.idx.process(*w).map(|p| (*w, p.start_ticks)))
            .collect();
        if let Some(min) = starts.iter().map(|s| s.1).min() {
            let hz = ctx.idx.snap.clock_ticks.max(1);
            for (w, s) in &starts {
                if *s > min + hz / 5 {
                    evidence.push(format!(
                        "worker {w} started {:.1} s after the others: a replacement for a worker that died",
                        (*s - min) as f64 / hz as f64
                    ));
                }
            }
        }
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: PatternId::PoolWorkerDied,
                summary: format!(
                    "{} waits{} for a Pool result that will never come: the worker running the task died, and multiprocessing.Pool replaced it without resubmitting the task.",
                    t.pid,
                    at(&culprit)
                ),
                chain: vec![ctx.link_with(t, "waits for a Pool result; all workers are idle".into())],
                threads: std::iter::once(t).chain(worker_threads).collect(),
                culprit,
                fix: "Find why the worker died (dmesg for the OOM killer, a C extension crash, sys.exit() or os._exit() in a task). Use concurrent.futures.ProcessPoolExecutor (raises BrokenProcessPool) or result.get(timeout=...) so a lost task fails instead of hanging.",
                evidence,
            }
            .hang(),
        );
    }
    out
}
