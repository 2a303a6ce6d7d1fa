//! The JSON contract: the published schemas (docs/report.schema.json, docs/snapshot.schema.json,
//! generated from the types) validate every recorded document, readers accept fields they do
//! not know, and a strict variant of the schemas (no property the types do not declare) holds
//! the recorded documents to exactly the fields the types have. Strictness lives here, in the
//! tests, not in the production types.

use crate::util::repo;
use mphang::render::{self, Report};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The published (open) report schema.
pub fn report_schema() -> Value {
    render::json::report_schema()
}

/// `schema` with every object closed: `additionalProperties: false` where an object lists its
/// properties, `unevaluatedProperties: false` where it also merges a `$ref` (an internally
/// tagged enum's newtype variant: the tag next to the inner struct's fields), in which case the
/// referenced definition is left open so the tag is not refused inside it.
pub fn strict(mut schema: Value) -> Value {
    let mut merged = HashSet::new();
    close(&mut schema, &mut merged);
    if let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) {
        for name in merged {
            if let Some(def) = defs.get_mut(&name).and_then(Value::as_object_mut) {
                def.remove("additionalProperties");
            }
        }
    }
    schema
}

fn close(v: &mut Value, merged: &mut HashSet<String>) {
    match v {
        Value::Object(o) => {
            if o.contains_key("properties") {
                match o.get("$ref").and_then(Value::as_str) {
                    Some(r) => {
                        merged.insert(r.trim_start_matches("#/$defs/").to_string());
                        o.insert("unevaluatedProperties".into(), json!(false));
                    }
                    None => {
                        o.insert("additionalProperties".into(), json!(false));
                    }
                }
            }
            for (_, child) in o.iter_mut() {
                close(child, merged);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| close(c, merged)),
        _ => {}
    }
}

/// The schema of one definition (`Finding`) of `schema`, with every definition kept for `$ref`s.
fn definition(schema: &Value, name: &str) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/$defs/{name}"),
        "$defs": schema["$defs"].clone(),
    })
}

/// Validates `doc` against `schema`; the errors, one line each, with where they are.
pub fn errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Panics unless the report `doc` validates against the strict report schema.
pub fn assert_valid_report(doc: &Value, what: &str) {
    let errs = errors(&strict(report_schema()), doc);
    assert!(errs.is_empty(), "{what}:\n{}", errs.join("\n"));
}

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// The JSON after insta's `---` header of a `.snap` file.
fn snap_body(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read snap");
    let body = text.splitn(3, "---\n").nth(2).expect("insta header");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_schemas_name_the_schema_strings() {
    assert_eq!(
        report_schema()["properties"]["schema"]["const"],
        render::REPORT_SCHEMA
    );
    assert_eq!(
        render::json::snapshot_schema()["properties"]["schema"]["const"],
        mphang::model::SCHEMA
    );
}

#[test]
fn every_recorded_snapshot_and_its_report_validate() {
    let snapshot_schema = strict(render::json::snapshot_schema());
    let snaps = files("fixtures/snapshots", ".json");
    assert!(snaps.len() >= 30, "recorded snapshots: {}", snaps.len());
    let mut failures = Vec::new();
    for path in &snaps {
        let text = std::fs::read_to_string(path).expect("read");
        let doc: Value = serde_json::from_str(&text).expect("json");
        let what = path
            .strip_prefix(repo())
            .unwrap_or(path)
            .display()
            .to_string();
        failures.extend(
            errors(&snapshot_schema, &doc)
                .into_iter()
                .map(|e| format!("{what} {e}")),
        );
        // The report mphang makes of it: verdicts, merged stacks, findings.
        let snap = render::json::parse_snapshot(&text).expect("parses");
        let report = serde_json::to_value(Report::analyze(snap)).expect("report");
        let errs = errors(&strict(report_schema()), &report);
        failures.extend(errs.into_iter().map(|e| format!("report of {what} {e}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_recorded_finding_validates() {
    let finding = definition(&strict(report_schema()), "Finding");
    let snaps = files("tests/integration/snapshots", "_findings.snap");
    assert!(snaps.len() >= 25, "recorded findings: {}", snaps.len());
    let mut failures = Vec::new();
    for path in &snaps {
        let Value::Array(findings) = snap_body(path) else {
            panic!("{}: not an array of findings", path.display());
        };
        for (i, f) in findings.iter().enumerate() {
            let what = format!(
                "{} [{i}]",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            failures.extend(
                errors(&finding, f)
                    .into_iter()
                    .map(|e| format!("{what} {e}")),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readers_accept_fields_they_do_not_know() {
    let path = repo().join("fixtures/snapshots/ipc_cycle.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    v["added_later"] = json!({"anything": [1, 2]});
    v["processes"][0]["added_later"] = json!(1);
    v["processes"][0]["threads"][0]["syscall"]["added_later"] = json!("x");
    let snap = render::json::parse_snapshot(&v.to_string()).expect("unknown fields are accepted");
    // The published schema accepts it too; the strict one (the tests' check) does not.
    let open = render::json::snapshot_schema();
    assert_eq!(errors(&open, &v), Vec::<String>::new());
    let strict_errors = errors(&strict(open), &v);
    assert_eq!(strict_errors.len(), 3, "{strict_errors:#?}");
    // ... and so does a report of it.
    let mut report = serde_json::to_value(Report::analyze(snap)).expect("report");
    report["findings"][0]["added_later"] = json!(true);
    let back: Report = serde_json::from_value(report.clone()).expect("unknown fields are accepted");
    assert_eq!(back.findings[0].pattern, "ipc_cycle");
    assert_eq!(errors(&report_schema(), &report), Vec::<String>::new());
    assert_eq!(errors(&strict(report_schema()), &report).len(), 1);
}

#[test]
fn optional_fields_are_not_required() {
    let schema = report_schema();
    let required = |def: &str| -> Vec<String> {
        schema["$defs"][def]["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Added after v1 shipped, or absent when empty: readers must not require them.
    for (def, field) in [
        ("Snapshot", "max_stop_us"),
        ("ProcessSnap", "ns_pid"),
        ("ThreadSnap", "native"),
        ("ThreadSnap", "later"),
        ("PyFrame", "entry"),
        ("ThreadVerdict", "stack"),
        ("ThreadVerdict", "housekeeping"),
        ("Finding", "culprit"),
    ] {
        assert!(
            !required(def).iter().any(|f| f == field),
            "{def}.{field} is required"
        );
    }
    assert!(required("Finding").iter().any(|f| f == "pattern"));
}

/// Every recorded snapshot's report validates when written compact too (the shorthands of
/// reports above 256 threads: `providers_all_of`, `stack_as`, `native_as`).
#[test]
fn every_recorded_report_validates_when_written_compact() {
    let schema = strict(report_schema());
    let mut failures = Vec::new();
    for path in files("fixtures/snapshots", ".json") {
        let text = std::fs::read_to_string(&path).expect("read");
        let snap = render::json::parse_snapshot(&text).expect("parses");
        let mut report = Report::analyze(snap);
        let mut out = Vec::new();
        render::json::write_with(&mut report, true, &mut out).expect("write");
        let doc: Value = serde_json::from_slice(&out).expect("json");
        let what = path.file_name().unwrap_or_default().to_string_lossy();
        failures.extend(
            errors(&schema, &doc)
                .into_iter()
                .map(|e| format!("compact report of {what} {e}")),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The per-host snapshots of the multi-host scenarios validate, and so does `merge --json` of
/// each scenario.
#[test]
fn multi_host_snapshots_and_their_merge_validate() {
    let snapshot_schema = strict(render::json::snapshot_schema());
    let report_schema = strict(report_schema());
    let mut scenarios: Vec<PathBuf> =
        std::fs::read_dir(repo().join("fixtures/snapshots/multi_host"))
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 4, "scenarios: {scenarios:?}");
    let mut failures = Vec::new();
    for dir in &scenarios {
        let rel = dir.strip_prefix(repo()).expect("in the repo");
        let nodes = files(&rel.to_string_lossy(), ".json");
        assert!(nodes.len() >= 2, "{}: {nodes:?}", rel.display());
        for n in &nodes {
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(n).expect("read")).expect("json");
            failures.extend(
                errors(&snapshot_schema, &doc)
                    .into_iter()
                    .map(|e| format!("{} {e}", n.display())),
            );
        }
        let o = crate::util::bin()
            .args(["merge", "--json"])
            .args(&nodes)
            .output()
            .expect("run merge");
        let doc: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("merge of {}: {e}", rel.display()));
        failures.extend(
            errors(&report_schema, &doc)
                .into_iter()
                .map(|e| format!("merge of {} {e}", rel.display())),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
