//! Lenient reading of reports and snapshots written by other mphang versions (`mphang merge`):
//! fields this version does not know are dropped (as by every reader), and an enum value it
//! does not know becomes that enum's "unknown" value, noted; everything else must parse.
//! `--from` refuses unknown enum values.

use crate::model::Snapshot;
use serde_json::Value;

/// What was dropped or replaced to read a document, as `path: what` lines.
pub type Notes = Vec<String>;

/// Reads a snapshot (`mphang/snapshot/v1`) or the snapshot of a report (`mphang/report/v1`;
/// its analysis is recomputed by whoever reads it, so the rest is not read).
pub fn parse_snapshot(text: &str) -> Result<(Snapshot, Notes), String> {
    let (mut snap, notes) = parse_unexpanded(text)?;
    super::compact::expand_snapshot(&mut snap);
    Ok((snap, notes))
}

/// The snapshot of a document this version reads as it is (typed, no intermediate tree), or
/// `None`: what `--from` tries first when nothing in the text needs escaping.
pub fn parse_typed(text: &str) -> Option<Snapshot> {
    let mut snap = strict(text).ok()?;
    super::compact::expand_snapshot(&mut snap);
    Some(snap)
}

/// [`parse_snapshot`] with a compact report's `native_as` left as written.
fn parse_unexpanded(text: &str) -> Result<(Snapshot, Notes), String> {
    // Fast path: a document this version reads as it is (typed, no intermediate tree).
    if let Ok(s) = strict(text) {
        return Ok((s, Vec::new()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut v = match (super::doc_kind(&v)?, v) {
        (super::DocKind::Snapshot, v) => v,
        (super::DocKind::Report, Value::Object(mut m)) => m
            .remove("snapshot")
            .ok_or("a report without \"snapshot\"")?,
        (super::DocKind::Report, _) => return Err("not a JSON object".into()),
    };
    let mut notes = Vec::new();
    // Each round fixes one kind of problem everywhere it occurs; a bounded number of rounds.
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, Snapshot>(&v) {
            Ok(s) => return Ok((s, notes)),
            Err(e) => e,
        };
        let path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { .. } => Some(Seg::Index),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let msg = err.inner().to_string();
        let fixed = match quoted_after(&msg, "unknown variant `") {
            Some(variant) => fallback_variant(&mut v, &path, &variant, &mut notes),
            None => false,
        };
        if !fixed {
            return Err(format!("{}: {msg}", shown(&path)));
        }
    }
    Err("too many unknown values".into())
}

/// One step of an error's path; every index is a wildcard (the same unknown value is usually
/// in every process or thread).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index,
}

/// A snapshot, or a report's snapshot (the rest of a report is skipped, not checked).
fn strict(text: &str) -> Result<Snapshot, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Doc {
        schema: String,
        snapshot: Option<Snapshot>,
    }
    if text.trim_start().starts_with('{') {
        // Cheap test of which schema before a full typed parse.
        let end = (0..=text.len().min(200))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let head = &text[..end];
        if head.contains(super::REPORT_SCHEMA) {
            let d: Doc = serde_json::from_str(text)?;
            if d.schema == super::REPORT_SCHEMA {
                if let Some(s) = d.snapshot {
                    return Ok(s);
                }
            }
        } else if head.contains(crate::model::SCHEMA) {
            return serde_json::from_str(text);
        }
    }
    Err(serde::de::Error::custom("not a known schema at the top"))
}

/// The text between `prefix` and the next backquote.
fn quoted_after(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.split_once(prefix)?.1;
    Some(rest.split('`').next()?.to_string())
}

fn shown(path: &[Seg]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index => s.push_str("[*]"),
        }
    }
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

/// Applies `f` to every value at `path` (indices match every element). Returns how many
/// times `f` changed something.
fn edit_all(v: &mut Value, path: &[Seg], f: &mut dyn FnMut(&mut Value) -> bool) -> usize {
    match (path.split_first(), v) {
        (None, v) => usize::from(f(v)),
        (Some((Seg::Index, rest)), Value::Array(items)) => {
            items.iter_mut().map(|i| edit_all(i, rest, f)).sum()
        }
        (Some((Seg::Key(k), rest)), Value::Object(m)) => match m.get_mut(k) {
            Some(child) => edit_all(child, rest, f),
            None => 0,
        },
        _ => 0,
    }
}

/// Replaces an enum value this version does not know with the enum's "unknown" value.
fn fallback_variant(v: &mut Value, path: &[Seg], variant: &str, notes: &mut Notes) -> bool {
    // A tagged enum's path ends with its tag field (`...kind.kind`); the tag's parent is the
    // enum's own field.
    let names: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index => None,
        })
        .collect();
    let (target, replacement): (&[Seg], Value) = match names.as_slice() {
        [.., "fds", "kind", "kind"] => (
            &path[..path.len() - 1],
            serde_json::json!({"kind": "unknown", "target": null}),
        ),
        [.., "syscall", "kind"] => (
            &path[..path.len() - 1],
            serde_json::json!({"kind": "unknown"}),
        ),
        [.., "decoded", "call"] => (
            &path[..path.len() - 1],
            serde_json::json!({"call": "other"}),
        ),
        [.., "region", "region"] => (
            &path[..path.len() - 1],
            serde_json::json!({"region": "other", "path": null}),
        ),
        [.., "role"] => (path, Value::from("python")),
        [.., "access"] => (path, Value::from("unknown")),
        [.., "diagnostics", "kind"] => (path, Value::from("failed")),
        [.., "diagnostics", "stage"] => (path, Value::from("process")),
        _ => return false,
    };
    let mut n = 0;
    let _ = edit_all(v, target, &mut |x| {
        let unknown = match x {
            Value::String(s) => s == variant,
            Value::Object(m) => m.values().any(|t| t.as_str() == Some(variant)),
            _ => false,
        };
        if unknown {
            *x = replacement.clone();
            n += 1;
        }
        unknown
    });
    notes.push(format!(
        "{}: unknown value `{variant}` read as unknown",
        shown(target)
    ));
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        serde_json::json!({
            "schema": "mphang/snapshot/v1", "mphang_version": "9.9.9", "taken_at_ms": 1,
            "root": 10, "clock_ticks": 100, "looks": 1, "interval_ms": 500, "collect_ms": 3,
            "processes": [
                {"pid": 10, "ppid": 1, "comm": "python3", "cmdline": [], "exe": null,
                 "uid": 0, "state": "S", "start_ticks": 1, "cpu_ticks": 0, "num_threads": 1,
                 "nofile_limit": null, "fd_count": 1, "python_version": null, "role": "main",
                 "threads": [{"tid": 10, "comm": "python3", "state": "S", "wchan": null,
                              "syscall": {"kind": "running"}, "cpu_ticks": 0, "py": null,
                              "from_the_future": true}],
                 "fds": [{"fd": 3, "access": "read", "kind": {"kind": "quantum_pipe", "x": 1}},
                         {"fd": 4, "access": "read", "kind": {"kind": "pipe", "inode": 5, "extra": 1}}],
                 "sem_maps": [], "new_field": {"a": 1}}
            ],
            "pipes": [], "semaphores": [], "gone": [], "diagnostics": [],
            "something_new": [1, 2]
        })
    }

    #[test]
    fn newer_fields_and_values_are_dropped_with_notes() {
        let text = minimal().to_string();
        let (snap, notes) = parse_snapshot(&text).expect("lenient parse");
        assert_eq!(snap.processes.len(), 1);
        assert_eq!(
            snap.processes[0].fds[0].kind,
            crate::model::FdKind::Unknown { target: None }
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        // The strict reader refuses the same text.
        assert!(super::super::json::parse_snapshot(&text).is_err());
    }

    #[test]
    fn broken_documents_still_fail() {
        let mut v = minimal();
        v["processes"][0]["pid"] = Value::from("not a pid");
        assert!(parse_snapshot(&v.to_string()).is_err());
        assert!(parse_snapshot("{}").is_err());
    }
}
