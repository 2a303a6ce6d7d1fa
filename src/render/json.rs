//! JSON report (`mphang/report/v1`): one document for the whole tree, documented in
//! docs/json-format.md, with JSON Schemas generated from the types (docs/report.schema.json,
//! docs/snapshot.schema.json). Readers accept unknown fields, so the format can grow; the tests
//! check every recorded document against a strict variant of the schema.

use super::Report;
use std::io::Write;

/// Writes the report as pretty JSON followed by a newline; above 256 threads compact instead
/// (`super::compact`: shorthands for repeated parts, no indentation).
pub fn write(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    write_with(report, false, out)
}

/// [`write`], compact whatever the size when `compact`.
pub fn write_with(report: &Report, compact: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if compact || report.threads.len() > super::compact::AUTO_THREADS {
        // Shorthands, and no indentation (half the size again): `jq .` pretty-prints it.
        let v = super::compact::to_value(report).map_err(std::io::Error::other)?;
        serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
    } else {
        // `From` keeps an I/O error's kind (a closed pipe stays `BrokenPipe`).
        serde_json::to_writer_pretty(&mut *out, report).map_err(std::io::Error::from)?;
    }
    writeln!(out)
}

/// Parses a `--json` report (either form: the shorthands of compact reports are expanded).
pub fn parse_report(text: &str) -> Result<Report, String> {
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    super::compact::expand(&mut v);
    serde_json::from_value(v).map_err(|e| e.to_string())
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
    super::compact::expand(&mut v);
    edit(&mut v);
    let schema = v.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    match schema {
        crate::model::SCHEMA => serde_json::from_value(v).map_err(|e| e.to_string()),
        super::REPORT_SCHEMA => {
            let r: Report = serde_json::from_value(v).map_err(|e| e.to_string())?;
            Ok(r.snapshot)
        }
        "" => Err("no \"schema\" field".into()),
        other => Err(format!(
            "schema is \"{other}\"; this mphang reads \"{}\" and \"{}\"",
            crate::model::SCHEMA,
            super::REPORT_SCHEMA
        )),
    }
}

/// The JSON Schema (draft 2020-12) of the `mphang/report/v1` document, generated from the types.
pub fn report_schema() -> serde_json::Value {
    schemars::schema_for!(Report).to_value()
}

/// The JSON Schema (draft 2020-12) of a `mphang/snapshot/v1` document (`--save`).
pub fn snapshot_schema() -> serde_json::Value {
    schemars::schema_for!(crate::model::Snapshot).to_value()
}
