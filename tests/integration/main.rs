//! The single integration test binary: one module per area.

mod cli;
mod live;
mod native;
mod replay;
mod run;
mod tui;
mod util;
mod verdicts;
