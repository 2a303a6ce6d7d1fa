//! Shared semaphores: `/dev/shm/sem.*` mappings matched by dev:inode, their `sem_t` value and
//! waiters, and (on demand) the `_multiprocessing.SemLock` objects that say who holds them.
//! Layouts from [`abi`](super::abi).

use super::abi::{self, GlibcLayout, PyLayout};
use super::memory::{self, Mem};
use super::procfs::MapEntry;
use crate::model::{Pid, SemKey, SemLockSeen};

/// Reads `sem_t` value and waiters at a mapping start.
pub fn read_sem(pid: i32, start: u64, libc: &GlibcLayout) -> Option<(u32, u32)> {
    let b = memory::read(pid, start, 8).ok()?;
    libc.sem(&b)
}

/// How much anonymous memory one process scan may read.
const SCAN_LIMIT: u64 = 96 << 20;

/// What a SemLock is decoded with.
pub struct Layouts<'a> {
    pub py: &'a PyLayout,
    pub libc: &'a GlibcLayout,
    /// Live TIDs of the process.
    pub tids: &'a [i32],
}

/// Scans the anonymous read-write memory of `pid` for SemLock objects whose handle is `handle`
/// (the address of this process's mapping of the semaphore).
pub fn scan_semlocks(
    pid: i32,
    maps: &[MapEntry],
    handle: u64,
    l: &Layouts<'_>,
) -> Vec<(u64, SemLockSeen)> {
    let mem = memory::Remote(pid);
    let mut found = Vec::new();
    let mut type_ok: Option<u64> = None;
    let off = l.py.semlock.handle;
    memory::scan_words(pid, maps, &[handle], SCAN_LIMIT, |hit, _| {
        if let Some(obj) = hit.checked_sub(off) {
            if let Some(s) = check_object(&mem, pid, obj, &mut type_ok, l) {
                found.push((obj, s));
            }
        }
        true
    });
    found
}

/// Reads SemLock objects at addresses already found in a process with the same layout (a
/// forked child inherits its parent's objects at the same addresses). None when any address no
/// longer holds a SemLock for `handle`, so the caller falls back to a full scan.
pub fn probe_semlocks(
    pid: i32,
    addrs: &[u64],
    handle: u64,
    l: &Layouts<'_>,
) -> Option<Vec<(u64, SemLockSeen)>> {
    let mem = memory::Remote(pid);
    let mut type_ok = None;
    let mut out = Vec::new();
    for a in addrs {
        let b = mem.read(a + l.py.semlock.handle, 8).ok()?;
        if memory::u64_at(&b, 0)? != handle {
            return None;
        }
        out.push((*a, check_object(&mem, pid, *a, &mut type_ok, l)?));
    }
    Some(out)
}

/// A SemLock at `obj`, validated by its type name (`type_ok` caches the accepted type).
pub fn check_object(
    mem: &dyn Mem,
    pid: i32,
    obj: u64,
    type_ok: &mut Option<u64>,
    l: &Layouts<'_>,
) -> Option<SemLockSeen> {
    let s = &l.py.semlock;
    let b = mem.read(obj, s.size).ok()?;
    let ob_type = memory::u64_at(&b, l.py.object.ob_type as usize)?;
    if *type_ok != Some(ob_type) {
        if !abi::type_name(mem, &l.py.object, ob_type)?.ends_with("SemLock") {
            return None;
        }
        *type_ok = Some(ob_type);
    }
    let last = memory::u64_at(&b, s.last_tid as usize)?;
    let count = memory::i32_at(&b, s.count as usize)?;
    Some(SemLockSeen {
        pid: Pid(pid),
        count,
        maxvalue: memory::i32_at(&b, s.maxvalue as usize)?,
        kind: memory::i32_at(&b, s.kind as usize)?,
        // Only a holder's last acquirer matters; skip the read for the others.
        last_tid: if count > 0 {
            l.libc.tid_of_pthread(mem, last, l.tids)
        } else {
            None
        },
    })
}

/// The key under which a mapping is matched across processes.
pub fn key_of(m: &MapEntry) -> SemKey {
    SemKey(m.file_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::abi::{glibc, python, PyBuild};
    use crate::collect::memory::FakeMem;

    #[test]
    fn a_held_semlock_names_its_last_acquirer() {
        let mut m = FakeMem::default();
        let ty = 0x5000;
        m.zeroed(ty, 64);
        m.put_u64(ty + 24, 0x9000);
        m.zeroed(0x9000, 64);
        m.put(0x9000, b"_multiprocessing.SemLock");
        let obj = 0x10_000;
        m.zeroed(obj, 48);
        m.put_u64(obj + 8, ty);
        m.put_u64(obj + 16, 0x7f00_0000); // handle
        m.put_u64(obj + 24, 0x20_000); // last_tid (pthread_t)
        m.put(obj + 32, &1i32.to_le_bytes()); // count
        m.put(obj + 36, &1i32.to_le_bytes()); // maxvalue
        m.put(obj + 40, &1i32.to_le_bytes()); // kind SEMAPHORE
        m.zeroed(0x20_000, 1024);
        m.put(0x20_000 + 720, &4242i32.to_le_bytes());
        for minor in [8, 13, 14, 15] {
            let py = python(PyBuild {
                minor,
                free_threaded: false,
            })
            .expect("layout");
            let libc = glibc(Some((2, 36)));
            let l = Layouts {
                py: &py,
                libc: &libc,
                tids: &[4242],
            };
            let s = check_object(&m, 7, obj, &mut None, &l).expect("semlock");
            assert_eq!(
                (s.count, s.maxvalue, s.kind, s.last_tid),
                (1, 1, 1, Some(4242))
            );
        }
        assert_eq!(glibc(None).sem(&[0, 0, 0, 0, 2, 0, 0, 0]), Some((0, 2)));
    }
}
