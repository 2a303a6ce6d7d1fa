//! `deadlock` and `stuck`: a stuck set that no named pattern explains, reported with its chain:
//! a cycle of waits (deadlock) or a dead end (stuck).

use super::{Ctx, Draft};
use crate::analysis::types::Finding;
use crate::analysis::PatternId;
use crate::model::ThreadRef;
use foldhash::{HashMap, HashMapExt, HashSet};

pub fn detect(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // Which finding of `out` each covered thread belongs to.
    let mut covered: HashMap<ThreadRef, usize> = HashMap::new();
    for t in ctx.open_stuck() {
        if ctx.passive(t) || covered.contains_key(&t) {
            continue;
        }
        // Follow stuck providers, preferring other processes and active threads.
        let mut chain = vec![t];
        let mut cycle = false;
        let mut cur = t;
        loop {
            let mut ps: Vec<ThreadRef> = ctx
                .g
                .providers(cur)
                .iter()
                .copied()
                .filter(|p| ctx.g.stuck(*p) && !ctx.zombie(*p))
                .collect();
            ps.sort_by_key(|p| (p.pid == cur.pid, ctx.passive(*p), p.tid));
            let Some(next) = ps.first().copied() else {
                break;
            };
            if chain.contains(&next) {
                cycle = true;
                break;
            }
            chain.push(next);
            cur = next;
            if chain.len() > 12 {
                break;
            }
        }
        // Everything reachable belongs to this finding; reaching a thread an earlier finding
        // covers makes this root part of that finding (each thread is expanded once).
        let mut all = HashSet::from_iter([t]);
        let mut order = vec![t];
        let mut frontier = vec![t];
        let mut joins: Option<usize> = None;
        while let Some(c) = frontier.pop() {
            for p in ctx.g.providers(c) {
                if !ctx.g.stuck(*p) {
                    continue;
                }
                if let Some(i) = covered.get(p) {
                    joins.get_or_insert(*i);
                    continue;
                }
                if all.insert(*p) {
                    order.push(*p);
                    frontier.push(*p);
                }
            }
        }
        if let Some(i) = joins {
            for x in order {
                covered.insert(x, i);
                if !ctx.zombie(x) {
                    out[i].threads.push(x);
                    out[i].pids.push(x.pid);
                }
            }
            continue;
        }
        for x in &order {
            covered.insert(*x, out.len());
        }
        let last = *chain.last().unwrap_or(&t);
        let culprit = chain.iter().find_map(|x| ctx.code_line(*x));
        let pattern = if cycle {
            PatternId::Deadlock
        } else {
            PatternId::Stuck
        };
        let mut threads: Vec<ThreadRef> = all.into_iter().filter(|x| !ctx.zombie(*x)).collect();
        threads.sort();
        out.push(
            Draft {
                pattern,
                summary: if cycle {
                    format!("{} threads in {} wait on each other in a cycle; none can ever progress.", chain.len(), distinct_pids(&chain))
                } else {
                    format!("{} of {} can never progress: {}, and nothing that could release it can run.", ctx.name(t), t.pid, ctx.line(last))
                },
                chain: chain.iter().map(|x| ctx.link(*x)).collect(),
                threads,
                culprit,
                fix: "No known pattern matched. Follow the chain: the first thread waits for the next; the last one waits for something nobody alive will provide. Add a timeout there or make sure the other side runs.",
                evidence: chain.iter().map(|x| format!("{}/{}: {}", x.pid, x.tid, ctx.line(*x))).collect(),
            }
            .hang(),
        );
    }
    out
}

fn distinct_pids(chain: &[ThreadRef]) -> String {
    let mut v: Vec<String> = chain.iter().map(|t| t.pid.to_string()).collect();
    v.dedup();
    v.join(", ")
}
