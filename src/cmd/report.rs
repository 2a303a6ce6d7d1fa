//! `mphang report <pid> | --from FILE`: one-shot diagnosis, text or JSON; exit 0/1/2.

use crate::cli::ReportArgs;
use crate::collect::select::{self, Selector};
use crate::collect::{self, CollectOptions};
use crate::error::{Error, Result};
use crate::model::{Pid, Snapshot};
use crate::render::{self, Report};
use std::io::Write;

pub fn run(args: &ReportArgs) -> Result<i32> {
    let opts = CollectOptions {
        looks: args.sample.samples,
        interval: args.sample.interval,
        native: !args.sample.nonblocking,
        ..CollectOptions::default()
    };
    let selector = match (&args.job_env, &args.cgroup) {
        (Some(spec), _) => Some(Selector::env(spec)?),
        (None, Some(path)) => Some(Selector::Cgroup(path.clone())),
        (None, None) => None,
    };
    let snap = match (&args.from, args.pid, selector) {
        (Some(path), _, _) => load(path)?,
        (None, Some(pid), _) => collect::collect(Pid(pid), &opts)?,
        (None, None, Some(sel)) => {
            let roots = select::roots(&sel)?;
            let opts = CollectOptions {
                extra_roots: roots[1..].to_vec(),
                ..opts
            };
            collect::collect(roots[0], &opts)?
        }
        (None, None, None) => return Err(Error::Usage("name a pid or --from FILE".into())),
    };
    if let Some(path) = &args.save {
        save(path, &snap)?;
    }
    let report = Report::analyze(snap);
    emit(&report, args.json)?;
    Ok(if report.hang {
        super::EXIT_HANG
    } else {
        super::EXIT_OK
    })
}

/// Prints a report to stdout, text through anstream (colors as `--color` and the terminal
/// decide); a closed pipe (`| head`) is not an error.
pub fn emit(report: &Report, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let r = if json {
        // Buffered: stdout is line-buffered, and a pretty JSON report has a line per field.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        render::json::write(report, &mut out).and_then(|()| out.flush())
    } else {
        let mut out = anstream::AutoStream::auto(stdout.lock());
        let opts = render::text::TextOptions { color: true };
        render::text::render(report, &opts, &mut out).and_then(|()| out.flush())
    };
    super::quiet_pipe(r)
}

/// Reads a snapshot saved by `--save` or a `--json` report.
pub fn load(path: &std::path::Path) -> Result<Snapshot> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::ReadInput {
        path: path.to_path_buf(),
        source: e,
    })?;
    render::json::parse_snapshot(&text).map_err(|message| Error::BadSnapshot {
        path: path.to_path_buf(),
        message,
    })
}

/// Writes the raw snapshot (`mphang/snapshot/v1`).
pub fn save(path: &std::path::Path, snap: &Snapshot) -> Result<()> {
    let text = serde_json::to_string_pretty(snap).map_err(|e| Error::Io {
        context: "serializing the snapshot".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::WriteOutput {
        path: path.to_path_buf(),
        source: e,
    })
}
