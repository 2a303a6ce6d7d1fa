//! Commands: each owns its IO, timers and exit code, and wires collect -> analysis -> render.

pub mod attach;
pub mod confirm;
pub mod demo;
pub mod fixture;
pub mod man;
pub mod merge;
pub mod report;
pub mod run;

use crate::cli::{Cli, Command};
use crate::collect::{self, CollectOptions};
use crate::error::Result;
use crate::model::{Pid, Snapshot};

/// Exit code: no hang found.
pub const EXIT_OK: i32 = 0;
/// Exit code: a hang was found.
pub const EXIT_HANG: i32 = 1;
/// Exit code: mphang itself failed (bad pid, no permission, bad input).
pub const EXIT_ERROR: i32 = 2;

/// Runs the parsed command and returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Report(args) => report::run(&args),
        Command::Attach(args) => attach::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Watch(args) => run::watch::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Merge(args) => merge::run(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "mphang", &mut text);
            write_stdout(&text)?;
            Ok(EXIT_OK)
        }
        Command::Man(args) => man::run(&args),
    }
}

/// Writes `bytes` to stdout. A reader that went away (`| head`) is not an error: the output
/// just ends there, quietly.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    quiet_pipe(out.write_all(bytes).and_then(|()| out.flush()))
}

/// Turns a closed-pipe error into success and any other write error into an [`Error`].
pub fn quiet_pipe(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(crate::error::Error::Io {
            context: "writing to stdout".into(),
            source,
        }),
        Ok(()) => Ok(()),
    }
}

/// How long a report may keep looking for timed waiters to wake: long enough for a heartbeat
/// or a watchdog tick, short enough for a report.
pub const SETTLE_BUDGET_MS: u64 = 3000;

/// Collects, then, while the verdict depends on a thread in a timed wait that was not seen to
/// wake yet and whose wait ends within the budget ([`SETTLE_BUDGET_MS`]), takes more looks
/// that stop nothing until it has woken once; one more look follows a wake, so that what it
/// did (a put, a write) shows up in its peers. A `while True: time.sleep(1)` heartbeat is
/// thus known as periodic in the first report. With `looks: 1` nothing is extended.
pub fn collect_settled(root: Pid, opts: &CollectOptions) -> crate::error::Result<Snapshot> {
    let (mut snap, looker) = collect::collect_with(root, opts)?;
    if opts.looks < 2 {
        return Ok(snap);
    }
    let start = looker.elapsed_ms();
    let mut before: Vec<crate::model::ThreadRef> = Vec::new();
    loop {
        let left = SETTLE_BUDGET_MS.saturating_sub(looker.elapsed_ms().saturating_sub(start));
        let und: Vec<(crate::model::ThreadRef, u64)> = crate::analysis::undecided(&snap)
            .into_iter()
            .filter_map(|(r, ms)| ms.filter(|ms| *ms < left).map(|ms| (r, ms)))
            .collect();
        let woke = before.iter().any(|r| !und.iter().any(|(u, _)| u == r));
        if und.is_empty() {
            if woke {
                // What the waiter did when it woke (a put, a write) shows in its peers.
                std::thread::sleep(std::time::Duration::from_millis(100));
                looker.look(&mut snap);
            }
            break;
        }
        let soonest = und.iter().map(|(_, ms)| *ms).min().unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(
            soonest.clamp(30, 250) + 20,
        ));
        looker.look(&mut snap);
        before = und.into_iter().map(|(r, _)| r).collect();
    }
    Ok(snap)
}
