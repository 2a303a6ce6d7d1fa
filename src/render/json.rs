//! JSON report (`mphang/report/v1`): one document for the whole tree, documented in
//! docs/json-format.md, with JSON Schemas generated from the types (docs/report.schema.json,
//! docs/snapshot.schema.json). Readers accept unknown fields, so the format can grow; the tests
//! check every recorded document against a strict variant of the schema.

use super::Report;
use std::io::Write;

/// Writes the report as pretty JSON followed by a newline; above 256 threads compact instead
/// (`super::compact`: shorthands for repeated parts, no indentation). Every report writes a
/// process's fds as another's where that is shorter (`fds_as`). Works on a copy;
/// [`write_in_place`] spares it.
pub fn write(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    write_in_place(&mut report.clone(), out)
}

/// [`write`] on a report that may be changed while it is written (compacted in place, then
/// restored): no copy of a large report.
pub fn write_in_place(report: &mut Report, out: &mut dyn Write) -> std::io::Result<()> {
    write_with(report, false, out)
}

/// [`write_in_place`], compact whatever the size when `compact`.
pub fn write_with(report: &mut Report, compact: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let all = compact || report.threads.len() > super::compact::AUTO_THREADS;
    let undo = super::compact::compact(report, all);
    // `From` keeps an I/O error's kind (a closed pipe stays `BrokenPipe`).
    let r = if all {
        // Shorthands, and no indentation (half the size again): `jq .` pretty-prints it.
        serde_json::to_writer(&mut *out, &*report)
    } else {
        serde_json::to_writer_pretty(&mut *out, &*report)
    }
    .map_err(std::io::Error::from);
    super::compact::restore(report, undo);
    r?;
    writeln!(out)
}

/// Parses a `--json` report (either form: the shorthands of compact reports are expanded).
pub fn parse_report(text: &str) -> Result<Report, String> {
    let mut r: Report = serde_json::from_str(text).map_err(|e| e.to_string())?;
    super::compact::expand_report(&mut r);
    Ok(r)
}

/// Parses either a saved snapshot (`mphang/snapshot/v1`) or a `--json` report
/// (`mphang/report/v1`, whose snapshot is taken) into a snapshot.
pub fn parse_snapshot(text: &str) -> Result<crate::model::Snapshot, String> {
    parse_snapshot_with(text, |_| {})
}

/// [`parse_snapshot`], with `edit` applied to the JSON value before it becomes types.
pub fn parse_snapshot_with(
    text: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<crate::model::Snapshot, String> {
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    edit(&mut v);
    let mut snap: crate::model::Snapshot = match super::doc_kind(&v)? {
        super::DocKind::Snapshot => serde_json::from_value(v).map_err(|e| e.to_string())?,
        super::DocKind::Report => {
            let r: Report = serde_json::from_value(v).map_err(|e| e.to_string())?;
            r.snapshot
        }
    };
    super::compact::expand_snapshot(&mut snap);
    Ok(snap)
}

/// The JSON Schema (draft 2020-12) of the `mphang/report/v1` document, generated from the types.
pub fn report_schema() -> serde_json::Value {
    schemars::schema_for!(Report).to_value()
}

/// The JSON Schema (draft 2020-12) of a `mphang/snapshot/v1` document (`--save`).
pub fn snapshot_schema() -> serde_json::Value {
    schemars::schema_for!(crate::model::Snapshot).to_value()
}
