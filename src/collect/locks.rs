//! The Python lock object behind a private futex wait: a `_thread.lock`, a `_thread.RLock`
//! (with its owner and count) or an `io.Buffered*` object's lock (with its owner), layouts from
//! [`abi`](super::abi) (field guide §3.4, §3.6).
//!
//! Two ways to a lock, by what the waiter sleeps on:
//! * a `sem_t` in the heap (3.8–3.13 thread locks, `PyThread_type_lock` up to 3.14): a bounded
//!   scan of anonymous memory for the object field pointing at it;
//! * the parking lot (3.14+ thread locks, 3.15 `PyThread_type_lock`): the key, i.e. the
//!   PyMutex address, which is inside a `_thread.lock`/`RLock` (read directly) or is pointed to
//!   by a `PyThread_type_lock` field (the same scan).

use super::abi::{self, GlibcLayout, LockField, PyLayout, ThreadTypeLock};
use super::memory::{self, Mem};
use super::procfs::MapEntry;
use crate::model::LockObject;
use std::collections::HashMap;

/// Anonymous memory one process scan may read.
const SCAN_LIMIT: u64 = 64 << 20;

/// One blocked acquire to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A futex on a heap `sem_t` at this address.
    Sem(u64),
    /// Parked in the parking lot on this key (the PyMutex address).
    Parked(u64),
}

impl Wait {
    fn addr(self) -> u64 {
        match self {
            Wait::Sem(a) | Wait::Parked(a) => a,
        }
    }
}

/// What to decode a lock with.
pub struct Layouts<'a> {
    pub py: &'a PyLayout,
    pub libc: &'a GlibcLayout,
    /// Live TIDs of the process (an owner must be one of them).
    pub tids: &'a [i32],
}

/// Finds the lock object of each wait in process `pid`. Keys of the result are the waited
/// address (`sem_t` address or parking-lot key).
pub fn find(
    pid: i32,
    maps: &[MapEntry],
    waits: &[Wait],
    l: &Layouts<'_>,
) -> HashMap<u64, LockObject> {
    let mem = memory::Remote(pid);
    let mut found = direct(&mem, waits, l);
    let pointed: Vec<u64> = waits
        .iter()
        .filter(|w| !found.contains_key(&w.addr()))
        .filter(|w| match w {
            Wait::Sem(_) => true,
            Wait::Parked(_) => l.py.thread_type_lock == ThreadTypeLock::PyMutex,
        })
        .map(|w| w.addr())
        .collect();
    if pointed.is_empty() {
        return found;
    }
    let mut types: HashMap<u64, Option<String>> = HashMap::new();
    let want = pointed.len() + found.len();
    memory::scan_words(pid, maps, &pointed, SCAN_LIMIT, |hit, v| {
        if let std::collections::hash_map::Entry::Vacant(e) = found.entry(v) {
            if let Some(lock) = pointer_owner(&mem, hit, l, &mut types) {
                e.insert(lock);
            }
        }
        found.len() < want
    });
    found
}

/// Locks found without a scan: a parked waiter's key inside a 3.14+ `_thread.lock`/`RLock`.
pub fn direct(mem: &dyn Mem, waits: &[Wait], l: &Layouts<'_>) -> HashMap<u64, LockObject> {
    let mut found = HashMap::new();
    for w in waits {
        let Wait::Parked(key) = *w else { continue };
        let LockField::Inline(off) = l.py.lock else {
            continue;
        };
        let Some(obj) = key.checked_sub(off) else {
            continue;
        };
        if let Some(lock) = thread_lock_at(mem, obj, l) {
            found.insert(key, lock);
        }
    }
    found
}

/// The object whose `PyThread_type_lock` field sits at `hit`: a `_thread.lock`/`RLock` up to
/// 3.13 or an `io.Buffered*`.
fn pointer_owner(
    mem: &dyn Mem,
    hit: u64,
    l: &Layouts<'_>,
    types: &mut HashMap<u64, Option<String>>,
) -> Option<LockObject> {
    let mut name_at = |obj: u64| -> Option<String> {
        let b = mem.read(obj.checked_add(l.py.object.ob_type)?, 8).ok()?;
        let ob_type = memory::u64_at(&b, 0)?;
        types
            .entry(ob_type)
            .or_insert_with(|| abi::type_name(mem, &l.py.object, ob_type))
            .clone()
    };
    if let LockField::Pointer(off) = l.py.lock {
        if let Some(obj) = hit.checked_sub(off) {
            if name_at(obj).is_some_and(|n| n == "_thread.lock" || n == "_thread.RLock") {
                return thread_lock_at(mem, obj, l);
            }
        }
    }
    let obj = hit.checked_sub(l.py.buffered.lock)?;
    let name = name_at(obj)?;
    if !name.starts_with("_io.Buffered") {
        return None;
    }
    let b = mem.read(obj + l.py.buffered.owner, 8).ok()?;
    let owner = memory::u64_at(&b, 0)?;
    Some(LockObject {
        kind: name,
        object: obj,
        owner,
        owner_tid: l.libc.tid_of_pthread(mem, owner, l.tids),
        count: u64::from(owner != 0),
        owner_in_parent: None,
    })
}

/// A `_thread.lock` or `_thread.RLock` at `obj`, validated by its type name.
pub fn thread_lock_at(mem: &dyn Mem, obj: u64, l: &Layouts<'_>) -> Option<LockObject> {
    let (_, name) = abi::object_type(mem, &l.py.object, obj)?;
    match name.as_str() {
        "_thread.RLock" => {
            let r = &l.py.rlock;
            let b = mem.read(obj + r.owner, 16).ok()?;
            let owner = memory::u64_at(&b, 0)?;
            let raw = memory::u64_at(&b, (r.count - r.owner) as usize)?;
            let count = if r.count_is_level && owner != 0 {
                raw + 1
            } else {
                raw
            };
            Some(LockObject {
                kind: name,
                object: obj,
                owner,
                owner_tid: l.libc.tid_of_pthread(mem, owner, l.tids),
                count,
                owner_in_parent: None,
            })
        }
        "_thread.lock" => Some(LockObject {
            kind: name,
            object: obj,
            owner: 0,
            owner_tid: None,
            count: 0,
            owner_in_parent: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::abi::{glibc, python, PyBuild};
    use crate::collect::memory::FakeMem;

    const LOCK_TYPE: u64 = 0x5000;
    const RLOCK_TYPE: u64 = 0x6000;
    const BUF_TYPE: u64 = 0x7000;

    /// Type objects whose `tp_name` (at +24) points at a C string.
    fn types(m: &mut FakeMem) {
        for (t, name) in [
            (LOCK_TYPE, "_thread.lock"),
            (RLOCK_TYPE, "_thread.RLock"),
            (BUF_TYPE, "_io.BufferedWriter"),
        ] {
            m.zeroed(t, 64);
            m.put_u64(t + 24, t + 0x800);
            let mut s = name.as_bytes().to_vec();
            s.resize(64, 0);
            m.put(t + 0x800, &s);
        }
    }

    fn layout(minor: u8) -> PyLayout {
        python(PyBuild {
            minor,
            free_threaded: false,
        })
        .expect("layout")
    }

    #[test]
    fn rlock_on_314_is_a_recursive_pymutex() {
        let mut m = FakeMem::default();
        types(&mut m);
        let obj = 0x10_000;
        let thread = 0x20_000; // a pthread_t whose struct pthread holds TID 77 at +720
        m.zeroed(obj, 48);
        m.put_u64(obj + 8, RLOCK_TYPE);
        m.put(obj + 16, &[1]); // PyMutex locked
        m.put_u64(obj + 24, thread);
        m.put_u64(obj + 32, 1); // level 1 = acquired twice
        m.zeroed(thread, 1024);
        m.put(thread + 720, &77i32.to_le_bytes());
        let py = layout(14);
        let libc = glibc(Some((2, 43)));
        let l = Layouts {
            py: &py,
            libc: &libc,
            tids: &[77],
        };
        let found = direct(&m, &[Wait::Parked(obj + 16)], &l);
        let lock = found.get(&(obj + 16)).expect("found by key");
        assert_eq!(lock.kind, "_thread.RLock");
        assert_eq!(
            (lock.owner, lock.count, lock.owner_tid),
            (thread, 2, Some(77))
        );
        // The same owner seen from a fork child: its TID is not a live thread there.
        let child = Layouts { tids: &[99], ..l };
        let lock = thread_lock_at(&m, obj, &child).expect("rlock");
        assert_eq!(lock.owner_tid, None);
    }

    #[test]
    fn rlock_before_314_counts_directly() {
        let mut m = FakeMem::default();
        types(&mut m);
        let obj = 0x10_000;
        m.zeroed(obj, 48);
        m.put_u64(obj + 8, RLOCK_TYPE);
        m.put_u64(obj + 16, 0x30_000); // sem_t*
        m.put_u64(obj + 24, 0x20_000);
        m.put_u64(obj + 32, 2);
        let py = layout(13);
        let libc = glibc(None);
        let l = Layouts {
            py: &py,
            libc: &libc,
            tids: &[],
        };
        let lock = thread_lock_at(&m, obj, &l).expect("rlock");
        assert_eq!((lock.owner, lock.count), (0x20_000, 2));
        // A parked key is not looked up inside objects before 3.14.
        assert!(direct(&m, &[Wait::Parked(obj + 16)], &l).is_empty());
        let mut types_seen = HashMap::new();
        let via_pointer = pointer_owner(&m, obj + 16, &l, &mut types_seen).expect("by pointer");
        assert_eq!(via_pointer.object, obj);
    }

    #[test]
    fn plain_lock_and_a_non_lock() {
        let mut m = FakeMem::default();
        types(&mut m);
        let obj = 0x10_000;
        m.zeroed(obj, 48);
        m.put_u64(obj + 8, LOCK_TYPE);
        let py = layout(15);
        let libc = glibc(None);
        let l = Layouts {
            py: &py,
            libc: &libc,
            tids: &[],
        };
        let found = direct(&m, &[Wait::Parked(obj + 16), Wait::Parked(0x99_000)], &l);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&(obj + 16)].kind, "_thread.lock");
        // Garbage type pointer: not a lock.
        m.put_u64(obj + 8, 0x1234);
        assert!(thread_lock_at(&m, obj, &l).is_none());
    }

    #[test]
    fn buffered_writer_lock_and_owner() {
        let mut m = FakeMem::default();
        types(&mut m);
        let obj = 0x10_000;
        let thread = 0x20_000;
        m.zeroed(obj, 160);
        m.put_u64(obj + 8, BUF_TYPE);
        m.put_u64(obj + 104, 0x40_000); // PyThread_type_lock (3.15: a heap PyMutex)
        m.put_u64(obj + 112, thread);
        m.zeroed(thread, 1024); // TID 0: the owner's thread does not exist here
        let py = layout(15);
        let libc = glibc(None);
        let l = Layouts {
            py: &py,
            libc: &libc,
            tids: &[5],
        };
        let mut t = HashMap::new();
        let lock = pointer_owner(&m, obj + 104, &l, &mut t).expect("buffered");
        assert_eq!(lock.kind, "_io.BufferedWriter");
        assert_eq!((lock.owner, lock.count, lock.owner_tid), (thread, 1, None));
    }
}
