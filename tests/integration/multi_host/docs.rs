//! The recipes in docs/multi-host.md cannot run here (no cluster), so they are checked for
//! syntax: every bash block with `bash -n`, every Python block with `ast.parse`, every YAML
//! block parsed; and every `mphang` option they use must exist.

use crate::util::{bin, mphang_options, pythons, repo};
use std::io::Write;
use std::process::{Command, Stdio};

fn piped(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn checker");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn docs_recipes_parse() {
    let text = std::fs::read_to_string(repo().join("docs/multi-host.md")).expect("read doc");
    let blocks = crate::util::markdown_blocks(&text);
    let python = pythons().pop().expect("a python").path;
    let mut counts = std::collections::BTreeMap::new();
    for (lang, code, line) in &blocks {
        *counts.entry(lang.clone()).or_insert(0) += 1;
        let (ok, err) = match lang.as_str() {
            "bash" => piped(Command::new("bash").arg("-n"), code),
            "python" => piped(
                Command::new(&python).args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"]),
                code,
            ),
            "yaml" => match yaml_rust2::YamlLoader::load_from_str(code) {
                Ok(docs) if !docs.is_empty() => (true, String::new()),
                Ok(_) => (false, "empty YAML".into()),
                Err(e) => (false, e.to_string()),
            },
            _ => (true, String::new()),
        };
        assert!(ok, "docs/multi-host.md:{line} ({lang}): {err}");
        if lang == "bash" || lang.is_empty() {
            for (sub, opt) in mphang_options(code) {
                let help = bin().args([sub.as_str(), "--help"]).output().expect("help");
                let help = String::from_utf8_lossy(&help.stdout);
                assert!(
                    help.contains(&opt),
                    "docs/multi-host.md:{line}: `mphang {sub}` has no {opt}"
                );
            }
        }
    }
    // Slurm, Kubernetes (two), Ray's merge is prose; torch's fan-out: bash blocks; Ray and
    // torch handlers: Python; the DaemonSet: YAML.
    assert!(counts.get("bash").copied().unwrap_or(0) >= 5, "{counts:?}");
    assert!(
        counts.get("python").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
    assert!(counts.get("yaml").copied().unwrap_or(0) >= 1, "{counts:?}");
}

#[test]
fn docs_checker_catches_broken_snippets() {
    let (ok, _) = piped(Command::new("bash").arg("-n"), "for x in; do\n");
    assert!(!ok);
    assert!(yaml_rust2::YamlLoader::load_from_str("a: [1, 2\n").is_err());
    assert_eq!(
        mphang_options("mphang report --json --job-env A=1 || true\n"),
        [
            ("report".to_string(), "--json".to_string()),
            ("report".to_string(), "--job-env".to_string())
        ]
    );
}
