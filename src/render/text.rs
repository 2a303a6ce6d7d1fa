//! Human-readable report: findings first, then the tree with one line per thread, then stacks.

use super::Report;
use std::io::Write;

/// Text rendering options.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Emit ANSI colors (only on a tty unless forced).
    pub color: bool,
}

pub fn render(report: &Report, _opts: &TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{} processes", report.snapshot.processes.len())
}
