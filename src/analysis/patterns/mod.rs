//! Named patterns: each detector explains a stuck subgraph in the user's terms.
//!
//! Detectors run in the order of [`DETECTORS`], most specific first; a thread explained by one
//! finding is not explained again. After each detector, stuck threads that depend on explained
//! ones are attached to that finding; what is left at the end becomes a generic `deadlock` (a
//! cycle) or `stuck` (a dead end).

use crate::analysis::PatternId;
mod busy_loop;
mod finalizer_deadlock;
mod fork_inherited_lock;
mod generic;
mod gil_held_while_blocked;
mod ipc_cycle;
mod join_before_drain;
mod lock_order_cycle;
mod no_live_writer;
mod orphaned_lock;
mod peer_exited;
mod pipe_self_eof;
mod pool_result_handler_died;
mod pool_worker_died;
mod reimported_main_blocks;
mod store_key_never_set;
mod tcp_peer_closed;
mod thread_blocks_exit;
mod undrained_queue_at_exit;

use super::describe;
use super::graph::Graph;
use super::index::Index;
use super::types::{Assumption, BlockedOn, ChainLink, CodeLine, Finding, Severity};
use crate::model::{Pid, PyThread, ThreadRef, Tid};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;

/// What a detector sees.
pub struct Ctx<'a> {
    pub idx: &'a Index<'a>,
    pub g: &'a Graph,
    /// Threads already explained by an earlier finding.
    pub explained: HashSet<ThreadRef>,
}

/// One pattern detector.
pub struct Detector {
    pub id: PatternId,
    pub detect: fn(&Ctx<'_>) -> Vec<Finding>,
}

/// All detectors, most specific first.
pub static DETECTORS: &[Detector] = &[
    Detector {
        id: PatternId::GilHeldWhileBlocked,
        detect: gil_held_while_blocked::detect,
    },
    Detector {
        id: PatternId::LockOrderCycle,
        detect: lock_order_cycle::detect,
    },
    Detector {
        id: PatternId::ForkInheritedLock,
        detect: fork_inherited_lock::detect,
    },
    Detector {
        id: PatternId::OrphanedLock,
        detect: orphaned_lock::detect,
    },
    Detector {
        id: PatternId::ReimportedMainBlocks,
        detect: reimported_main_blocks::detect,
    },
    Detector {
        id: PatternId::JoinBeforeDrain,
        detect: join_before_drain::detect,
    },
    Detector {
        id: PatternId::UndrainedQueueAtExit,
        detect: undrained_queue_at_exit::detect,
    },
    Detector {
        id: PatternId::PoolResultHandlerDied,
        detect: pool_result_handler_died::detect,
    },
    Detector {
        id: PatternId::PoolWorkerDied,
        detect: pool_worker_died::detect,
    },
    Detector {
        id: PatternId::ThreadBlocksExit,
        detect: thread_blocks_exit::detect,
    },
    Detector {
        id: PatternId::FinalizerDeadlock,
        detect: finalizer_deadlock::detect,
    },
    Detector {
        id: PatternId::PipeSelfEof,
        detect: pipe_self_eof::detect,
    },
    Detector {
        id: PatternId::StoreKeyNeverSet,
        detect: store_key_never_set::detect,
    },
    Detector {
        id: PatternId::IpcCycle,
        detect: ipc_cycle::detect,
    },
    Detector {
        id: PatternId::PeerExited,
        detect: peer_exited::detect,
    },
    Detector {
        id: PatternId::TcpPeerClosed,
        detect: tcp_peer_closed::detect,
    },
    Detector {
        id: PatternId::NoLiveWriter,
        detect: no_live_writer::detect,
    },
    Detector {
        id: PatternId::BusyLoop,
        detect: busy_loop::detect,
    },
];

/// Runs every detector, attaches dependent threads, and explains the rest generically.
pub fn run(idx: &Index<'_>, g: &Graph) -> Vec<Finding> {
    let mut ctx = Ctx {
        idx,
        g,
        explained: HashSet::new(),
    };
    let mut findings: Vec<Finding> = Vec::new();
    let mut deps = Dependents::new(g);
    for d in DETECTORS {
        let before = findings.len();
        for f in (d.detect)(&ctx) {
            debug_assert_eq!(f.pattern, d.id);
            ctx.explained.extend(f.threads.iter().copied());
            findings.push(f);
        }
        // Threads that only wait on what this detector explained belong to its findings, so
        // that a later, less specific detector does not explain them again.
        deps.attach(&ctx, &mut findings, before);
        for f in &findings[before..] {
            ctx.explained.extend(f.threads.iter().copied());
        }
    }
    findings.extend(generic::detect(&ctx));
    for f in &mut findings {
        // Threads that can progress (periodic ones, a running thread of a process a detector
        // took whole) are not part of the hang, unless the chain names them.
        let chain: Vec<ThreadRef> = f.chain.iter().map(|l| l.thread).collect();
        f.threads.retain(|t| g.stuck(*t) || chain.contains(t));
        f.pids.sort();
        f.pids.dedup();
        f.user_lines = f.threads.iter().filter_map(|t| ctx.code_line(*t)).collect();
        f.assumed = assumptions(g, &f.threads);
        f.evidence.extend(assumption_lines(&f.assumed));
    }
    findings.sort_by_key(|f| f.severity);
    findings
}

/// The periodic threads (and receivers fed from outside the tree) left out of the providers
/// of `threads`, each with what it is assumed
/// not to do, in thread order.
fn assumptions(g: &Graph, threads: &[ThreadRef]) -> Vec<Assumption> {
    let mut out: Vec<Assumption> = Vec::new();
    for t in threads {
        for (p, what) in g.assumed(*t) {
            let i = match out.iter().position(|a| a.thread == *p) {
                Some(i) => i,
                None => {
                    out.push(Assumption {
                        thread: *p,
                        periodic: g.periodic.get(p).cloned().unwrap_or_else(|| {
                            "a receiver waiting on input from outside the tree".into()
                        }),
                        will_not: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            if !out[i].will_not.contains(what) {
                out[i].will_not.push(what.clone());
            }
        }
    }
    out.sort_by_key(|a| a.thread);
    out
}

/// One evidence line per group of periodic threads assumed not to do the same things:
/// `assuming thread 8124 (heartbeat, sleeping at app.py:40) will not read pipe:[6692]`.
fn assumption_lines(assumed: &[Assumption]) -> Vec<String> {
    let mut groups: Vec<(&[String], Vec<&Assumption>)> = Vec::new();
    for a in assumed {
        match groups.iter_mut().find(|(w, _)| *w == a.will_not.as_slice()) {
            Some((_, v)) => v.push(a),
            None => groups.push((a.will_not.as_slice(), vec![a])),
        }
    }
    groups
        .into_iter()
        .map(|(will_not, who)| {
            let names: Vec<String> = who
                .iter()
                .map(|a| format!("{} ({})", a.thread.tid, a.periodic))
                .collect();
            format!(
                "assuming thread{} {} will not {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", "),
                will_not.join(" or ")
            )
        })
        .collect()
}

/// Stuck threads whose providers lead only into one finding's threads join that finding: the
/// one whose threads they reach first, breadth-first backwards over the stuck waiters. The
/// reverse edges are built once per analysis and each thread is visited once (linear).
struct Dependents {
    waiters: HashMap<ThreadRef, Vec<ThreadRef>>,
    rank: HashMap<ThreadRef, usize>,
    owner: HashMap<ThreadRef, usize>,
}

impl Dependents {
    fn new(g: &Graph) -> Dependents {
        let mut waiters: HashMap<ThreadRef, Vec<ThreadRef>> = HashMap::new();
        let mut rank: HashMap<ThreadRef, usize> = HashMap::new();
        for (i, t) in g.order.iter().enumerate() {
            rank.insert(*t, i);
            if g.stuck(*t) {
                for p in g.providers(*t) {
                    waiters.entry(*p).or_default().push(*t);
                }
            }
        }
        Dependents {
            waiters,
            rank,
            owner: HashMap::new(),
        }
    }

    /// Attaches the dependents of `findings[from..]` (those of earlier findings are attached
    /// already).
    fn attach(&mut self, ctx: &Ctx<'_>, findings: &mut [Finding], from: usize) {
        let mut queue: VecDeque<ThreadRef> = VecDeque::new();
        for (i, f) in findings.iter().enumerate().skip(from) {
            for t in &f.threads {
                if !self.owner.contains_key(t) {
                    self.owner.insert(*t, i);
                    queue.push_back(*t);
                }
            }
        }
        let mut added: Vec<(usize, ThreadRef)> = Vec::new();
        while let Some(p) = queue.pop_front() {
            let i = self.owner.get(&p).copied().unwrap_or(from);
            for w in self.waiters.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
                if self.owner.contains_key(w) || ctx.explained.contains(w) {
                    continue;
                }
                self.owner.insert(*w, i);
                queue.push_back(*w);
                if !ctx.zombie(*w) {
                    added.push((i, *w));
                }
            }
        }
        added.sort_by_key(|(_, t)| self.rank.get(t).copied().unwrap_or(usize::MAX));
        for (i, t) in added {
            findings[i].threads.push(t);
            findings[i].pids.push(t.pid);
        }
    }
}

impl<'a> Ctx<'a> {
    pub fn py(&self, t: ThreadRef) -> Option<&'a PyThread> {
        self.idx.thread(t).and_then(|(_, th)| th.py.as_ref())
    }

    pub fn has_frame(&self, t: ThreadRef, file: &str, func: &str) -> bool {
        self.py(t).is_some_and(|p| p.has_frame(file, func))
    }

    /// The innermost user-code frame of `t` as a [`CodeLine`].
    pub fn code_line(&self, t: ThreadRef) -> Option<CodeLine> {
        let f = self.py(t)?.user_frame()?;
        Some(CodeLine {
            pid: t.pid,
            tid: t.tid,
            file: f.file.clone(),
            line: f.line,
            function: f.function.clone(),
        })
    }

    pub fn name(&self, t: ThreadRef) -> String {
        match self.idx.thread(t) {
            Some((_, th)) => th.display_name().to_string(),
            None => format!("thread {}", t.tid),
        }
    }

    pub fn blocked(&self, t: ThreadRef) -> Option<&'a BlockedOn> {
        self.g.blocked(t)
    }

    pub fn link(&self, t: ThreadRef) -> ChainLink {
        ChainLink {
            thread: t,
            name: self.name(t),
            waits_on: self.blocked(t).map(describe::short).unwrap_or_default(),
        }
    }

    /// A link whose wait is described in the detector's own words.
    pub fn link_with(&self, t: ThreadRef, waits_on: String) -> ChainLink {
        ChainLink {
            thread: t,
            name: self.name(t),
            waits_on,
        }
    }

    /// Stuck threads not yet explained, in snapshot order.
    pub fn open_stuck(&self) -> Vec<ThreadRef> {
        self.g
            .order
            .iter()
            .copied()
            .filter(|t| self.g.stuck(*t) && !self.explained.contains(t) && !self.zombie(*t))
            .collect()
    }

    pub fn zombie(&self, t: ThreadRef) -> bool {
        self.idx
            .thread(t)
            .is_none_or(|(p, th)| th.state == 'Z' || p.state == 'Z')
    }

    pub fn passive(&self, t: ThreadRef) -> bool {
        self.g.passive.contains(&t)
    }

    pub fn main_of(&self, pid: Pid) -> ThreadRef {
        ThreadRef {
            pid,
            tid: Tid(pid.0),
        }
    }

    pub fn brief(&self, pid: Pid) -> String {
        describe::process_brief(self.idx, self.g, pid)
    }

    pub fn line(&self, t: ThreadRef) -> String {
        describe::line(self.idx, self.g, t)
    }

    pub fn pipe_fill(&self, inode: crate::model::Inode) -> String {
        match self.idx.pipe(inode) {
            Some(p) => format!(
                "pipe:[{inode}] holds {} bytes (capacity {})",
                p.buffered.map(|b| b.to_string()).unwrap_or("?".into()),
                p.capacity.map(|b| b.to_string()).unwrap_or("?".into())
            ),
            None => format!("pipe:[{inode}]"),
        }
    }
}

/// Builds a finding with the fields every detector fills the same way.
pub struct Draft {
    pub pattern: PatternId,
    pub summary: String,
    pub chain: Vec<ChainLink>,
    pub threads: Vec<ThreadRef>,
    pub culprit: Option<CodeLine>,
    pub fix: &'static str,
    pub evidence: Vec<String>,
}

impl Draft {
    pub fn hang(self) -> Finding {
        self.finish(Severity::Hang)
    }

    pub fn finish(self, severity: Severity) -> Finding {
        let mut threads = self.threads;
        for l in &self.chain {
            if !threads.contains(&l.thread) {
                threads.push(l.thread);
            }
        }
        Finding {
            pattern: self.pattern,
            severity,
            summary: self.summary,
            pids: threads.iter().map(|t| t.pid).collect(),
            chain: self.chain,
            threads,
            user_lines: Vec::new(),
            culprit: self.culprit,
            fix: self.fix.to_string(),
            evidence: self.evidence,
            doc: format!("docs/patterns/{}.md", self.pattern),
            assumed: Vec::new(),
        }
    }
}

/// `file.py:31` for a code line.
pub fn at(c: &Option<CodeLine>) -> String {
    match c {
        Some(c) => format!(
            " at {}:{}",
            c.file.rsplit('/').next().unwrap_or(&c.file),
            c.line
        ),
        None => String::new(),
    }
}
