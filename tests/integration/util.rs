//! Shared test helpers: the built binary, the Pythons to run fixtures on, fixture guards
//! (via `mphang::cmd::fixture`), and reading `# CULPRIT` markers from fixture sources.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub use mphang::cmd::fixture::Fixture;

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mphang"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_path(name: &str) -> PathBuf {
    repo().join("fixtures").join(format!("{name}.py"))
}

/// The pyenv root: `$PYENV_ROOT` or `~/.pyenv`.
fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        })
}

/// Every CPython 3.8–3.13 under `$(pyenv root)/versions`; prints a loud skip line for each
/// minor version that is missing. `MPHANG_TEST_PYTHONS=3.11,3.13` narrows the set.
pub fn pythons() -> Vec<(String, PathBuf)> {
    let only: Option<Vec<String>> = std::env::var("MPHANG_TEST_PYTHONS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let mut out = Vec::new();
    let versions = pyenv_root().join("versions");
    for minor in 8..=13 {
        let want = format!("3.{minor}");
        if only.as_ref().is_some_and(|o| !o.contains(&want)) {
            continue;
        }
        let found = std::fs::read_dir(&versions).ok().and_then(|rd| {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{want}.")))
                })
                .collect();
            v.sort();
            v.pop()
        });
        match found.map(|d| d.join("bin").join("python3")).filter(|p| p.exists()) {
            Some(p) => out.push((want, p)),
            None => eprintln!(
                "skipping: CPython {want} not found under {} (install it with `pyenv install {want}`)",
                versions.display()
            ),
        }
    }
    if out.is_empty() {
        if let Some(p) = which("python3") {
            eprintln!("skipping: no pyenv CPython 3.8-3.13; using python3 on PATH only");
            out.push(("python3".into(), p));
        }
    }
    out
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts a fixture and waits until it is hung (or ready, for negative controls).
pub fn start(python: &Path, name: &str) -> Fixture {
    start_with(python, name, &[])
}

/// [`start`] with extra environment variables (e.g. [`NOISE`]).
pub fn start_with(python: &Path, name: &str, env: &[(&str, &str)]) -> Fixture {
    match Fixture::start_with_env(python, &fixture_path(name), Duration::from_secs(60), env) {
        Ok(f) => f,
        Err(e) => panic!("fixture {name} with {}: {e}", python.display()),
    }
}

/// The environment that makes every fixture process carry noise threads and processes
/// (`fixtures/_fixture.py`, `start_noise`).
pub const NOISE: &[(&str, &str)] = &[("MPHANG_NOISE", "1")];

/// Whether the noise run of `fixture` happens on Python `ver`, given every Python `all` under
/// test (oldest first). Default: the oldest and the newest Python for every fixture, and the
/// fixtures in `subset` on the others. `MPHANG_TEST_NOISE=all` runs noise everywhere, `off`
/// nowhere.
pub fn noise_on(ver: &str, all: &[(String, PathBuf)], fixture: &str, subset: &[&str]) -> bool {
    match std::env::var("MPHANG_TEST_NOISE").as_deref() {
        Ok("off") => false,
        Ok("all") => true,
        _ => {
            let edge = all.first().is_some_and(|(v, _)| v == ver)
                || all.last().is_some_and(|(v, _)| v == ver);
            edge || subset.contains(&fixture)
        }
    }
}

/// Runs `mphang report --json <pid>` and returns (exit code, parsed report).
pub fn report_json(pid: i32, extra: &[&str]) -> (i32, mphang::render::Report) {
    let out = bin()
        .arg("report")
        .arg(pid.to_string())
        .arg("--json")
        .args(extra)
        .output()
        .expect("run mphang");
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    let report: mphang::render::Report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "report for {pid} is not valid JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run mphang")
}

/// The 1-based line numbers of lines ending with `# MARK` in a fixture.
pub fn marked_lines(name: &str, mark: &str) -> Vec<i32> {
    let text = std::fs::read_to_string(fixture_path(name)).expect("read fixture");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(&format!("# {mark}")))
        .map(|(i, _)| i as i32 + 1)
        .collect()
}

/// The 1-based line number of the first line containing `needle`.
pub fn line_of(name: &str, needle: &str) -> i32 {
    let text = std::fs::read_to_string(fixture_path(name)).expect("read fixture");
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as i32 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in fixture {name}"))
}
