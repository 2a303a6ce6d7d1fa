//! Asking before stopping threads all over the machine: `report 1`, or a tree with other users'
//! processes or system daemons (`collect::breadth`), needs a "y" on a terminal or `--yes`.
//! `--nonblocking` stops nothing and is not asked about.

use crate::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Ok when the tree of `root` is one program's, or the user agreed (`yes`, or "y" on a
/// terminal); the refusal otherwise.
pub fn broad_root(root: i32, yes: bool, nonblocking: bool) -> Result<()> {
    if yes || nonblocking {
        return Ok(());
    }
    let Some(b) = crate::collect::breadth::check(&[root]) else {
        return Ok(());
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::BroadRoot { why: b.why });
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "mphang: {}.\nStop each of its {} threads in {} processes for a moment to read native stacks? [y/N] ",
        b.why, b.threads, b.processes
    );
    let _ = err.flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::BroadRoot { why: b.why })
    }
}
