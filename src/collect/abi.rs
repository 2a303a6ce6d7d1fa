//! The one table of memory layouts mphang reads from outside a process: CPython objects
//! (`_multiprocessing.SemLock`, `_thread.lock`/`RLock`, PyMutex, `_PyRecursiveMutex`, the
//! parking lot's wait entry, `io.Buffered*`'s lock, the object and type headers, where the GIL
//! lives) keyed by Python version and build, and glibc's (`sem_t`, `pthread_mutex_t`,
//! `struct pthread`'s tid) keyed by glibc version. Every decoder takes its offsets from here
//! and nothing else in `collect/` hard-codes one (field guide §3.2–3.6).
//!
//! How a process's key is found: the `_Py_DebugOffsets` header at the start of the
//! interpreter's `.PyRuntime` section (3.13+: version and `free_threaded`, read from the file on
//! disk, so stripped builds work), else the `python3.Nt`/`libpython3.Nt.so` file name, else
//! the version py-spy read. glibc's version comes from the banner in the mapped `libc.so.6`.

use super::memory::{self, Mem};
use super::procfs::MapEntry;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A CPython build: minor version (major is 3) and whether it is free-threaded (`Py_GIL_DISABLED`,
/// ABI flag `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyBuild {
    pub minor: u8,
    pub free_threaded: bool,
}

impl PyBuild {
    /// From a version string: `3.14.10`, `3.15.0rc1`, `3.14t`.
    pub fn from_version(v: &str) -> Option<PyBuild> {
        let rest = v.trim().strip_prefix("3.")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let minor = digits.parse().ok()?;
        let free_threaded = rest[digits.len()..].starts_with('t');
        Some(PyBuild {
            minor,
            free_threaded,
        })
    }

    /// From an interpreter file name: `python3.14t`, `libpython3.14t.so.1.0`, `python3.11`.
    /// `python3` alone says nothing.
    pub fn from_path(path: &str) -> Option<PyBuild> {
        let base = path.rsplit('/').next()?;
        let base = base.strip_suffix(" (deleted)").unwrap_or(base);
        let rest = base
            .strip_prefix("libpython")
            .or_else(|| base.strip_prefix("python"))?;
        let b = PyBuild::from_version(rest)?;
        // `python3.14-config` and friends are not interpreters.
        let tail = &rest[2 + b.minor.to_string().len()..];
        let tail = tail.strip_prefix('t').unwrap_or(tail);
        (tail.is_empty() || tail.starts_with(".so")).then_some(b)
    }

    /// `3.14` or `3.14t`.
    pub fn label(self) -> String {
        format!(
            "3.{}{}",
            self.minor,
            if self.free_threaded { "t" } else { "" }
        )
    }
}

/// The header of `_Py_DebugOffsets` (`Include/internal/pycore_debug_offsets.h`), embedded at
/// `_PyRuntime+0` from 3.13 on: `char cookie[8] = "xdebugpy"`, `uint64_t version`
/// (`PY_VERSION_HEX`), `uint64_t free_threaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugHeader {
    pub version_hex: u64,
    pub free_threaded: bool,
}

pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

impl DebugHeader {
    pub fn parse(bytes: &[u8]) -> Option<DebugHeader> {
        if bytes.get(..8)? != DEBUG_COOKIE {
            return None;
        }
        let version_hex = memory::u64_at(bytes, 8)?;
        let free_threaded = memory::u64_at(bytes, 16)?;
        (version_hex >> 24 == 3 && free_threaded <= 1).then_some(DebugHeader {
            version_hex,
            free_threaded: free_threaded == 1,
        })
    }

    pub fn build(self) -> PyBuild {
        PyBuild {
            minor: ((self.version_hex >> 16) & 0xff) as u8,
            free_threaded: self.free_threaded,
        }
    }

    /// `3.14.10` (release level and serial left out).
    pub fn version(self) -> String {
        format!(
            "3.{}.{}",
            (self.version_hex >> 16) & 0xff,
            (self.version_hex >> 8) & 0xff
        )
    }
}

/// The object header (`PyObject`): where `ob_type` is, and `tp_name` in a type object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `offsetof(PyObject, ob_type)`.
    pub ob_type: u64,
    /// `sizeof(PyObject)`: the first field of an object struct.
    pub head: u64,
    /// `offsetof(PyTypeObject, tp_name)`.
    pub tp_name: u64,
}

/// `_multiprocessing.SemLock` (`Modules/_multiprocessing/semaphore.c`, `SemLockObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemLockLayout {
    /// `SEM_HANDLE handle`: the `sem_t*`, = the start of this process's semaphore mapping.
    pub handle: u64,
    /// `unsigned long last_tid`: `pthread_self()` of the last acquirer (not reset on release).
    pub last_tid: u64,
    /// `int count`: this process's acquire count (0 after fork).
    pub count: u64,
    pub maxvalue: u64,
    /// `int kind`: 0 RECURSIVE_MUTEX, 1 SEMAPHORE.
    pub kind: u64,
    /// Bytes to read to see all of the above.
    pub size: usize,
}

/// Where an object keeps its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockField {
    /// A `PyThread_type_lock` pointer at this offset (see [`PyLayout::thread_type_lock`]).
    Pointer(u64),
    /// A PyMutex embedded at this offset (3.14+ `_thread.lock`; the first field of the
    /// `_PyRecursiveMutex` of an RLock).
    Inline(u64),
}

/// What a `PyThread_type_lock` (`PyThread_allocate_lock`) points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadTypeLock {
    /// A malloc'd glibc `sem_t` (`USE_SEMAPHORES`): the futex is the `sem_t` itself.
    SemT,
    /// A malloc'd PyMutex (3.15): a blocked acquire parks in the parking lot, keyed by it.
    PyMutex,
}

/// `_thread.RLock` (`rlockobject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RLockLayout {
    pub lock: LockField,
    /// The owner's thread ident (`pthread_t`): `rlock_owner`, or 3.14+
    /// `_PyRecursiveMutex.thread`. 0 when unowned.
    pub owner: u64,
    /// `rlock_count` (acquisitions), or 3.14+ `_PyRecursiveMutex.level` (acquisitions - 1).
    pub count: u64,
    /// True when the count field stores acquisitions minus one (`level`).
    pub count_is_level: bool,
}

/// `io.BufferedReader`/`Writer`/`Random` (`Modules/_io/bufferedio.c`, `buffered`): the lock
/// every read and write takes (ENTER_BUFFERED) and its owner's thread ident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferedLayout {
    /// `PyThread_type_lock lock`.
    pub lock: u64,
    /// `volatile unsigned long owner` (`PyThread_get_thread_ident()`, 0 when released).
    pub owner: u64,
}

/// The parking lot (3.13+, `Python/parking_lot.c`): a blocked waiter sleeps on the `sem_t` of a
/// `struct wait_entry` on its own stack (`park_arg`@0, `addr`@8, `sema`@16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkingLot {
    /// `wait_entry.addr` (the awaited PyMutex/PyEvent address) lies this many bytes before
    /// the semaphore, i.e. before the futex word.
    pub addr_before_sema: u64,
}

/// Where the GIL's futexes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gil {
    /// In `_PyRuntime` (3.8–3.11 `ceval.gil`; 3.12+ the main interpreter's `_gil`, itself
    /// static in `_PyRuntime`): the interpreter's data or the anonymous .bss right after it.
    InRuntime,
    /// A free-threaded build has no GIL (unless re-enabled at run time).
    None,
}

/// Every CPython layout mphang reads, for one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyLayout {
    pub build: PyBuild,
    /// False when the build is newer than any checked: the newest known layout is assumed
    /// (every object read is still validated by its type name).
    pub verified: bool,
    pub object: ObjectLayout,
    pub semlock: SemLockLayout,
    /// `_thread.lock`'s lock.
    pub lock: LockField,
    pub rlock: RLockLayout,
    pub buffered: BufferedLayout,
    pub thread_type_lock: ThreadTypeLock,
    pub parking_lot: Option<ParkingLot>,
    pub gil: Gil,
}

/// Newest minor version whose layouts were checked (3.14.10 and 3.15.2, Debian builds;
/// 3.8.18–3.13.0 pyenv builds: `gdb ptype /o` and `ctypes` reads, field guide §3.2–3.6).
pub const NEWEST_CHECKED: u8 = 15;

const DEFAULT_OBJECT: ObjectLayout = ObjectLayout {
    ob_type: 8,
    head: 16,
    tp_name: 24,
};

/// The layouts of `build`. None for a free-threaded build (its 32-byte object header and
/// per-object mutex move every offset; none was available to check) and for versions before
/// 3.8.
pub fn python(build: PyBuild) -> Option<PyLayout> {
    if build.free_threaded || build.minor < 8 {
        return None;
    }
    Some(default_build(build.minor))
}

/// The layouts of default (GIL) build 3.`m`.
fn default_build(m: u8) -> PyLayout {
    let pymutex_locks = m >= 14;
    PyLayout {
        build: PyBuild {
            minor: m,
            free_threaded: false,
        },
        verified: m <= NEWEST_CHECKED,
        object: DEFAULT_OBJECT,
        // Identical in 3.8–3.15.
        semlock: SemLockLayout {
            handle: 16,
            last_tid: 24,
            count: 32,
            maxvalue: 36,
            kind: 40,
            size: 48,
        },
        lock: if pymutex_locks {
            LockField::Inline(16)
        } else {
            LockField::Pointer(16)
        },
        rlock: if pymutex_locks {
            // `_PyRecursiveMutex {PyMutex mutex; unsigned long long thread; size_t level;}`
            RLockLayout {
                lock: LockField::Inline(16),
                owner: 24,
                count: 32,
                count_is_level: true,
            }
        } else {
            RLockLayout {
                lock: LockField::Pointer(16),
                owner: 24,
                count: 32,
                count_is_level: false,
            }
        },
        // raw@16, four ints, finalizing, fast_closed_checks, abs_pos, buffer, pos, raw_pos,
        // read_end, write_pos, write_end, then lock@104 and owner@112 (3.8–3.15).
        buffered: BufferedLayout {
            lock: 104,
            owner: 112,
        },
        thread_type_lock: if m >= 15 {
            ThreadTypeLock::PyMutex
        } else {
            ThreadTypeLock::SemT
        },
        parking_lot: (m >= 13).then_some(ParkingLot {
            addr_before_sema: 8,
        }),
        gil: Gil::InRuntime,
    }
}

/// glibc layouts (x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlibcLayout {
    /// `(major, minor)` read from the mapped libc, when it could be.
    pub version: Option<(u32, u32)>,
    /// False when the version is unknown or outside the checked range (2.17–2.43).
    pub verified: bool,
    /// `offsetof(struct pthread, tid)` (`nptl/descr.h`); a `pthread_t` is the `struct pthread*`.
    pub pthread_tid: u64,
    /// `struct new_sem`: `uint64_t data`, value in the low 32 bits, waiters in the high 32.
    pub sem_value: usize,
    pub sem_nwaiters: usize,
    /// `struct __pthread_mutex_s`: `int __lock`@0 (the futex word), `int __owner`@8.
    pub mutex_lock: usize,
    pub mutex_owner: usize,
}

impl GlibcLayout {
    /// The TID in the `struct pthread` at `pthread` (a `pthread_t`, = fs_base, =
    /// `threading.get_ident()`), in the target's PID namespace; 0 for a parent's thread seen in
    /// a fork child (glibc clears the other threads' TIDs at fork).
    pub fn pthread_tid(&self, mem: &dyn Mem, pthread: u64) -> Option<i32> {
        if pthread == 0 {
            return None;
        }
        let b = mem.read(pthread.checked_add(self.pthread_tid)?, 4).ok()?;
        memory::i32_at(&b, 0)
    }

    /// [`Self::pthread_tid`], accepted only when it names one of `tids` (the live threads of
    /// the process).
    pub fn tid_of_pthread(&self, mem: &dyn Mem, pthread: u64, tids: &[i32]) -> Option<i32> {
        self.pthread_tid(mem, pthread).filter(|t| tids.contains(t))
    }

    /// A `sem_t`'s (value, waiters) from its first 8 bytes.
    pub fn sem(&self, bytes: &[u8]) -> Option<(u32, u32)> {
        Some((
            memory::u32_at(bytes, self.sem_value)?,
            memory::u32_at(bytes, self.sem_nwaiters)?,
        ))
    }

    /// The first 16 bytes at a futex address read both as a `sem_t` and a mutex.
    pub fn futex_word(&self, bytes: &[u8]) -> Option<crate::model::FutexWord> {
        Some(crate::model::FutexWord {
            value: memory::u32_at(bytes, self.mutex_lock)?,
            high: memory::u32_at(bytes, self.sem_nwaiters)?,
            owner_tid: memory::i32_at(bytes, self.mutex_owner)?,
        })
    }
}

/// The layouts of glibc `version` (x86_64). `offsetof(struct pthread, tid)` is 720 in every
/// glibc checked: 2.17 (`0x2d0` in gdb's folklore), 2.31, 2.36 (`ptype /o`, total size
/// 2368) and sid's 2.43 (`threading.get_ident() + 720 == get_native_id()`).
pub fn glibc(version: Option<(u32, u32)>) -> GlibcLayout {
    GlibcLayout {
        version,
        verified: version.is_some_and(|(ma, mi)| ma == 2 && (17..=43).contains(&mi)),
        pthread_tid: 720,
        sem_value: 0,
        sem_nwaiters: 4,
        mutex_lock: 0,
        mutex_owner: 8,
    }
}

/// The layouts for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abi {
    /// The build, when it could be told (see the module doc).
    pub build: Option<PyBuild>,
    /// CPython layouts; None for a free-threaded, too old or unknown build.
    pub py: Option<PyLayout>,
    pub libc: GlibcLayout,
}

impl Abi {
    /// For a process mapping `maps` with executable `exe`, and the version py-spy read (if it
    /// did). Files are read once per path for the whole run.
    pub fn for_process(py_version: Option<&str>, exe: Option<&str>, maps: &[MapEntry]) -> Abi {
        let build = interpreter_build(exe, maps)
            .map(|(b, _)| b)
            .or_else(|| py_version.and_then(PyBuild::from_version));
        Abi {
            build,
            py: build.and_then(python),
            libc: glibc(libc_version(maps)),
        }
    }
}

impl Abi {
    /// The parking lot's layout: the build's, or for an unknown default build the newest
    /// known one (None before 3.13 and for free-threaded builds, whose layout is unchecked).
    pub fn parking_lot(&self) -> Option<ParkingLot> {
        match (self.py, self.build) {
            (Some(p), _) => p.parking_lot,
            (None, None) => newest().parking_lot,
            (None, Some(_)) => None,
        }
    }

    /// Where the GIL is: in the runtime for default builds (and unknown ones), none for a
    /// free-threaded build.
    pub fn gil(&self) -> Gil {
        match (self.py, self.build) {
            (Some(p), _) => p.gil,
            (None, Some(b)) if b.free_threaded => Gil::None,
            _ => Gil::InRuntime,
        }
    }
}

/// The newest checked layout.
pub fn newest() -> PyLayout {
    default_build(NEWEST_CHECKED)
}

/// `tp_name` of the type object at `ob_type`.
pub fn type_name(mem: &dyn Mem, obj: &ObjectLayout, ob_type: u64) -> Option<String> {
    let tp = mem.read(ob_type.checked_add(obj.tp_name)?, 8).ok()?;
    let at = memory::u64_at(&tp, 0)?;
    // A name near the end of its mapping cannot be read 64 bytes long.
    let name = mem.read(at, 64).or_else(|_| mem.read(at, 32)).ok()?;
    let end = name.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&name[..end]).ok()?;
    (!s.is_empty() && s.bytes().all(|c| c.is_ascii_graphic())).then(|| s.to_string())
}

/// The type name of the object at `obj`.
pub fn object_type(mem: &dyn Mem, layout: &ObjectLayout, obj: u64) -> Option<(u64, String)> {
    let b = mem.read(obj.checked_add(layout.ob_type)?, 8).ok()?;
    let ob_type = memory::u64_at(&b, 0)?;
    Some((ob_type, type_name(mem, layout, ob_type)?))
}

/// The interpreter file a process maps (libpython, else the executable) and its build, from
/// its `.PyRuntime` debug header or its name.
pub fn interpreter_build(exe: Option<&str>, maps: &[MapEntry]) -> Option<(PyBuild, String)> {
    let lib = maps
        .iter()
        .find(|m| {
            m.path
                .rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with("libpython3"))
        })
        .map(|m| m.path.as_str());
    for path in lib.into_iter().chain(exe) {
        if let Some(h) = debug_header_of(path) {
            return Some((h.build(), path.to_string()));
        }
        if let Some(b) = PyBuild::from_path(path) {
            return Some((b, path.to_string()));
        }
    }
    None
}

/// The `_Py_DebugOffsets` header of the interpreter file at `path` (the start of its
/// `.PyRuntime` section), cached per path.
pub fn debug_header_of(path: &str) -> Option<DebugHeader> {
    static CACHE: PathCache<Option<DebugHeader>> = OnceLock::new();
    cached(&CACHE, path, || read_debug_header(path))
}

/// Values read from files, once per path for the whole run.
type PathCache<T> = OnceLock<Mutex<HashMap<String, T>>>;

fn cached<T: Copy>(cache: &'static PathCache<T>, path: &str, read: impl FnOnce() -> T) -> T {
    let c = cache.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(v) = c.lock().ok().and_then(|c| c.get(path).copied()) {
        return v;
    }
    let v = read();
    if let Ok(mut c) = c.lock() {
        c.insert(path.to_string(), v);
    }
    v
}

fn read_debug_header(path: &str) -> Option<DebugHeader> {
    use object::{Object, ObjectSection};
    let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
    let map = super::native::elf::map_file(std::path::Path::new(clean)).ok()?;
    let file = object::File::parse(&map[..]).ok()?;
    let sec = file.section_by_name(".PyRuntime")?;
    DebugHeader::parse(sec.data().ok()?)
}

/// The glibc version of the `libc.so.6` a process maps (its `release version 2.NN` banner),
/// cached per path. None for static binaries and other libcs.
pub fn libc_version(maps: &[MapEntry]) -> Option<(u32, u32)> {
    static CACHE: PathCache<Option<(u32, u32)>> = OnceLock::new();
    let path = maps
        .iter()
        .find(|m| {
            m.path
                .rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with("libc.so") || b.starts_with("libc-2."))
        })
        .map(|m| m.path.as_str())?;
    cached(&CACHE, path, || {
        let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
        super::native::elf::map_file(std::path::Path::new(clean))
            .ok()
            .and_then(|m| glibc_banner_version(&m))
    })
}

/// Parses `... release version 2.36.` out of libc's bytes.
pub fn glibc_banner_version(bytes: &[u8]) -> Option<(u32, u32)> {
    const NEEDLE: &[u8] = b"GNU C Library";
    let mut from = 0;
    while let Some(i) = find(&bytes[from..], NEEDLE) {
        let start = from + i;
        let line = &bytes[start..bytes.len().min(start + 200)];
        let end = line.iter().position(|&c| c == 0 || c == b'\n')?;
        let text = std::str::from_utf8(&line[..end]).ok()?;
        if let Some(v) = text.split("version ").nth(1) {
            let mut it = v.trim_end_matches('.').split('.');
            let ma = it.next().and_then(|x| x.parse().ok());
            let mi = it
                .next()
                .map(|x| {
                    x.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                })
                .and_then(|x| x.parse().ok());
            if let (Some(ma), Some(mi)) = (ma, mi) {
                return Some((ma, mi));
            }
        }
        from = start + NEEDLE.len();
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_versions_and_names() {
        let b = |m, ft| {
            Some(PyBuild {
                minor: m,
                free_threaded: ft,
            })
        };
        assert_eq!(PyBuild::from_version("3.14.10"), b(14, false));
        assert_eq!(PyBuild::from_version("3.15.0rc1"), b(15, false));
        assert_eq!(PyBuild::from_version("3.14t"), b(14, true));
        assert_eq!(PyBuild::from_version("2.7.18"), None);
        assert_eq!(
            PyBuild::from_path("/opt/cpython/sid/usr/bin/python3.14"),
            b(14, false)
        );
        assert_eq!(PyBuild::from_path("/usr/bin/python3.14t"), b(14, true));
        assert_eq!(
            PyBuild::from_path("/usr/lib/libpython3.14t.so.1.0"),
            b(14, true)
        );
        assert_eq!(
            PyBuild::from_path("/root/.pyenv/versions/3.8.18/lib/libpython3.8.so.1.0"),
            b(8, false)
        );
        assert_eq!(PyBuild::from_path("/usr/bin/python3"), None);
        assert_eq!(PyBuild::from_path("/usr/bin/python3.14-config"), None);
        assert_eq!(b(14, true).map(|b| b.label()).as_deref(), Some("3.14t"));
    }

    #[test]
    fn debug_header() {
        let mut h = Vec::new();
        h.extend_from_slice(DEBUG_COOKIE);
        h.extend_from_slice(&0x030e_0af0u64.to_le_bytes());
        h.extend_from_slice(&1u64.to_le_bytes());
        let d = DebugHeader::parse(&h).expect("parses");
        assert!(d.free_threaded);
        assert_eq!(d.version(), "3.14.10");
        assert_eq!(
            d.build(),
            PyBuild {
                minor: 14,
                free_threaded: true
            }
        );
        h[0] = b'y';
        assert_eq!(DebugHeader::parse(&h), None);
    }

    #[test]
    fn layouts_by_version() {
        let l = |m| {
            python(PyBuild {
                minor: m,
                free_threaded: false,
            })
        };
        let l13 = l(13).expect("3.13");
        assert_eq!(l13.lock, LockField::Pointer(16));
        assert!(!l13.rlock.count_is_level);
        assert_eq!(l13.thread_type_lock, ThreadTypeLock::SemT);
        assert!(l13.parking_lot.is_some());
        let l14 = l(14).expect("3.14");
        assert_eq!(l14.lock, LockField::Inline(16));
        assert!(l14.rlock.count_is_level);
        assert_eq!(l14.thread_type_lock, ThreadTypeLock::SemT);
        assert_eq!(
            l(15).map(|l| l.thread_type_lock),
            Some(ThreadTypeLock::PyMutex)
        );
        assert!(l(8).is_some_and(|l| l.parking_lot.is_none() && l.verified));
        assert!(l(16).is_some_and(|l| !l.verified));
        assert_eq!(l(7), None);
        assert_eq!(
            python(PyBuild {
                minor: 14,
                free_threaded: true
            }),
            None
        );
    }

    #[test]
    fn glibc_banner() {
        let mut b = vec![0u8; 64];
        b.extend_from_slice(
            b"GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\n",
        );
        assert_eq!(glibc_banner_version(&b), Some((2, 36)));
        assert_eq!(glibc_banner_version(b"nothing here"), None);
        assert!(glibc(Some((2, 43))).verified);
        assert!(!glibc(None).verified);
        assert_eq!(glibc(None).pthread_tid, 720);
    }

    #[test]
    fn this_process_glibc_is_read() {
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map(|t| super::super::procfs::parse_maps(&t))
            .unwrap_or_default();
        if maps.iter().any(|m| m.path.contains("libc.so")) {
            let v = libc_version(&maps).expect("libc banner");
            assert_eq!(v.0, 2);
        }
    }
}
