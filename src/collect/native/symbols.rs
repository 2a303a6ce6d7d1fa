//! Symbolization: file address -> function name (ELF `.symtab`, else a build-id debug file's
//! `.symtab`, else `.dynsym`) and file:line plus inlined frames (addr2line) where DWARF exists.
//! Tables are loaded on the first address that neither this run nor an earlier one (the
//! `symcache`, by build-id) resolved.

use super::elf::{map_file, section_bytes, ElfFile, SecBytes};
use super::symcache;
use addr2line::gimli;
use object::{Object, ObjectSymbol, SymbolKind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

type Reader = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// An addr2line context over section bytes that this struct keeps alive.
///
/// gimli's owning readers need its `std` feature, which addr2line 0.24 does not enable, so the
/// context borrows `'static` slices whose storage (`_keep`: the file mapping and decompressed
/// sections, all behind `Arc`s) is owned by the same struct. `ctx` is declared first, so it is
/// dropped before the storage it points into.
struct DwarfCtx {
    ctx: addr2line::Context<Reader>,
    _keep: Vec<SecBytes>,
}

/// One function symbol.
#[derive(Debug, Clone)]
struct Sym {
    addr: u64,
    size: u64,
    name: Box<str>,
}

/// What one address resolves to: one entry per (inlined) function, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Where the names of a file came from (reported in docs/diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SymbolSource {
    /// The file's own `.symtab`.
    Symtab,
    /// `.symtab` of the separate debug file found by build-id.
    DebugFile,
    /// Only exported symbols (`.dynsym`): static functions show as their exported neighbour.
    Dynsym,
    /// Nothing usable.
    None,
}

/// Names of one ELF file, kept in `NativeCache`: the addresses resolved so far (this run's and,
/// by build-id, earlier runs'), and the tables, loaded on the first address not among them.
pub struct FileSymbols {
    elf: Arc<ElfFile>,
    debug_roots: Vec<PathBuf>,
    tables: Option<Tables>,
    /// Where the names came from; None until the tables or the cache said.
    pub source: Option<SymbolSource>,
    memo: HashMap<u64, Vec<Resolved>>,
    /// Keep resolutions across runs (`symcache`).
    persist: bool,
    /// A debug file for this build-id is installed (and the file needs one for names or lines).
    debug_file: bool,
    /// Resolved an address the cache did not have: write it back when dropped.
    fresh: bool,
}

/// Symbol table and line tables of one ELF file.
struct Tables {
    syms: Vec<Sym>,
    dwarf: Option<DwarfCtx>,
}

impl std::fmt::Debug for FileSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSymbols")
            .field("file", &self.elf.name)
            .field("tables", &self.tables.is_some())
            .field("memo", &self.memo.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Drop for FileSymbols {
    fn drop(&mut self) {
        if let (true, true, Some(id)) = (self.persist, self.fresh, &self.elf.build_id) {
            let stored = symcache::Stored {
                source: self.source,
                debug_file: self.debug_file,
                frames: std::mem::take(&mut self.memo),
            };
            symcache::save(id, &stored);
        }
    }
}

fn collect_syms<'a>(
    out: &mut Vec<Sym>,
    it: impl Iterator<Item = object::Symbol<'a, 'a, &'a [u8]>>,
) {
    for s in it {
        if s.kind() != SymbolKind::Text || s.address() == 0 {
            continue;
        }
        let Ok(name) = s.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let name = name.split('@').next().unwrap_or(name);
        out.push(Sym {
            addr: s.address(),
            size: s.size(),
            name: name.into(),
        });
    }
}

fn load_dwarf(map: &std::sync::Arc<memmap2::Mmap>, file: &object::File<'_>) -> Option<DwarfCtx> {
    file.section_by_name(".debug_info")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let mut keep: Vec<SecBytes> = Vec::new();
    let dwarf = gimli::Dwarf::load(|id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        let Some(data) = section_bytes(map, file, id.name()) else {
            return Ok(gimli::EndianSlice::new(&[], endian));
        };
        let bytes: &[u8] = &data;
        // SAFETY: `bytes` points into an `Arc`-owned mapping or buffer. A clone of that `Arc`
        // goes into `keep`, which is stored next to the context in `DwarfCtx` and outlives it
        // (field order), so the slice stays valid for as long as anything can read it.
        let bytes: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        keep.push(data);
        Ok(gimli::EndianSlice::new(bytes, endian))
    })
    .ok()?;
    let ctx = addr2line::Context::from_dwarf(dwarf).ok()?;
    Some(DwarfCtx { ctx, _keep: keep })
}

fn demangle(name: &str) -> String {
    if name.starts_with("_Z") || name.starts_with("_R") {
        addr2line::demangle_auto(std::borrow::Cow::Borrowed(name), None).into_owned()
    } else {
        name.to_string()
    }
}

impl FileSymbols {
    /// Names for `elf`, nothing loaded yet. `debug_roots` are the filesystem roots searched
    /// for `usr/lib/debug/.build-id/…` (the target's `/proc/PID/root/` first, then `/`). With
    /// `persist`, what earlier runs resolved in a file of the same build-id is known at once,
    /// and what this one resolves is kept.
    pub fn new(elf: Arc<ElfFile>, debug_roots: &[PathBuf], persist: bool) -> FileSymbols {
        // What was resolved without a debug file that is now installed (or with one since
        // removed) is resolved again.
        let debug_file = (!elf.has_symtab || !elf.has_debug_info)
            && elf
                .debug_file_candidates(debug_roots)
                .iter()
                .any(|p| p.exists());
        let stored = match (&elf.build_id, persist) {
            (Some(id), true) => symcache::load(id),
            _ => symcache::Stored::default(),
        };
        let stored = if stored.debug_file == debug_file {
            stored
        } else {
            symcache::Stored::default()
        };
        FileSymbols {
            elf,
            debug_roots: debug_roots.to_vec(),
            tables: None,
            source: stored.source,
            memo: stored.frames,
            persist,
            debug_file,
            fresh: false,
        }
    }

    /// The tables, loaded on first use.
    fn tables(&mut self) -> &Tables {
        if self.tables.is_none() {
            let (tables, source) = Tables::load(&self.elf, &self.debug_roots);
            self.tables = Some(tables);
            self.source = Some(source);
        }
        self.tables.get_or_insert_with(|| Tables {
            syms: Vec::new(),
            dwarf: None,
        })
    }

    /// Resolves a file address (already adjusted by one byte for return addresses).
    /// Innermost inlined function first; the last entry is the real (outermost) function.
    pub fn resolve(&mut self, svma: u64) -> Vec<Resolved> {
        if let Some(r) = self.memo.get(&svma) {
            return r.clone();
        }
        let out = self.tables().resolve(svma);
        self.memo.insert(svma, out.clone());
        self.fresh = true;
        out
    }
}

impl Tables {
    /// Loads the names of `elf` and says where they came from.
    fn load(elf: &ElfFile, debug_roots: &[PathBuf]) -> (Tables, SymbolSource) {
        let mut syms = Vec::new();
        let mut source = SymbolSource::None;
        let mut dwarf = None;
        let Ok(file) = object::File::parse(&**elf.map) else {
            return (Tables { syms, dwarf }, source);
        };
        if elf.has_symtab {
            collect_syms(&mut syms, file.symbols());
            source = SymbolSource::Symtab;
        }
        if elf.has_debug_info {
            dwarf = load_dwarf(&elf.map, &file);
        }
        if !elf.has_symtab || dwarf.is_none() {
            for cand in elf.debug_file_candidates(debug_roots) {
                let Ok(dmap) = map_file(&cand) else { continue };
                let Ok(dfile) = object::File::parse(&**dmap) else {
                    continue;
                };
                if dfile.build_id().ok().flatten() != elf.build_id.as_deref() {
                    continue;
                }
                if !elf.has_symtab && dfile.section_by_name(".symtab").is_some() {
                    collect_syms(&mut syms, dfile.symbols());
                    source = SymbolSource::DebugFile;
                }
                if dwarf.is_none() {
                    dwarf = load_dwarf(&dmap, &dfile);
                }
                break;
            }
        }
        if syms.is_empty() {
            collect_syms(&mut syms, file.dynamic_symbols());
            if !syms.is_empty() {
                source = SymbolSource::Dynsym;
            }
        }
        // Sort by address; among aliases keep names without a leading `__` last so that the
        // public name (e.g. `sem_wait`) wins over internal aliases only when sizes tie.
        syms.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        syms.dedup_by(|b, a| a.addr == b.addr);
        (Tables { syms, dwarf }, source)
    }

    /// The function symbol covering `svma`.
    fn symbol(&self, svma: u64) -> Option<&Sym> {
        let i = self.syms.partition_point(|s| s.addr <= svma);
        let s = self.syms.get(i.checked_sub(1)?)?;
        if s.size == 0 || svma < s.addr + s.size {
            Some(s)
        } else {
            None
        }
    }

    /// [`FileSymbols::resolve`] from the tables.
    fn resolve(&self, svma: u64) -> Vec<Resolved> {
        let sym_name = self.symbol(svma).map(|s| demangle(&s.name));
        let mut out = Vec::new();
        if let Some(d) = &self.dwarf {
            if let Ok(mut frames) = d.ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(f)) = frames.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok().map(|c| c.into_owned()));
                    let (file, line) = match f.location {
                        Some(l) => (l.file.map(str::to_string), l.line),
                        None => (None, None),
                    };
                    out.push(Resolved {
                        function,
                        file,
                        line,
                    });
                }
            }
        }
        if out.is_empty() {
            out.push(Resolved {
                function: sym_name,
                file: None,
                line: None,
            });
        } else if let (Some(last), Some(name)) = (out.last_mut(), sym_name) {
            // The symbol table names the outer function exactly (`.cold`/`.isra` parts too).
            // DWARF keeps its own name only when the symbol is a different function (an alias).
            let dwarf_differs = matches!(last.function.as_deref(), Some(f) if !name.starts_with(f));
            if !dwarf_differs {
                last.function = Some(name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    fn dynsym_addr(path: &str, name: &str) -> Option<u64> {
        let map = map_file(Path::new(path)).ok()?;
        let file = object::File::parse(&**map).ok()?;
        let addr = file
            .dynamic_symbols()
            .find(|s| s.name().ok() == Some(name))
            .map(|s| s.address());
        addr
    }

    #[test]
    fn libc_names_come_from_the_build_id_debug_file_when_installed() {
        if !Path::new(LIBC).exists() {
            eprintln!("skipping: no {LIBC}");
            return;
        }
        let elf = Arc::new(ElfFile::load("libc.so.6", Path::new(LIBC)).expect("parse libc"));
        let debug = elf.debug_file_candidates(&[PathBuf::from("/")]);
        let mut syms = FileSymbols::new(elf.clone(), &[PathBuf::from("/")], false);
        let have_dbg = debug.iter().any(|p| p.exists());
        let expected = if elf.has_symtab {
            SymbolSource::Symtab
        } else if have_dbg {
            SymbolSource::DebugFile
        } else {
            SymbolSource::Dynsym
        };
        let addr = dynsym_addr(LIBC, "sem_wait").expect("sem_wait exported");
        let r = syms.resolve(addr + 4);
        assert_eq!(syms.source, Some(expected), "{syms:?}");
        assert!(
            r.iter().any(|f| f
                .function
                .as_deref()
                .is_some_and(|n| n.contains("sem_wait"))),
            "{r:?}"
        );
        if have_dbg {
            // DWARF from the debug file gives a source line.
            assert!(r.iter().any(|f| f.line.is_some()), "{r:?}");
        }
    }
}
