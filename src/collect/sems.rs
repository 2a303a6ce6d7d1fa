//! Shared semaphores: `/dev/shm/sem.*` mappings matched by dev:inode, their `sem_t` value and
//! waiters, and (on demand) the `_multiprocessing.SemLock` objects that say who holds them.

use super::memory;
use super::procfs::MapEntry;
use crate::model::{Pid, SemKey, SemLockSeen};

/// Reads `sem_t` value (low 32 bits) and waiters (high 32 bits) at a mapping start.
pub fn read_sem(pid: i32, start: u64) -> Option<(u32, u32)> {
    let b = memory::read(pid, start, 8).ok()?;
    Some((memory::u32_at(&b, 0)?, memory::u32_at(&b, 4)?))
}

/// How much anonymous memory one process scan may read.
const SCAN_LIMIT: u64 = 96 << 20;

/// Scans the anonymous read-write memory of `pid` for SemLock objects whose handle is `handle`
/// (the address of this process's mapping of the semaphore). Layout, identical in 3.8–3.13:
/// +8 ob_type, +16 handle, +24 last_tid (pthread_t), +32 count, +36 maxvalue, +40 kind.
pub fn scan_semlocks(
    pid: i32,
    maps: &[MapEntry],
    handle: u64,
    tids: &[i32],
) -> Vec<(u64, SemLockSeen)> {
    let mut found = Vec::new();
    let mut type_ok: Option<u64> = None;
    memory::scan_words(pid, maps, &[handle], SCAN_LIMIT, |hit, _| {
        if hit >= 16 {
            if let Some(s) = check_object(pid, hit - 16, &mut type_ok, tids) {
                found.push((hit - 16, s));
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
    tids: &[i32],
) -> Option<Vec<(u64, SemLockSeen)>> {
    let mut type_ok = None;
    let mut out = Vec::new();
    for a in addrs {
        let b = memory::read(pid, a + 16, 8).ok()?;
        if memory::u64_at(&b, 0)? != handle {
            return None;
        }
        out.push((*a, check_object(pid, *a, &mut type_ok, tids)?));
    }
    Some(out)
}

fn check_object(
    pid: i32,
    obj: u64,
    type_ok: &mut Option<u64>,
    tids: &[i32],
) -> Option<SemLockSeen> {
    let b = memory::read(pid, obj, 48).ok()?;
    let ob_type = memory::u64_at(&b, 8)?;
    if *type_ok != Some(ob_type) {
        if !memory::type_name(pid, ob_type)?.ends_with("SemLock") {
            return None;
        }
        *type_ok = Some(ob_type);
    }
    let last = memory::u64_at(&b, 24)?;
    let count = memory::i32_at(&b, 32)?;
    Some(SemLockSeen {
        pid: Pid(pid),
        count,
        maxvalue: memory::i32_at(&b, 36)?,
        kind: memory::i32_at(&b, 40)?,
        // Only a holder's last acquirer matters; skip the read for the others.
        last_tid: if count > 0 {
            super::python::tid_of_pthread(pid, last, tids)
        } else {
            None
        },
    })
}

/// The key under which a mapping is matched across processes.
pub fn key_of(m: &MapEntry) -> SemKey {
    SemKey(m.file_key())
}
