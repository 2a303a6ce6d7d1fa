//! What a CI job without Rust uses: the composite action (`action.yml`), the release workflow
//! and the YAML examples of docs/ci.md parse as YAML, and every `mphang` option they name exists.

use crate::util::{bin, markdown_blocks, mphang_options, repo};

#[test]
fn ci_files_and_examples_parse_and_name_real_options() {
    let mut docs: Vec<(String, String)> = Vec::new();
    for f in ["action.yml", ".github/workflows/release.yml"] {
        let text = std::fs::read_to_string(repo().join(f)).expect("read");
        docs.push((f.to_string(), text));
    }
    let ci = std::fs::read_to_string(repo().join("docs/ci.md")).expect("read docs/ci.md");
    let yaml_blocks: Vec<_> = markdown_blocks(&ci)
        .into_iter()
        .filter(|(lang, _, _)| lang == "yaml")
        .collect();
    assert!(
        yaml_blocks.len() >= 2,
        "docs/ci.md YAML examples: {}",
        yaml_blocks.len()
    );
    docs.extend(
        yaml_blocks
            .into_iter()
            .map(|(_, code, line)| (format!("docs/ci.md:{line}"), code)),
    );
    for (what, text) in &docs {
        match yaml_rust2::YamlLoader::load_from_str(text) {
            Ok(d) => assert!(!d.is_empty(), "{what}: empty YAML"),
            Err(e) => panic!("{what}: {e}"),
        }
        for (sub, opt) in mphang_options(text) {
            let help = bin().args([sub.as_str(), "--help"]).output().expect("help");
            let help = String::from_utf8_lossy(&help.stdout);
            assert!(help.contains(&opt), "{what}: `mphang {sub}` has no {opt}");
        }
    }
    let action = yaml_rust2::YamlLoader::load_from_str(&docs[0].1).expect("action.yml");
    assert_eq!(
        action[0]["runs"]["using"].as_str(),
        Some("composite"),
        "action.yml is a composite action"
    );
}
