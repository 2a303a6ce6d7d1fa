//! `mphang attach <pid>`: the live terminal view (issue 5; not yet built).

use crate::cli::AttachArgs;
use crate::error::{Error, Result};

pub fn run(_args: &AttachArgs) -> Result<i32> {
    Err(Error::Usage(
        "`mphang attach` is not built yet; use `mphang report <pid>`".into(),
    ))
}
