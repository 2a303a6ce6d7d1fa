//! `mphang demo`: starts the bundled join-before-drain fixture, waits until it is hung,
//! diagnoses it, and ends it. Shows a new user the tool working in one command.

use super::fixture::Fixture;
use crate::cli::DemoArgs;
use crate::collect::CollectOptions;
use crate::error::{Error, Result};
use crate::model::Pid;
use crate::render::Report;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const HELPER: &str = include_str!("../../fixtures/_fixture.py");
const SCRIPT: &str = include_str!("../../fixtures/join_before_drain.py");

/// Finds a Python: `--python`, `$MPHANG_PYTHON`, then `python3` on PATH.
fn python(args: &DemoArgs) -> PathBuf {
    args.python
        .clone()
        .or_else(|| std::env::var_os("MPHANG_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

pub fn run(args: &DemoArgs) -> Result<i32> {
    let tmp = tempfile::Builder::new()
        .prefix("mphang-demo-")
        .tempdir()
        .map_err(|e| Error::Io {
            context: "creating a directory for the demo program".into(),
            source: e,
        })?;
    let dir = tmp.path().to_path_buf();
    let io = |e: std::io::Error| Error::Io {
        context: format!("writing the demo program to {}", dir.display()),
        source: e,
    };
    std::fs::write(dir.join("_fixture.py"), HELPER).map_err(io)?;
    let script = dir.join("join_before_drain.py");
    std::fs::write(&script, SCRIPT).map_err(io)?;
    let py = python(args);
    if !args.json {
        say(format!(
            "mphang demo: starting {} {} (a parent that joins its child before draining the queue the child filled)...",
            py.display(),
            script.display()
        ));
    }
    let result = (|| {
        let fx =
            Fixture::start(&py, &script, Duration::from_secs(30)).map_err(|e| Error::Spawn {
                command: format!("{} {}", py.display(), script.display()),
                source: std::io::Error::other(e),
            })?;
        if !args.json {
            say(format!(
                "mphang demo: it is hung; running `mphang report {}`:\n",
                fx.root()
            ));
        }
        let snap = super::collect_settled(Pid(fx.root()), &CollectOptions::default())?;
        let mut report = Report::analyze(snap);
        super::report::emit(&mut report, args.json)?;
        drop(fx);
        if !args.json {
            say("mphang demo: the demo's processes have been ended.".to_string());
        }
        Ok(if report.hang {
            super::EXIT_HANG
        } else {
            super::EXIT_OK
        })
    })();
    drop(tmp);
    result
}

/// Progress messages go to stderr; a closed stderr is not an error.
fn say(msg: String) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
