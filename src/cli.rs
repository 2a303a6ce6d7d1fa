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
#[command(name = "mphang", version = VERSION, about, long_about, propagate_version = true)]
pub struct Cli {
    /// When to use colors: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// `0.1.0 (x86_64-unknown-linux-gnu)`: the version and the target the binary was built for.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MPHANG_TARGET"), ")");

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnose the process tree rooted at PID once and print the report.
    Report(ReportArgs),
    /// Watch a process tree live in the terminal.
    Attach(AttachArgs),
    /// Run a command; on timeout or stall, diagnose its tree, write the report and end it.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Watch a running process (a pytest worker) from outside: told which test runs, diagnose
    /// the tree when one overruns, fail it and end its children (used by the pytest plugin).
    #[command(after_help = WATCH_AFTER_HELP)]
    Watch(WatchArgs),
    /// Start a bundled hung program, diagnose it, and end it.
    Demo(DemoArgs),
    /// Merge per-host `report --json` files into one diagnosis across hosts (docs/multi-host.md).
    Merge(MergeArgs),
    /// Print shell completions for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into DIR.
    Man(ManArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write mphang.1 and mphang-COMMAND.1 into this directory instead of printing mphang.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
    #[arg(
        required_unless_present_any = ["from", "job_env", "cgroup"],
        conflicts_with_all = ["from", "job_env", "cgroup"]
    )]
    pub pid: Option<i32>,
    /// Instead of a pid: every Python tree on this host whose processes have NAME=VALUE in their
    /// environment (e.g. SLURM_JOB_ID=123), for one report per node (docs/multi-host.md).
    #[arg(long, value_name = "NAME=VALUE", conflicts_with_all = ["from", "cgroup"])]
    pub job_env: Option<String>,
    /// Instead of a pid: every Python tree on this host in cgroup PATH or below it (as
    /// /proc/PID/cgroup shows it, e.g. /system.slice/slurmstepd.scope/job_123).
    #[arg(long, value_name = "PATH", conflicts_with = "from")]
    pub cgroup: Option<String>,
    /// Re-render a snapshot saved with --save (or a --json report) instead of a live tree.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Print one JSON document (format: docs/json-format.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the raw snapshot to FILE (loadable with --from).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
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
pub struct MergeArgs {
    /// Reports written by `mphang report --json` (or snapshots from `--save`), one or more per
    /// host; any mphang version.
    #[arg(required = true, value_name = "REPORT")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document (same format as `report --json`, host-qualified ids).
    #[arg(long)]
    pub json: bool,
    /// Also write the merged snapshot to FILE (loadable with `report --from`).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// Root of the process tree to watch.
    pub pid: i32,
    /// Refresh period.
    #[arg(long, default_value = "1s", value_parser = parse_deadline)]
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
    /// Diagnose and end the tree after this long (e.g. 10m, 90s, 1h30m; 0 is refused: leave it
    /// out to never time out).
    #[arg(long, value_parser = parse_deadline)]
    pub timeout: Option<Duration>,
    /// Diagnose and end the tree when no process in it used CPU for this long.
    #[arg(long, value_parser = parse_deadline)]
    pub stall: Option<Duration>,
    /// Where report.txt and report.json are written.
    #[arg(long, value_name = "DIR", default_value = "mphang-report")]
    pub report_dir: PathBuf,
    /// Format of the report printed to stderr (github adds ::error annotations).
    #[arg(long, value_enum)]
    pub format: Option<RunFormat>,
    /// Also write the outcome as JUnit XML to FILE (GitLab, Jenkins...): each finding a failed
    /// test case, or one passed case when CMD finished in time.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
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

/// The control protocol of `mphang watch`, shown by `mphang watch --help` (docs/ci.md).
const WATCH_AFTER_HELP: &str = "\
Control lines (one per line, UTF-8), read from --control:
  start MS BOOT NODEID
                    a test starts; its timeout is MS milliseconds (- = --timeout); BOOT is
                    CLOCK_BOOTTIME in ns when it started (- = when mphang reads the line): the
                    processes started since are the test's
  limit MS          the running test's timeout becomes MS from its start, if that is sooner
  end NODEID        the test ended in time
  ack NODEID        PID failed the test on the signal (its children are then ended)
  late NODEID       PID took the signal when no test was running (nothing is ended)
On a timeout: the tree of PID is diagnosed, REPORT_DIR/<test>/report.{txt,json} written, one
JSON line {nodeid, message, report, hang, patterns} written to --reply, then --signal sent to
PID. If PID does not answer within --ack-timeout (its main thread cannot run Python code, e.g.
blocked in C with the GIL held), PID and its whole tree are ended and mphang says so on stderr.
mphang exits when the control input ends or PID exits. See docs/ci.md.";

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The process to watch (a pytest process) with its descendants.
    #[arg(long)]
    pub pid: i32,
    /// Where control lines come from: an inherited file descriptor number, or a path (a FIFO).
    #[arg(long, value_name = "FD|PATH")]
    pub control: String,
    /// Where the finding is written (one JSON line) before PID is signalled: fd number or path.
    #[arg(long, value_name = "FD|PATH")]
    pub reply: Option<String>,
    /// Timeout of a test whose start line gives none.
    #[arg(long, value_parser = parse_deadline, default_value = "10m")]
    pub timeout: Duration,
    /// Signal sent to PID when a test overruns (the plugin's handler fails the test).
    #[arg(long, value_name = "SIGNAL", default_value = "SIGUSR1", value_parser = parse_signal)]
    pub signal: i32,
    /// How long PID has to answer the signal before its whole tree is ended.
    #[arg(long, value_parser = parse_deadline, default_value = "5s")]
    pub ack_timeout: Duration,
    /// Where each overrun test's report.txt and report.json are written (one directory each).
    #[arg(long, value_name = "DIR", default_value = "mphang-report")]
    pub report_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when ending processes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Go to the background (a new session, not a child of the caller) and print its pid.
    #[arg(long)]
    pub detach: bool,
}

/// `SIGUSR1`, `USR1` or a number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| format!("{n} is not a signal number"));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| format!("`{s}` is not a signal name (e.g. SIGUSR1)"))
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Python interpreter to run the bundled fixture with (default: python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Print the JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Makes this the choice of every [`anstream::AutoStream`] the process writes through
    /// (`auto` leaves the decision to anstream: a terminal, NO_COLOR unset, TERM not dumb,
    /// CLICOLOR/CLICOLOR_FORCE honoured).
    pub fn apply(self) {
        match self {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::Always,
            ColorChoice::Never => anstream::ColorChoice::Never,
        }
        .write_global();
    }
}

/// The longest duration any option accepts (a year): anything longer is a typo, and deadlines
/// computed from it must not overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration with humantime (`500ms`, `90s`, `10m`, `1h30m`, `2h 5m`), or a bare number
/// of seconds. Longer than [`MAX_DURATION`] is an error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{s}` is too long (at most 365 days)"))?
    } else {
        humantime::parse_duration(s).map_err(|e| {
            format!("`{s}` is not a duration ({e}); write it like 500ms, 90s, 10m or 1h30m")
        })?
    };
    if d > MAX_DURATION {
        return Err(format!("`{s}` is too long (at most 365 days)"));
    }
    Ok(d)
}

/// A deadline (`--timeout`, `--stall`): a duration above zero. Zero is refused rather than read
/// as "fire at once" or "never": to never time out, leave the option out.
pub fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("0 would fire at once; to never time out, leave the option out".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for huge in [
            "99999999999999999999",
            "99999999999999999999s",
            "18446744073709551615s",
            "1000y",
            "366days",
        ] {
            let e = parse_duration(huge).expect_err(huge);
            assert!(
                e.contains("too long") || e.contains("not a duration"),
                "{huge}: {e}"
            );
        }
        assert_eq!(parse_duration("365days"), Ok(MAX_DURATION));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGUSR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("usr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn a_zero_deadline_is_refused() {
        assert!(parse_deadline("0").is_err());
        assert!(parse_deadline("0s").is_err());
        assert_eq!(parse_deadline("1ms"), Ok(Duration::from_millis(1)));
    }
}
