//! `mphang merge a.json b.json …`: per-host reports read leniently (any mphang version),
//! bounded and escaped like `--from`, combined into one host-qualified snapshot, analysed by
//! the same engine, printed as text or JSON; exit 0/1/2 like `report`. `MPHANG_TRACE=1`
//! prints the time of each phase.

use crate::cli::MergeArgs;
use crate::error::{Error, Result};
use crate::model::combine::{self, Input};
use crate::render::{self, Report};
use std::path::{Path, PathBuf};

pub fn run(args: &MergeArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let trace = std::env::var_os("MPHANG_TRACE").is_some();
    let phase = |name: &str| {
        if trace {
            eprintln!(
                "{:>7.1} ms {name}",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    };
    let mut inputs = Vec::new();
    for (path, read) in args.files.iter().zip(read_all(&args.files)) {
        let (snapshot, notes) = read?;
        for n in notes {
            eprintln!("mphang: {}: {n}", path.display());
        }
        inputs.push(Input {
            file: path.display().to_string(),
            snapshot,
        });
    }
    phase("read");
    let snap = combine::combine(inputs).map_err(Error::Usage)?;
    phase("combine");
    if let Some(path) = &args.save {
        super::report::save(path, &snap)?;
    }
    let mut report = Report::analyze(snap);
    phase("analyze");
    super::report::emit(&mut report, args.json)?;
    phase("render");
    let code = if report.hang {
        super::EXIT_HANG
    } else {
        super::EXIT_OK
    };
    // The process ends now: freeing a merged report's millions of small allocations one by one
    // would cost more than the rest of the render.
    std::mem::forget(report);
    Ok(code)
}

type Read = Result<(crate::model::Snapshot, render::lenient::Notes)>;

/// Reads and parses every file, on as many threads as there are cores, in order.
fn read_all(files: &[PathBuf]) -> Vec<Read> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let h = s.spawn(move || part.iter().map(|p| read_one(p)).collect::<Vec<Read>>());
                (part.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(Error::Usage("a report reader panicked".into())))
                        .collect()
                })
            })
            .collect()
    })
}

/// Reads one report as `--from` reads a file (a regular file within the size limit), and
/// escapes its strings when any could hold a control character (reports are redacted, or not,
/// by the `report` that wrote them).
fn read_one(path: &Path) -> Read {
    let text = super::report::read_input(path)?;
    let (mut snap, notes) =
        render::lenient::parse_snapshot(&text).map_err(|message| Error::BadSnapshot {
            path: path.to_path_buf(),
            message,
        })?;
    if crate::model::safe::json_needs_escape(&text) {
        crate::model::safe::sanitize(&mut snap, false);
    }
    Ok((snap, notes))
}
