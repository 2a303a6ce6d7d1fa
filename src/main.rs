//! The `mphang` binary: parse argv, dispatch, render an error and its hint once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    use mphang::collect::native::helper;
    // The ptrace helper (collect/native/helper.rs): this same binary, re-executed.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == helper::HELPER_ARG)
    {
        return ExitCode::from(u8::try_from(helper::serve()).unwrap_or(2));
    }
    helper::set_program("/proc/self/exe".into());
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
