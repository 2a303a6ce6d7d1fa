//! Output surfaces: the [`Report`] (snapshot + analysis) rendered as text or JSON.

pub mod compact;
pub mod json;
pub mod lenient;
mod multi;
pub mod text;

use crate::analysis::Analysis;
use crate::model::Snapshot;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Schema string of the `--json` report document.
pub const REPORT_SCHEMA: &str = "mphang/report/v1";

/// The two documents mphang reads back.
pub(crate) enum DocKind {
    /// `mphang/snapshot/v1`.
    Snapshot,
    /// `mphang/report/v1`.
    Report,
}

/// Which document a JSON value is, from its `schema` field; the error says what is read.
pub(crate) fn doc_kind(v: &serde_json::Value) -> Result<DocKind, String> {
    match v.get("schema").and_then(|s| s.as_str()).unwrap_or("") {
        crate::model::SCHEMA => Ok(DocKind::Snapshot),
        REPORT_SCHEMA => Ok(DocKind::Report),
        "" => Err("no \"schema\" field".into()),
        other => Err(format!(
            "schema is \"{other}\"; this mphang reads \"{}\" and \"{REPORT_SCHEMA}\"",
            crate::model::SCHEMA
        )),
    }
}

/// What every renderer takes: the raw snapshot and what was concluded from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Always `mphang/report/v1` ([`REPORT_SCHEMA`]).
    #[schemars(extend("const" = "mphang/report/v1"))]
    pub schema: String,
    /// True when at least one finding of severity `hang` exists (exit code 1).
    pub hang: bool,
    pub findings: Vec<crate::analysis::Finding>,
    pub threads: Vec<crate::analysis::ThreadVerdict>,
    /// Where the ranks of a symmetric job are (two or more ranks found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roll_call: Option<crate::analysis::RollCall>,
    /// Waits whose other side is on a host that sent no report (`mphang merge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<crate::analysis::UnknownEdge>,
    pub snapshot: Snapshot,
}

impl Report {
    pub fn new(snapshot: Snapshot, analysis: Analysis) -> Report {
        let hang = analysis
            .findings
            .iter()
            .any(|f| f.severity == crate::analysis::Severity::Hang);
        Report {
            schema: REPORT_SCHEMA.to_string(),
            hang,
            findings: analysis.findings,
            threads: analysis.threads,
            roll_call: analysis.roll_call,
            unknown: analysis.unknown,
            snapshot,
        }
    }

    /// Builds a report by analysing `snapshot`.
    pub fn analyze(snapshot: Snapshot) -> Report {
        let analysis = crate::analysis::analyze(&snapshot);
        Report::new(snapshot, analysis)
    }

    pub fn verdict(&self, r: crate::model::ThreadRef) -> Option<&crate::analysis::ThreadVerdict> {
        self.threads.iter().find(|v| v.thread == r)
    }
}
