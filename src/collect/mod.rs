//! Collection: reads a live process tree into a [`Snapshot`]. The only module that touches the OS.
//!
//! Order: check the root -> walk the tree -> read every process in parallel (/proc, fds, maps,
//! decoded syscalls with their futex words and poll sets) -> Python stacks (py-spy, discovery
//! shared across forked children) -> native stacks (ptrace, a few ms per thread, unless
//! non-blocking) -> pipes (fill), unix sockets (peers), semaphores (value, holders on demand)
//! -> roles -> later looks for progress. A process that vanishes or refuses
//! becomes a diagnostic, never an abort.

pub mod abi;
pub mod breadth;
pub mod decode;
mod enrich;
pub mod fds;
pub mod host;
pub mod locks;
pub mod looks;
pub mod memory;
pub mod native;
pub mod net;
mod ns;
mod objects;
pub mod outside;
pub mod perms;
mod process;
pub mod procfs;
pub mod python;
pub mod select;
pub mod sems;
pub mod sockdiag;
mod stopped;
pub mod tree;

use enrich::*;
pub use looks::quick_changed;
use ns::*;
pub use perms::check_root;
pub(crate) use process::read_sched;
use process::*;

use crate::error::Result;
use crate::model::{DiagKind, GoneProcess, Pid, PipeSnap, ProcessSnap, Snapshot, SCHEMA};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Number of looks (1 = a single look, no progress check).
    pub looks: u32,
    /// Time between looks.
    pub interval: Duration,
    /// Read Python stacks with py-spy.
    pub python: bool,
    /// Read native stacks (stops each thread briefly with ptrace); false = `--nonblocking`.
    pub native: bool,
    /// More trees to include (e.g. orphans reparented to `mphang run`, a subreaper).
    pub extra_roots: Vec<Pid>,
    /// Redact secret-looking arguments and paths (`model::safe`); false = `--no-redact`.
    /// Control characters in target strings are escaped either way.
    pub redact: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            looks: 2,
            interval: Duration::from_millis(500),
            python: true,
            native: true,
            extra_roots: Vec::new(),
            redact: true,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `f` over `items` on up to `workers` threads, keeping order.
fn par_map<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = Vec::with_capacity(items.len());
    slots.resize_with(items.len(), || None);
    let slots = std::sync::Mutex::new(slots);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut sl) = slots.lock() {
                    sl[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Collects the tree rooted at `root` (plus `opts.extra_roots`).
pub fn collect(root: Pid, opts: &CollectOptions) -> Result<Snapshot> {
    collect_with(root, opts).map(|(s, _)| s)
}

/// [`collect`], also returning the [`looks::Looker`] that takes further looks at the snapshot
/// (the caller extends the observation while a verdict still depends on them).
pub fn collect_with(root: Pid, opts: &CollectOptions) -> Result<(Snapshot, looks::Looker)> {
    check_root(root)?;
    let started = Instant::now();
    let taken_at_ms = now_ms();
    let mut roots = vec![root.0];
    roots.extend(opts.extra_roots.iter().map(|p| p.0));
    let pids = tree::walk(&roots);
    let n = workers();

    let trace = std::env::var_os("MPHANG_TRACE").is_some();
    let phase = |name: &str| {
        if trace {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "{:>7.1} ms {name}\n",
                    started.elapsed().as_secs_f64() * 1000.0
                ),
            );
        }
    };
    phase("tree");
    let fd_tables = fds::Tables::default();
    let raws = par_map(&pids, n, |&pid| read_process(pid, &fd_tables));
    phase("proc");
    let mut diagnostics = Vec::new();
    let mut gone = Vec::new();
    let mut procs: Vec<Raw> = Vec::new();
    for (pid, r) in pids.iter().zip(raws) {
        match r {
            Ok(raw) => procs.push(raw),
            Err(d) => {
                if d.kind == DiagKind::Gone {
                    gone.push(GoneProcess {
                        pid: Pid(*pid),
                        ppid: None,
                        cmdline: Vec::new(),
                        ended: None,
                        ended_at_ms: None,
                        last_stack: None,
                    });
                }
                diagnostics.push(d);
            }
        }
    }

    if opts.python {
        add_python(&mut procs, n);
    }
    translate_ns_owners(&mut procs);
    phase("python");
    objects::add_lock_owners(&mut procs);
    let max_stop_us = if opts.native {
        let m = add_native(&mut procs);
        phase("native");
        Some(m)
    } else {
        None
    };
    for r in &mut procs {
        diagnostics.append(&mut r.diags);
    }

    let pipe_refs = pipe_refs(&procs);
    let mut pipes: Vec<PipeSnap> = pipe_refs
        .iter()
        .map(|(inode, (pid, fd))| fds::query_pipe(*pid, *fd, *inode))
        .collect();

    let net_ns = {
        let mut snaps: Vec<&mut ProcessSnap> = procs.iter_mut().map(|r| &mut r.snap).collect();
        net::resolve_sockets(&mut snaps, &mut diagnostics)
    };

    phase("pipes+sockets");
    let layouts: HashMap<i32, Option<String>> = procs
        .iter()
        .map(|r| (r.snap.pid.0, layout_key(r)))
        .collect();
    let semaphores = objects::semaphores(&procs, &layouts, n);
    phase("semaphores");
    assign_roles(&mut procs, root.0, &layouts);
    phase("roles");
    let libcs: HashMap<i32, abi::GlibcLayout> =
        procs.iter().map(|r| (r.snap.pid.0, r.abi.libc)).collect();

    let processes: Vec<ProcessSnap> = procs.into_iter().map(|r| r.snap).collect();
    let collect_ms = started.elapsed().as_millis() as u64;

    outside::lookup(&processes, &mut pipes);
    phase("outside");
    let looker = looks::Looker {
        layouts,
        libcs,
        pipe_refs,
        first_done: Instant::now(),
        python: opts.python,
        workers: n,
    };
    let mut snap = Snapshot {
        schema: SCHEMA.to_string(),
        mphang_version: env!("CARGO_PKG_VERSION").to_string(),
        taken_at_ms,
        root,
        clock_ticks: clock_ticks(),
        looks: 1,
        interval_ms: opts.interval.as_millis() as u64,
        collect_ms,
        max_stop_us,
        hosts: host::this_host(&net_ns).into_iter().collect(),
        processes,
        pipes,
        semaphores,
        gone,
        diagnostics,
        tracebacks: Vec::new(),
        gone_threads: Vec::new(),
        watched: None,
    };
    for _ in 1..opts.looks.max(1) {
        std::thread::sleep(opts.interval);
        looker.look(&mut snap);
    }
    // Every target string is escaped (and secrets redacted) here, once, for every renderer
    // (the top frames of later looks are only compared, never printed).
    crate::model::safe::sanitize(&mut snap, opts.redact);
    phase("sanitized");
    Ok((snap, looker))
}
