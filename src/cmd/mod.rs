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
use crate::error::Result;

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
