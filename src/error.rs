//! Typed errors of the tool, each with one plain remedy (`hint`) rendered once by `main`.

use crate::model::Pid;
use std::path::PathBuf;

/// Everything that makes a command fail (exit code 2). Partial failures inside a tree are not
/// errors; they are `model::Diagnostic`s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("there is no process with pid {0}")]
    NoSuchProcess(Pid),
    #[error("pid {0} is not a process mphang can diagnose (pid 0 or a kernel thread)")]
    NotAUserProcess(Pid),
    #[error("permission denied reading process {pid}: {why}")]
    PermissionDenied { pid: Pid, why: String },
    #[error("cannot read {path}: {source}")]
    ReadInput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to read {path}: {why}")]
    InputRefused { path: PathBuf, why: String },
    #[error("refusing to stop threads all over the machine: {why}")]
    BroadRoot { why: String },
    #[error("{path} is not a valid mphang snapshot: {message}")]
    BadSnapshot { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    WriteOutput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Terminal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// One sentence telling the user what to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NoSuchProcess(_) => Some(
                "check the pid with `ps -ef` or `pgrep -f yourscript`; it may have exited".into(),
            ),
            Error::NotAUserProcess(_) => {
                Some("name the pid of a Python process (`pgrep -f python`)".into())
            }
            Error::PermissionDenied { .. } => Some(crate::collect::perms::remedy()),
            Error::BadSnapshot { .. } => Some(
                "pass a file written by `mphang report --save FILE` or `mphang report --json`"
                    .into(),
            ),
            Error::ReadInput { .. } => Some("check the path and that you can read it".into()),
            Error::InputRefused { .. } => Some(format!(
                "pass a regular file written by `mphang report --save FILE` or `--json` (at most \
                 {} MiB; MPHANG_MAX_INPUT_MB raises the limit)",
                crate::cmd::report::max_input_bytes() >> 20
            )),
            Error::BroadRoot { .. } => Some(
                "name the pid of your program instead, or pass --yes (or answer y on a terminal) \
                 to diagnose it anyway"
                    .into(),
            ),
            Error::Terminal(_) => {
                Some("use `mphang report <pid>` where there is no terminal".into())
            }
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
