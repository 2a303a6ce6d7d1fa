//! The single integration test binary: one module per area.

mod builds;
mod cli;
mod live;
mod native;
mod replay;
mod replay_pythons;
mod run;
mod tui;
mod util;
