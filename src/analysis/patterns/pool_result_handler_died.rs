//! `pool_result_handler_died`: `Pool.map`/`apply`/`get` waits for results, but the Pool's
//! result-handler thread is gone (e.g. a result that cannot be unpickled killed it), so no
//! result is ever delivered. Fixture: pool_result_handler_died.py.

use super::{at, Ctx, Draft};
use crate::analysis::types::Finding;
use crate::analysis::PatternId;
use crate::model::ThreadRef;

/// A thread waiting for a Pool result (`get`/`wait`/`map`/`apply` in pool.py).
pub fn waits_for_pool(ctx: &Ctx<'_>, t: ThreadRef) -> bool {
    let Some(py) = ctx.py(t) else { return false };
    py.frames.iter().any(|f| {
        f.file.ends_with("multiprocessing/pool.py")
            && ["get", "wait", "map", "starmap", "apply"]
                .iter()
                .any(|n| f.named(n))
    }) && !ctx.has_frame(t, "multiprocessing/pool.py", "worker")
}

/// The Pool's workers, by parentage or (under forkserver) by the Pool's pipes and semaphores.
pub fn workers(ctx: &Ctx<'_>, pid: crate::model::Pid) -> Vec<crate::model::Pid> {
    ctx.idx.pool_workers(pid)
}

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
        let threads = ctx.idx.threads_of(t.pid);
        let has_handler = threads
            .iter()
            .any(|x| ctx.has_frame(*x, "multiprocessing/pool.py", "_handle_results"));
        let has_tasks = threads
            .iter()
            .any(|x| ctx.has_frame(*x, "multiprocessing/pool.py", "_handle_tasks"));
        if has_handler || !has_tasks {
            continue;
        }
        let culprit = ctx.code_line(t);
        out.push(
            Draft {
                pattern: PatternId::PoolResultHandlerDied,
                summary: format!(
                    "{} waits{} for Pool results that will never be delivered: the Pool's result-handler thread is gone (a result or exception that could not be unpickled kills it).",
                    t.pid,
                    at(&culprit)
                ),
                chain: vec![ctx.link_with(t, "waits for a Pool result".into())],
                threads: vec![t],
                culprit,
                fix: "Make every task result, and every exception a task raises, picklable round-trip (exceptions need their __init__ arguments in self.args or a __reduce__); or use concurrent.futures.ProcessPoolExecutor, which reports the error.",
                evidence: vec![
                    format!(
                        "threads of {}: {}; none runs Pool._handle_results",
                        t.pid,
                        threads.iter().map(|x| ctx.name(*x)).collect::<Vec<_>>().join(", ")
                    ),
                    format!("{} Pool workers alive: {}", ws.len(), ws.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")),
                ],
            }
            .hang(),
        );
    }
    out
}
