//! `mphang report`.

use crate::error::{Error, Result};

pub fn run(_args: &crate::cli::ReportArgs) -> Result<i32> {
    Err(Error::Usage("not built".into()))
}
