//! One ELF file mapped read-only: the section bytes the unwinder needs, its load segments
//! (to turn a process address into a file address), its build-id, and where its symbols live.

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of one section, either borrowed from the file mapping or decompressed into memory.
/// Cheap to clone; used as framehop's section data and to keep DWARF sections alive.
#[derive(Clone, Debug)]
pub enum SecBytes {
    /// A range of the mapped file.
    Mapped(Arc<Mmap>, Range<usize>),
    /// Decompressed (`SHF_COMPRESSED`) section data.
    Owned(Arc<[u8]>),
}

impl Default for SecBytes {
    fn default() -> Self {
        SecBytes::Owned(Arc::from(Vec::new()))
    }
}

impl Deref for SecBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SecBytes::Mapped(m, r) => m.get(r.clone()).unwrap_or(&[]),
            SecBytes::Owned(v) => v,
        }
    }
}

/// A `PT_LOAD` segment: file offset and stated address of its first byte.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// A section's stated address range and its bytes.
#[derive(Debug, Clone)]
pub struct Section {
    pub svma: Range<u64>,
    pub data: Option<SecBytes>,
}

/// A parsed ELF file. Parsing happens once per file (see `NativeCache`); everything here is
/// shared by every process that maps the file.
#[derive(Debug)]
pub struct ElfFile {
    /// The path as the target names it (for display).
    pub name: String,
    pub map: Arc<Mmap>,
    pub segments: Vec<Segment>,
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<SecBytes>,
    pub got: Option<Range<u64>>,
    pub build_id: Option<Vec<u8>>,
    pub has_symtab: bool,
    pub has_debug_info: bool,
}

/// Maps `path` read-only.
pub fn map_file(path: &Path) -> std::io::Result<Arc<Mmap>> {
    let f = File::open(path)?;
    // SAFETY: the mapping is read-only and private. If the file is truncated underneath us,
    // reads may fault (SIGBUS); shared libraries and debug files are not rewritten in place
    // (package managers replace them with rename), which is the usual assumption of profilers.
    let m = unsafe { Mmap::map(&f)? };
    Ok(Arc::new(m))
}

/// Bytes of `name` in `file`, decompressed when needed.
pub fn section_bytes(map: &Arc<Mmap>, file: &object::File<'_>, name: &str) -> Option<SecBytes> {
    let sec = file.section_by_name(name)?;
    let data = sec.uncompressed_data().ok()?;
    Some(match data {
        std::borrow::Cow::Borrowed(s) => {
            let base = map.as_ptr() as usize;
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            SecBytes::Mapped(map.clone(), start..start + s.len())
        }
        std::borrow::Cow::Owned(v) => SecBytes::Owned(v.into()),
    })
}

impl ElfFile {
    /// Parses the file at `path` (opened through `/proc/PID/root` or `map_files`).
    pub fn load(name: &str, path: &Path) -> Result<ElfFile, String> {
        let map = map_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_map(name, map)
    }

    /// Parses an ELF image copied out of a process (the `[vdso]`).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<ElfFile, String> {
        let mut m = memmap2::MmapOptions::new()
            .len(bytes.len().max(1))
            .map_anon()
            .map_err(|e| format!("{name}: {e}"))?;
        m[..bytes.len()].copy_from_slice(bytes);
        let map = m.make_read_only().map_err(|e| format!("{name}: {e}"))?;
        Self::from_map(name, Arc::new(map))
    }

    fn from_map(name: &str, map: Arc<Mmap>) -> Result<ElfFile, String> {
        let file = object::File::parse(&**map).map_err(|e| format!("{name}: {e}"))?;
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment {
                    offset,
                    vaddr: s.address(),
                    filesz,
                }
            })
            .collect();
        let section = |n: &str| -> Option<Section> {
            let s = file.section_by_name(n)?;
            Some(Section {
                svma: s.address()..s.address() + s.size(),
                data: section_bytes(&map, &file, n),
            })
        };
        let text = section(".text");
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = section_bytes(&map, &file, ".debug_frame");
        let got = file
            .section_by_name(".got")
            .map(|s| s.address()..s.address() + s.size());
        let build_id = file.build_id().ok().flatten().map(|b| b.to_vec());
        let has_symtab = file.section_by_name(".symtab").is_some();
        let has_debug_info = file.section_by_name(".debug_info").is_some();
        Ok(ElfFile {
            name: name.to_string(),
            segments,
            text,
            eh_frame,
            eh_frame_hdr,
            debug_frame,
            got,
            build_id,
            has_symtab,
            has_debug_info,
            map,
        })
    }

    /// The load bias of a mapping of this file at `start` with file offset `offset`:
    /// `process address = stated address + bias`.
    pub fn bias(&self, start: u64, offset: u64) -> u64 {
        let seg = self
            .segments
            .iter()
            .find(|s| s.offset <= offset && offset < s.offset + s.filesz.max(1))
            .or_else(|| self.segments.first());
        match seg {
            Some(s) => start
                .wrapping_sub(offset)
                .wrapping_add(s.offset)
                .wrapping_sub(s.vaddr),
            None => start.wrapping_sub(offset),
        }
    }

    /// Where a separate debug file for this build-id would be, under `root`
    /// (`/usr/lib/debug/.build-id/xx/yyyy.debug`).
    pub fn debug_file_candidates(&self, roots: &[PathBuf]) -> Vec<PathBuf> {
        let Some(id) = &self.build_id else {
            return Vec::new();
        };
        if id.len() < 2 {
            return Vec::new();
        }
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        roots
            .iter()
            .map(|r| {
                r.join(format!(
                    "usr/lib/debug/.build-id/{}/{}.debug",
                    &hex[..2],
                    &hex[2..]
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_of_a_shifted_code_segment() {
        let f = ElfFile {
            name: "x".into(),
            map: Arc::new(
                memmap2::MmapOptions::new()
                    .len(1)
                    .map_anon()
                    .expect("anon")
                    .make_read_only()
                    .expect("ro"),
            ),
            segments: vec![
                Segment {
                    offset: 0,
                    vaddr: 0,
                    filesz: 0x1000,
                },
                Segment {
                    offset: 0x1000,
                    vaddr: 0x2000,
                    filesz: 0x5000,
                },
            ],
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            got: None,
            build_id: Some(vec![0x93, 0xac, 0x61]),
            has_symtab: false,
            has_debug_info: false,
        };
        // Code mapped at 0x7000_1000 from file offset 0x1000, stated at 0x2000.
        assert_eq!(f.bias(0x7000_1000, 0x1000), 0x7000_1000 - 0x2000);
        assert_eq!(f.bias(0x7000_0000, 0), 0x7000_0000);
        assert_eq!(
            f.debug_file_candidates(&[PathBuf::from("/")]),
            vec![PathBuf::from("/usr/lib/debug/.build-id/93/ac61.debug")]
        );
    }
}
