//! The single integration test binary: one module per area.

mod cli;
mod live;
mod multi_host;
mod native;
mod replay;
mod run;
mod tui;
mod util;
