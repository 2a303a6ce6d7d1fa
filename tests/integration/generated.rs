//! Files generated from the code and committed (the man pages in the wheel; the JSON Schemas in
//! docs/): each test fails when the committed copy differs from what the code generates now.
//! `MPHANG_BLESS=1 cargo test --test integration generated::` rewrites them.

use crate::util::repo;
use std::path::Path;

/// Compares `path` (relative to the repository) with `want`, or writes it under MPHANG_BLESS=1.
/// Returns a complaint instead of failing, so one test can report every stale file.
fn check(path: &Path, want: &[u8]) -> Option<String> {
    let full = repo().join(path);
    if std::env::var_os("MPHANG_BLESS").is_some_and(|v| v == "1") {
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).expect("create the directory");
        }
        std::fs::write(&full, want).expect("write the generated file");
        return None;
    }
    let have = std::fs::read(&full).unwrap_or_default();
    (have != want).then(|| {
        let (have, want) = (
            String::from_utf8_lossy(&have),
            String::from_utf8_lossy(want),
        );
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        format!(
            "{} is stale; first difference at line {}:\n  committed: {:?}\n  generated: {:?}",
            path.display(),
            first + 1,
            have.lines().nth(first).unwrap_or("<end of file>"),
            want.lines().nth(first).unwrap_or("<end of file>"),
        )
    })
}

fn assert_current(complaints: Vec<String>) {
    assert!(
        complaints.is_empty(),
        "{}\n\nregenerate with: MPHANG_BLESS=1 cargo test --test integration generated::",
        complaints.join("\n")
    );
}

#[test]
fn man_pages_are_current() {
    let dir = Path::new("python/mphang.data/data/share/man/man1");
    let pages = mphang::cmd::man::pages().expect("render the man pages");
    let mut complaints: Vec<String> = pages
        .iter()
        .filter_map(|(name, roff)| check(&dir.join(name), roff))
        .collect();
    // A page of a command that no longer exists is stale too.
    let bless = std::env::var_os("MPHANG_BLESS").is_some_and(|v| v == "1");
    for entry in std::fs::read_dir(repo().join(dir))
        .expect("man dir")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !pages.iter().any(|(n, _)| *n == name) {
            if bless {
                std::fs::remove_file(entry.path()).expect("remove a stale page");
            } else {
                complaints.push(format!(
                    "{} has no command any more",
                    dir.join(&name).display()
                ));
            }
        }
    }
    assert_names_every_command(&pages);
    assert_current(complaints);
}

/// `mphang.1` lists every command, and each has its own page.
fn assert_names_every_command(pages: &[(String, Vec<u8>)]) {
    let main = String::from_utf8_lossy(&pages[0].1).into_owned();
    assert_eq!(pages[0].0, "mphang.1");
    for cmd in crate::util::commands() {
        let cmd = cmd.as_str();
        assert!(main.contains(cmd), "mphang.1 names {cmd}");
        assert!(
            pages.iter().any(|(n, _)| *n == format!("mphang-{cmd}.1")),
            "a page for {cmd}"
        );
    }
}

#[test]
fn json_schemas_are_current() {
    let complaints = [
        (
            "docs/report.schema.json",
            mphang::render::json::report_schema(),
        ),
        (
            "docs/snapshot.schema.json",
            mphang::render::json::snapshot_schema(),
        ),
    ]
    .into_iter()
    .filter_map(|(path, schema)| {
        let text = serde_json::to_string_pretty(&schema).expect("serialize the schema") + "\n";
        check(Path::new(path), text.as_bytes())
    })
    .collect();
    assert_current(complaints);
}
