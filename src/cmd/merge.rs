//! `mphang merge a.json b.json …`: per-host reports read leniently (any mphang version),
//! combined into one host-qualified snapshot, analysed by the same engine, printed as text or
//! JSON; exit 0/1/2 like `report`.

use crate::cli::MergeArgs;
use crate::error::{Error, Result};
use crate::model::combine::{self, Input};
use crate::render::{self, Report};
use std::io::IsTerminal;

pub fn run(args: &MergeArgs) -> Result<i32> {
    let mut inputs = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ReadInput {
            path: path.clone(),
            source: e,
        })?;
        let (snapshot, notes) =
            render::lenient::parse_snapshot(&text).map_err(|message| Error::BadSnapshot {
                path: path.clone(),
                message,
            })?;
        for n in notes {
            eprintln!("mphang: {}: {n}", path.display());
        }
        inputs.push(Input {
            file: path.display().to_string(),
            snapshot,
        });
    }
    let snap = combine::combine(inputs).map_err(Error::Usage)?;
    if let Some(path) = &args.save {
        super::report::save(path, &snap)?;
    }
    let report = Report::analyze(snap);
    let color = args.color.enabled(std::io::stdout().is_terminal());
    super::report::emit(&report, args.json, color)?;
    Ok(if report.hang {
        super::EXIT_HANG
    } else {
        super::EXIT_OK
    })
}
