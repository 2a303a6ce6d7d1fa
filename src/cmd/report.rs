//! `mphang report <pid> | --from FILE`: one-shot diagnosis, text or JSON; exit 0/1/2.

use crate::cli::ReportArgs;
use crate::collect::CollectOptions;
use crate::error::{Error, Result};
use crate::model::{Pid, Snapshot};
use crate::render::{self, Report};
use std::io::{IsTerminal, Write};

pub fn run(args: &ReportArgs) -> Result<i32> {
    let snap = match (&args.from, args.pid) {
        (Some(path), _) => load(path)?,
        (None, Some(pid)) => super::collect_settled(
            Pid(pid),
            &CollectOptions {
                looks: args.sample.samples,
                interval: args.sample.interval,
                native: !args.sample.nonblocking,
                ..CollectOptions::default()
            },
        )?,
        (None, None) => return Err(Error::Usage("name a pid or --from FILE".into())),
    };
    if let Some(path) = &args.save {
        save(path, &snap)?;
    }
    let report = Report::analyze(snap);
    let stdout = std::io::stdout();
    let color = args.color.enabled(stdout.is_terminal());
    emit(&report, args.json, color)?;
    Ok(if report.hang {
        super::EXIT_HANG
    } else {
        super::EXIT_OK
    })
}

/// Prints a report to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(report: &Report, json: bool, color: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = if json {
        render::json::write(report, &mut out)
    } else {
        render::text::render(report, &render::text::TextOptions { color }, &mut out)
    };
    match r.and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io {
            context: "writing the report".into(),
            source: e,
        }),
        Ok(()) => Ok(()),
    }
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
