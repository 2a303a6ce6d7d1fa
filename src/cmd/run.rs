//! `mphang run -- CMD`: CI post-mortem (issue 6; not yet built).

use crate::cli::RunArgs;
use crate::error::{Error, Result};

pub fn run(_args: &RunArgs) -> Result<i32> {
    Err(Error::Usage("`mphang run` is not built yet".into()))
}
