//! The pattern registry's consistency: every id a detector can emit has its docs page, README
//! row, a fixture that declares it, a live test and a replay test; and nothing documents an id
//! no detector emits; every typed `PatternId` but `deadlock`/`stuck` has its detector. Adding a
//! detector without one of these pieces fails here.

use mphang::analysis::patterns::DETECTORS;
use mphang::analysis::PatternId;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files under `dir` (recursive) whose name ends with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.to_string_lossy().ends_with(ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `Pattern id: X` in a fixture's docstring declares X (a word, so `orphaned_lock` is not
/// `orphaned_lock_pool`).
fn declares(text: &str, id: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start()
            .strip_prefix("Pattern id:")
            .is_some_and(|rest| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == id)
            })
    })
}

#[test]
fn every_pattern_has_its_detector_docs_readme_row_fixture_and_tests() {
    let root = repo();
    let readme = read(&root.join("README.md"));
    let fixtures: Vec<(PathBuf, String)> = files(&root.join("fixtures"), ".py")
        .into_iter()
        .map(|p| {
            let t = read(&p);
            (p, t)
        })
        .collect();
    let tests: Vec<(PathBuf, String)> = files(&root.join("tests/integration"), ".rs")
        .into_iter()
        .map(|p| {
            let t = read(&p);
            (p, t)
        })
        .collect();
    let is_replay = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("replay"))
    };
    let mut missing = Vec::new();
    let mut ids: Vec<&str> = DETECTORS.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a detector id is registered twice");
    for id in &ids {
        let quoted = format!("\"{id}\"");
        if !root.join(format!("docs/patterns/{id}.md")).exists() {
            missing.push(format!("{id}: no docs/patterns/{id}.md"));
        }
        if !readme.contains(&format!("[`{id}`](docs/patterns/{id}.md)")) {
            missing.push(format!("{id}: no row in README.md's pattern table"));
        }
        let stems: Vec<String> = fixtures
            .iter()
            .filter(|(_, t)| declares(t, id))
            .filter_map(|(p, _)| Some(p.file_stem()?.to_string_lossy().into_owned()))
            .collect();
        if stems.is_empty() {
            missing.push(format!("{id}: no fixture says `Pattern id: {id}`"));
        }
        let live = tests.iter().any(|(p, t)| {
            !is_replay(p)
                && t.contains(&quoted)
                && stems.iter().any(|s| t.contains(&format!("\"{s}\"")))
        });
        if !stems.is_empty() && !live {
            missing.push(format!(
                "{id}: no live test runs one of its fixtures ({}) and expects it",
                stems.join(", ")
            ));
        }
        if !tests
            .iter()
            .any(|(p, t)| is_replay(p) && t.contains(&quoted))
        {
            missing.push(format!(
                "{id}: no replay test (tests/integration/**/replay*.rs) expects it"
            ));
        }
    }
    // The typed list and the detectors agree: every id but the two generic ones has one.
    for id in PatternId::ALL.iter().filter(|i| !i.is_generic()) {
        if !ids.contains(&id.as_str()) {
            missing.push(format!("{id}: a PatternId no detector emits"));
        }
    }
    // Pages and README rows for ids no detector emits.
    for page in files(&root.join("docs/patterns"), ".md") {
        let stem = page.file_stem().map(|s| s.to_string_lossy().into_owned());
        if let Some(s) = stem.filter(|s| s != "README" && !ids.contains(&s.as_str())) {
            missing.push(format!(
                "docs/patterns/{s}.md documents no registered detector"
            ));
        }
    }
    for row in readme.lines().filter(|l| l.starts_with("| [`")) {
        let id = row
            .trim_start_matches("| [`")
            .split('`')
            .next()
            .unwrap_or_default();
        if !ids.contains(&id) {
            missing.push(format!("README.md lists `{id}`, which no detector emits"));
        }
    }
    assert!(
        missing.is_empty(),
        "the pattern registry is incomplete:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_registry_check_sees_a_missing_piece() {
    // The check itself: a fixture docstring declares by whole word only.
    assert!(declares("Pattern id: orphaned_lock\n", "orphaned_lock"));
    assert!(declares(
        "  Pattern id: peer_exited (barrier)\n",
        "peer_exited"
    ));
    assert!(!declares(
        "Pattern id: orphaned_lock_pool\n",
        "orphaned_lock"
    ));
    assert!(!declares("pattern orphaned_lock\n", "orphaned_lock"));
}
