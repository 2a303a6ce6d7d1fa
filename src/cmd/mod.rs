//! Commands: each owns its IO, timers and exit code, and wires collect -> analysis -> render.

pub mod attach;
pub mod confirm;
pub mod demo;
pub mod fixture;
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
        Command::Demo(args) => demo::run(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "mphang", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
    }
}
