//! `/proc/PID/maps` lookups the sampler needs (stack bounds, the mapping of an address), over
//! the collector's one parser and entry type (`procfs`).

pub use crate::collect::procfs::{parse_maps, MapEntry};

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
    use std::path::PathBuf;

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
            m[2].file_path(),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert!(m[2].executable() && !m[2].writable());
        assert_eq!(m[2].offset, 0x28000);
        assert_eq!(m[2].dev, "fe:01");
        assert_eq!(m[1].file_path(), None);
        assert!(m[3].deleted());
        assert_eq!(m[3].file_path(), Some("/dev/shm/sem.ieaFdq"));
        assert_eq!(m[4].file_path(), Some("/tmp/dir with space/lib.so"));
        assert_eq!(m[5].file_path(), Some("[stack]"));
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
