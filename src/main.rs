//! The `mphang` binary: parse argv, dispatch, render an error and its hint once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = mphang::cli::Cli::parse();
    cli.color.apply();
    match mphang::cmd::dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("mphang: {err}");
            if let Some(hint) = err.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(mphang::cmd::EXIT_ERROR as u8)
        }
    }
}
