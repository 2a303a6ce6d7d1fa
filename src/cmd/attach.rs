//! `mphang attach <pid>`: the live terminal view. Takes a first look before touching the
//! terminal (so a bad pid or missing permission is an ordinary error), then starts the signal,
//! input and sampler threads, runs [`crate::tui::run`] on the real terminal, and joins the
//! sampler so that no collection is in flight when it returns.

use crate::cli::AttachArgs;
use crate::collect::{collect, CollectOptions};
use crate::error::{Error, Result};
use crate::model::Pid;
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

/// Options of refresh number `look` (0 = the first): one look each (successive refreshes are
/// compared by the view itself), native stacks every [`NATIVE_EVERY`] looks.
pub fn refresh_options(look: u64) -> CollectOptions {
    let default = CollectOptions::default();
    CollectOptions {
        looks: 1,
        native: default.native && look % NATIVE_EVERY == 0,
        ..default
    }
}

pub fn run(args: &AttachArgs) -> Result<i32> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Terminal("mphang attach needs a terminal".into()));
    }
    if args.interval.is_zero() {
        return Err(Error::Usage("--interval must be more than 0".into()));
    }
    let pid = Pid(args.pid);
    let (tx, rx) = mpsc::channel();
    // Before any other thread starts (the collector's too), so that all of them inherit the
    // blocked signals; a Ctrl-C during the first look then quits as soon as the view is up.
    spawn_signal_thread(tx.clone())?;
    let first = collect(pid, &refresh_options(0))?;
    let save_dir = std::env::current_dir().map_err(|source| Error::Io {
        context: "reading the current directory".into(),
        source,
    })?;

    let mut app = App::new(pid, args.interval, save_dir);
    app.update(Action::Refresh(Box::new(Report::analyze(first))));

    let mut tty = Tty::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    let input = spawn_input_thread(tx.clone(), Arc::clone(&stop));
    let mut look = 0;
    let sampler = spawn_sampler_thread(
        move || {
            look += 1;
            collect(pid, &refresh_options(look))
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
