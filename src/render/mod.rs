//! Output surfaces: the [`Report`] (snapshot + analysis) rendered as text or JSON.

pub mod compact;
pub mod json;
pub mod text;

use crate::analysis::Analysis;
use crate::model::Snapshot;
use serde::{Deserialize, Serialize};

/// Schema string of the `--json` report document.
pub const REPORT_SCHEMA: &str = "mphang/report/v1";

/// What every renderer takes: the raw snapshot and what was concluded from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// True when at least one finding of severity `hang` exists (exit code 1).
    pub hang: bool,
    pub findings: Vec<crate::analysis::Finding>,
    pub threads: Vec<crate::analysis::ThreadVerdict>,
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
