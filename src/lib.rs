//! mphang: diagnose hung Python multiprocessing process trees from the outside.
//!
//! The data flows one way:
//! `collect` (reads /proc, memory, py-spy) -> [`model::Snapshot`] (serializable) ->
//! [`analysis::analyze`] (wait-for graph, stuck-set fixpoint, named patterns) ->
//! `render` (text, JSON) and `tui` -> `cmd` (report, attach, run, demo).
//!
//! ```no_run
//! use mphang::{analysis, collect, model::Pid};
//! let snap = collect::collect(Pid(1234), &collect::CollectOptions::default()).unwrap();
//! let analysis = analysis::analyze(&snap);
//! for f in &analysis.findings {
//!     println!("{}: {}", f.pattern, f.summary);
//! }
//! ```

pub mod analysis;
pub mod cli;
pub mod cmd;
pub mod collect;
pub mod error;
pub mod model;
pub mod render;
pub mod tui;

pub use analysis::{analyze, Analysis, Finding};
pub use error::Error;
pub use model::Snapshot;
