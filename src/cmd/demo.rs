//! `mphang demo`.

use crate::error::{Error, Result};

pub fn run(_args: &crate::cli::DemoArgs) -> Result<i32> {
    Err(Error::Usage("not built".into()))
}
