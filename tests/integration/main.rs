//! The single integration test binary: one module per area.

mod builds;
mod cli;
mod generated;
mod live;
mod multi_host;
mod native;
mod packaging;
mod past;
mod pytest_plugin;
mod registry;
mod replay;
mod replay_pythons;
mod run;
mod safety;
mod schema;
mod tui;
mod util;
mod verdicts;
