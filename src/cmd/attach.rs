//! `mphang attach <pid>`: the live terminal view. Takes a first look before touching the
//! terminal (so a bad pid or missing permission is an ordinary error), then starts the signal,
//! input and sampler threads, runs [`crate::tui::run`] on the real terminal, and joins the
//! sampler so that no collection is in flight when it returns. From its start it keeps `run`'s
//! stack history ([`Past`]); each snapshot says since when (`watched`): earlier is unknown.

use crate::cli::AttachArgs;
use crate::collect::{collect, quick_changed, CollectOptions};
use crate::error::{Error, Result};
use crate::model::{GoneProcess, Pid, ProcessSnap, Snapshot, Watched};
use crate::render::Report;
use crate::tui::app::{Action, App};
use crate::tui::event::{spawn_input_thread, spawn_sampler_thread, spawn_signal_thread};
use crate::tui::{self, Tty};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Native stacks hold every thread stopped for a moment (ptrace) and cost the most CPU, so a
/// refresh reads them only on the first look and then every `NATIVE_EVERY` looks; the view
/// keeps showing a thread's last native stack while the thread stays where it was.
pub const NATIVE_EVERY: u64 = 10;

/// A full collection at least every `FULL_EVERY` looks; in between, a refresh whose quick
/// look ([`crate::collect::quick_changed`]) sees no change reuses the last snapshot.
pub const FULL_EVERY: u64 = 30;

/// Options of refresh number `look` (0 = the first): one look each (successive refreshes are
/// compared by the view itself), native stacks every [`NATIVE_EVERY`] looks unless
/// `nonblocking`.
pub fn refresh_options(look: u64, nonblocking: bool) -> CollectOptions {
    let default = CollectOptions::default();
    CollectOptions {
        looks: 1,
        native: !nonblocking && default.native && look % NATIVE_EVERY == 0,
        ..default
    }
}

/// What attach learns of the past while it watches (the same stack history as `run`, from
/// `cmd::run::history`): each process's last stack, and the processes seen to go between
/// refreshes. Attach is not their parent, so their exit statuses are unknown, and so is
/// anything before it started.
struct Past {
    history: Option<crate::cmd::run::history::History>,
    since_ms: u64,
    /// Parent and command line of each process of the last refresh.
    seen: std::collections::HashMap<Pid, (Option<Pid>, Vec<String>)>,
    /// Processes that went away, oldest first (at most [`MAX_GONE`]).
    gone: Vec<GoneProcess>,
}

/// Processes that went away kept at most.
const MAX_GONE: usize = 256;

impl Past {
    fn start() -> Past {
        let on = std::env::var("MPHANG_HISTORY").map_or(true, |v| v != "0");
        Past {
            history: on
                .then(|| crate::cmd::run::history::History::start(None))
                .flatten(),
            since_ms: crate::cmd::run::now_ms(),
            seen: Default::default(),
            gone: Vec::new(),
        }
    }

    /// Adds what was seen since the last refresh to `snap`, and tells the history which
    /// processes to read.
    fn apply(&mut self, snap: &mut Snapshot) {
        let now = crate::cmd::run::now_ms();
        let live: Vec<&ProcessSnap> = snap.processes.iter().filter(|p| p.state != 'Z').collect();
        if let Some(h) = &self.history {
            h.set_live(live.iter().map(|p| p.pid.0).collect());
        }
        let went: Vec<Pid> = self
            .seen
            .keys()
            .filter(|p| !live.iter().any(|l| l.pid == **p))
            .copied()
            .collect();
        for pid in went {
            let Some((ppid, cmdline)) = self.seen.remove(&pid) else {
                continue;
            };
            if self.gone.len() >= MAX_GONE {
                self.gone.remove(0);
            }
            self.gone.push(GoneProcess {
                pid,
                ppid,
                cmdline,
                ended: Some("exited (status unknown)".into()),
                ended_at_ms: Some(now),
                last_stack: self.history.as_ref().and_then(|h| h.last(pid.0)),
            });
        }
        for p in &live {
            self.seen.insert(p.pid, (Some(p.ppid), p.cmdline.clone()));
        }
        for g in &self.gone {
            if !snap.gone.iter().any(|s| s.pid == g.pid) {
                snap.gone.push(g.clone());
            }
        }
        if let Some(h) = &self.history {
            snap.gone_threads = h.gone_threads();
        }
        snap.watched = Some(Watched {
            by: "attach".into(),
            since_ms: self.since_ms,
            unknown: "what happened before attach started (processes that ended, tracebacks, \
                      signals) is unknown; attach reads no stderr, and exit statuses are \
                      unknown (it is not the processes' parent)"
                .into(),
        });
    }
}

/// One refresh: a full collection, or the last snapshot again (with a new timestamp) when a
/// quick look shows that nothing in the tree moved.
fn refresh(
    pid: Pid,
    look: u64,
    nonblocking: bool,
    last: &mut Option<Snapshot>,
) -> Result<Snapshot> {
    if look % FULL_EVERY != 0 {
        if let Some(prev) = last.as_ref().filter(|p| !quick_changed(p)) {
            let mut same = prev.clone();
            same.taken_at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(prev.taken_at_ms);
            return Ok(same);
        }
    }
    let snap = collect(pid, &refresh_options(look, nonblocking))?;
    *last = Some(snap.clone());
    Ok(snap)
}

pub fn run(args: &AttachArgs) -> Result<i32> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Terminal("mphang attach needs a terminal".into()));
    }
    if args.interval.is_zero() {
        return Err(Error::Usage("--interval must be more than 0".into()));
    }
    let pid = Pid(args.pid);
    crate::collect::check_root(pid)?;
    super::confirm::broad_root(args.pid, args.yes, args.nonblocking)?;
    let (tx, rx) = mpsc::channel();
    // Before any other thread starts (the collector's too), so that all of them inherit the
    // blocked signals; a Ctrl-C during the first look then quits as soon as the view is up.
    spawn_signal_thread(tx.clone())?;
    let nonblocking = args.nonblocking;
    let mut last = None;
    let mut past = Past::start();
    let mut first = refresh(pid, 0, nonblocking, &mut last)?;
    past.apply(&mut first);
    let save_dir = std::env::current_dir().map_err(|source| Error::Io {
        context: "reading the current directory".into(),
        source,
    })?;

    let mut app = App::new(pid, args.interval, save_dir);
    app.color = anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
    app.update(Action::Refresh(Box::new(Report::analyze(first))));

    let mut tty = Tty::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    let input = spawn_input_thread(tx.clone(), Arc::clone(&stop));
    let mut look = 0;
    let sampler = spawn_sampler_thread(
        move || {
            look += 1;
            let mut snap = refresh(pid, look, nonblocking, &mut last)?;
            past.apply(&mut snap);
            Ok(snap)
        },
        tx,
        Arc::clone(&stop),
        app.pause_flag(),
        args.interval,
    );
    let result = tui::run(&mut tty.terminal, &rx, &mut app);
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    // The sampler checks `stop` every 50 ms but first finishes a look in progress: wait for it,
    // so that no ptrace is in flight when the process ends. The input thread is left behind:
    // on a hung-up terminal crossterm's read() never returns (it spins), so joining it could
    // hang; it ends with the process.
    let _ = sampler.join();
    drop(input);
    drop(tty);
    result.map(|()| crate::cmd::EXIT_OK)
}
