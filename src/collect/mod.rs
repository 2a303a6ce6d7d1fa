//! Collection: reads a live process tree into a [`Snapshot`]. The only module that touches the OS.

pub mod native;
pub mod perms;

use crate::error::Result;
use crate::model::{Pid, Snapshot};
use std::time::Duration;

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Number of looks (1 = a single look, no progress check).
    pub looks: u32,
    /// Time between looks.
    pub interval: Duration,
    /// Read Python stacks with py-spy.
    pub python: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            looks: 2,
            interval: Duration::from_millis(500),
            python: true,
        }
    }
}

/// Collects the tree rooted at `root`.
pub fn collect(_root: Pid, _opts: &CollectOptions) -> Result<Snapshot> {
    Err(crate::error::Error::Usage("not built".into()))
}
