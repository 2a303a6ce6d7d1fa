//! Command-line grammar (clap derive). Parsed here into plain option structs; nothing below
//! `cmd` sees clap.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Diagnose hung Python multiprocessing process trees from the outside.
///
/// mphang reads a process tree through /proc and process memory (no code injected), finds what
/// each thread waits for and who is on the other end, proves which threads can never progress,
/// names the pattern and points at the line of your code behind it.
#[derive(Debug, Parser)]
#[command(name = "mphang", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnose the process tree rooted at PID once and print the report.
    Report(ReportArgs),
    /// Watch a process tree live in the terminal.
    Attach(AttachArgs),
    /// Run a command; on timeout or stall, diagnose its tree, write the report and end it.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Start a bundled hung program, diagnose it, and end it.
    Demo(DemoArgs),
    /// Print shell completions for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Options shared by every command that samples live processes.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Number of looks at the tree; later looks that see progress veto a verdict (1 = no check).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub samples: u32,
    /// Time between looks (e.g. 500ms, 2s).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Never stop a thread: no native stacks (Python stacks and /proc state only).
    #[arg(long)]
    pub nonblocking: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Root of the process tree to diagnose.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub pid: Option<i32>,
    /// Re-render a snapshot saved with --save (or a --json report) instead of a live tree.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Print one JSON document (format: docs/json-format.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the raw snapshot to FILE (loadable with --from).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// When to use colors in text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Keep secret-looking arguments (--password=…, *_TOKEN=…, user:pass@ in URLs) in the
    /// report and the saved snapshot instead of replacing them with ***.
    #[arg(long)]
    pub no_redact: bool,
    /// Do not ask before stopping threads of a tree that is pid 1 or spans several users or
    /// system daemons (without a terminal, such a tree is refused unless --yes is given).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub sample: SampleArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// Root of the process tree to watch.
    pub pid: i32,
    /// Refresh period.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Never stop a thread: no native stacks (Python stacks and /proc state only).
    #[arg(long)]
    pub nonblocking: bool,
    /// Do not ask before stopping threads of a tree that is pid 1 or spans several users or
    /// system daemons.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    Text,
    Json,
    Github,
}

/// The exit-code contract of `mphang run`, shown by `mphang run --help` (docs/ci.md).
const RUN_AFTER_HELP: &str = "\
Exit codes:
  CMD's own   CMD finished in time (128+N if signal N ended it); mphang printed nothing
  124         --timeout or --stall fired and no hang was named
  125         --timeout or --stall fired and the analysis named a hang
  130         a second SIGINT ended the whole tree
  2           mphang's own error before CMD ran (bad arguments, cannot start CMD)

Stall means no CPU time used anywhere in the tree (stdout/stderr pass through untouched, so
output is not watched). On timeout or stall, report.txt and report.json are written to
--report-dir and the report is printed to stderr (with ::error annotations and a job summary
under GitHub Actions); then every descendant, orphans included, gets SIGTERM and after
--grace SIGKILL. See docs/ci.md.";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Diagnose and end the tree after this long (e.g. 10m, 90s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Diagnose and end the tree when no process in it used CPU for this long.
    #[arg(long, value_parser = parse_duration)]
    pub stall: Option<Duration>,
    /// Where report.txt and report.json are written.
    #[arg(long, value_name = "DIR", default_value = "mphang-report")]
    pub report_dir: PathBuf,
    /// Format of the report printed to stderr (github adds ::error annotations).
    #[arg(long, value_enum)]
    pub format: Option<RunFormat>,
    /// Time between SIGTERM and SIGKILL when ending the tree.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Keep secret-looking arguments (--password=…, *_TOKEN=…, user:pass@ in URLs) in the
    /// report files, stderr and the job summary instead of replacing them with ***.
    #[arg(long)]
    pub no_redact: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Python interpreter to run the bundled fixture with (default: python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Print the JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// When to use colors.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Colors on a tty only (and never with NO_COLOR set), unless forced.
    pub fn enabled(self, is_tty: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// Parses `500ms`, `5s`, `10m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 5s, 10m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
