//! `/proc/PID/maps`: a pure parser, plus the lookups the sampler needs (stack bounds, file mappings).

use std::path::PathBuf;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// `r`, `w`, `x` bits.
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// `major:minor` of the file's device, as printed (hex).
    pub dev: String,
    pub inode: u64,
    /// Path without the ` (deleted)` suffix; `[stack]`, `[vdso]`, … for special mappings.
    pub path: Option<String>,
    /// The file was unlinked (or replaced) after it was mapped.
    pub deleted: bool,
}

impl MapEntry {
    /// True when this mapping comes from a regular file (not anonymous, not `[vdso]`).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// True for the kernel's `[vdso]`, an ELF image with its own unwind tables and symbols.
    pub fn is_vdso(&self) -> bool {
        self.path.as_deref() == Some("[vdso]")
    }

    /// True when this mapping holds code the unwinder and symbolizer can describe.
    pub fn is_code_object(&self) -> bool {
        self.is_file() || self.is_vdso()
    }

    /// True when `addr` falls inside this mapping.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Paths that open the mapped file from outside the target's mount namespace, best first:
    /// `/proc/PID/root/<path>` (works across containers) then `/proc/PID/map_files/<range>`
    /// (works for deleted files, needs root).
    pub fn open_candidates(&self, pid: i32) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(p) = &self.path {
            if !self.deleted {
                v.push(PathBuf::from(format!("/proc/{pid}/root{p}")));
            }
        }
        v.push(PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        )));
        v
    }
}

/// Parses the whole of `/proc/PID/maps` (with the collector's parser). Lines that do not parse
/// are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    crate::collect::procfs::parse_maps(text)
        .iter()
        .map(MapEntry::from)
        .collect()
}

impl From<&crate::collect::procfs::MapEntry> for MapEntry {
    fn from(m: &crate::collect::procfs::MapEntry) -> Self {
        let perms = m.perms.as_bytes();
        let (path, deleted) = match m.path.as_str() {
            "" => (None, false),
            p => match p.strip_suffix(" (deleted)") {
                Some(p) => (Some(p.to_string()), true),
                None => (Some(p.to_string()), false),
            },
        };
        MapEntry {
            start: m.start,
            end: m.end,
            readable: perms.first() == Some(&b'r'),
            writable: perms.get(1) == Some(&b'w'),
            executable: perms.get(2) == Some(&b'x'),
            offset: m.offset,
            dev: m.dev.clone(),
            inode: m.inode,
            path,
            deleted,
        }
    }
}

/// The mapping that contains `addr`, if any (`maps` is sorted by address, as the kernel prints it).
pub fn find(maps: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    let i = maps.partition_point(|m| m.start <= addr);
    let m = maps.get(i.checked_sub(1)?)?;
    m.contains(addr).then_some(m)
}

/// The end of the mapping that holds `sp`: a stack copy never reads past it.
pub fn stack_end(maps: &[MapEntry], sp: u64) -> Option<u64> {
    find(maps, sp).map(|m| m.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c6c00000-55d0c6c01000 r--p 00000000 08:01 1311 /root/.pyenv/versions/3.11.7/bin/python3.11
7f0a1c000000-7f0a1c021000 rw-p 00000000 00:00 0 
7f0a1e028000-7f0a1e17d000 r-xp 00028000 fe:01 3057 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0a1e300000-7f0a1e301000 rw-s 00000000 00:1b 11                         /dev/shm/sem.ieaFdq (deleted)
7f0a1e400000-7f0a1e401000 r-xp 00000000 08:01 77 /tmp/dir with space/lib.so
7ffd5a3c0000-7ffd5a3e1000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn parses_every_form() {
        let m = parse_maps(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[2].path.as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert!(m[2].executable && !m[2].writable);
        assert_eq!(m[2].offset, 0x28000);
        assert_eq!(m[2].dev, "fe:01");
        assert_eq!(m[1].path, None);
        assert!(m[3].deleted);
        assert_eq!(m[3].path.as_deref(), Some("/dev/shm/sem.ieaFdq"));
        assert_eq!(m[4].path.as_deref(), Some("/tmp/dir with space/lib.so"));
        assert_eq!(m[5].path.as_deref(), Some("[stack]"));
        assert!(!m[5].is_file());
        assert!(m[2].is_file());
    }

    #[test]
    fn finds_by_address() {
        let m = parse_maps(SAMPLE);
        assert_eq!(find(&m, 0x7f0a1e028000).map(|e| e.inode), Some(3057));
        assert_eq!(find(&m, 0x7f0a1e17cfff).map(|e| e.inode), Some(3057));
        assert!(find(&m, 0x7f0a1e17d000).is_none());
        assert!(find(&m, 0x10).is_none());
        assert_eq!(stack_end(&m, 0x7ffd5a3d0000), Some(0x7ffd5a3e1000));
    }

    #[test]
    fn open_candidates_prefer_root_then_map_files() {
        let m = parse_maps(SAMPLE);
        let c = m[2].open_candidates(42);
        assert_eq!(
            c[0],
            PathBuf::from("/proc/42/root/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            c[1],
            PathBuf::from("/proc/42/map_files/7f0a1e028000-7f0a1e17d000")
        );
        assert_eq!(m[3].open_candidates(42).len(), 1);
    }
}
