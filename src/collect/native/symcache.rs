//! Resolved native frames kept across runs, one small file per build-id: a warm `report` names
//! a hung tree's native frames without loading a symbol table or DWARF (docs/performance.md).
//!
//! `$MPHANG_CACHE_DIR`, else `$XDG_CACHE_HOME/mphang/symbols`, else `~/.cache/mphang/symbols`;
//! `MPHANG_CACHE_DIR=off` turns it off. A file is only ever the resolution of addresses of the
//! ELF file with that build-id, written by this format version; anything unreadable is ignored
//! and rewritten.

use super::symbols::{Resolved, SymbolSource};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bumped whenever resolution changes what it returns for an address.
const FORMAT: u32 = 1;
/// At most this many addresses per file: a hang's stacks touch a few dozen.
const MAX_ENTRIES: usize = 4096;

#[derive(Serialize, Deserialize, Default)]
pub struct Stored {
    pub source: Option<SymbolSource>,
    /// A debug file was installed for this build-id when these were resolved.
    #[serde(default)]
    pub debug_file: bool,
    pub frames: HashMap<u64, Vec<Resolved>>,
}

/// The cache directory, from the environment `var` reads.
fn dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(d) = var("MPHANG_CACHE_DIR") {
        if d.is_empty() || d == "off" {
            return None;
        }
        return Some(PathBuf::from(d));
    }
    let base = var("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("mphang").join("symbols"))
}

fn dir() -> Option<PathBuf> {
    dir_from(|k| std::env::var_os(k))
}

fn path_in(dir: &Path, build_id: &[u8]) -> Option<PathBuf> {
    if build_id.is_empty() {
        return None;
    }
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    Some(dir.join(format!("{hex}.v{FORMAT}.json")))
}

/// What earlier runs resolved in the file with this build-id (empty when none).
pub fn load(build_id: &[u8]) -> Stored {
    dir().map(|d| load_in(&d, build_id)).unwrap_or_default()
}

fn load_in(dir: &Path, build_id: &[u8]) -> Stored {
    path_in(dir, build_id)
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes `stored` for this build-id (atomically: a temporary file renamed over it). Failure
/// (a read-only home, a full disk) only costs the next run the load.
pub fn save(build_id: &[u8], stored: &Stored) {
    if let Some(d) = dir() {
        save_in(&d, build_id, stored);
    }
}

fn save_in(dir: &Path, build_id: &[u8], stored: &Stored) {
    if stored.frames.len() > MAX_ENTRIES {
        return;
    }
    let Some(p) = path_in(dir, build_id) else {
        return;
    };
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .is_err()
    {
        return;
    }
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    let _ = tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600));
    let ok = serde_json::to_vec(stored)
        .ok()
        .is_some_and(|b| tmp.write_all(&b).is_ok());
    if ok {
        let _ = tmp.persist(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("mphang").join("symbols");
        let mut s = Stored {
            source: Some(SymbolSource::Symtab),
            ..Stored::default()
        };
        s.frames.insert(
            0x1234,
            vec![Resolved {
                function: Some("sem_wait".into()),
                file: Some("sem_wait.c".into()),
                line: Some(7),
            }],
        );
        save_in(&dir, &[0xab, 0xcd], &s);
        let back = load_in(&dir, &[0xab, 0xcd]);
        assert_eq!(back.source, Some(SymbolSource::Symtab));
        assert_eq!(back.frames.get(&0x1234), s.frames.get(&0x1234));
        assert!(load_in(&dir, &[0xab]).frames.is_empty(), "another build-id");
        assert!(
            load_in(&dir, &[]).frames.is_empty(),
            "no build-id, no cache"
        );
        std::fs::write(path_in(&dir, &[0xab, 0xcd]).expect("path"), b"{garbage").expect("write");
        assert!(
            load_in(&dir, &[0xab, 0xcd]).frames.is_empty(),
            "garbage is ignored"
        );
    }

    #[test]
    fn the_directory_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            dir_from(env(&[("MPHANG_CACHE_DIR", "off"), ("HOME", "/h")])),
            None
        );
        assert_eq!(
            dir_from(env(&[("MPHANG_CACHE_DIR", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/mphang/symbols"))
        );
        assert_eq!(
            dir_from(env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/mphang/symbols"))
        );
        assert_eq!(dir_from(env(&[])), None);
    }
}
