//! Lock owners from the outside: who holds the pthread mutex a thread waits on (field guide
//! §3.3, §3.8), namespace TID translation through `NSpid`, `pthread_t` -> TID, and the GIL wait
//! test. The decoders are pure; the readers use `process_vm_readv` and `/proc`.

use super::ptrace::read_memory;
use crate::model::{NativeFrame, Pid, Tid};
use std::collections::HashMap;

pub use crate::model::{MutexKind, MutexOwner};

/// [`crate::model::mutex_owner`] on the first 16 bytes at a futex address, read with the
/// pthread_mutex_t layout (unchanged across the glibcs in the table). The TID is the target
/// namespace's: translate it with [`ns_tid_map`].
pub fn mutex_owner(op: u32, val: u32, word: &[u8; 16]) -> Option<MutexOwner> {
    let libc = crate::collect::abi::glibc(None);
    let lock = crate::collect::memory::u32_at(word, libc.mutex_lock)?;
    let owner = crate::collect::memory::i32_at(word, libc.mutex_owner)?;
    crate::model::mutex_owner(op, val, lock, owner)
}

/// Reads the 16 bytes at a futex address (the sem_t or mutex head).
pub fn read_futex_word(pid: Pid, uaddr: u64) -> Option<[u8; 16]> {
    let b = read_memory(pid, uaddr, 16).ok()?;
    b.try_into().ok()
}

/// Namespace TID -> TID for every live thread of `pid` (identity outside containers).
pub fn ns_tid_map(pid: Pid) -> HashMap<i32, Tid> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", pid.0)) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let nspid = crate::collect::procfs::parse_status(&status).nspid;
        if let (Some(&outer), Some(&inner)) = (nspid.first(), nspid.last()) {
            out.insert(inner, Tid(outer));
        }
    }
    out
}

/// True when the thread is waiting to take the GIL (a `take_gil` frame, as pystack and
/// CPython's gdb helpers decide). Such a wait is CPU contention, not a deadlock.
pub fn waits_for_gil(frames: &[NativeFrame]) -> bool {
    crate::model::waits_for_gil(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(lock: u32, owner: i32) -> [u8; 16] {
        let mut w = [0u8; 16];
        w[..4].copy_from_slice(&lock.to_le_bytes());
        w[8..12].copy_from_slice(&owner.to_le_bytes());
        w
    }

    #[test]
    fn mutex_kinds_from_the_field_guide_table() {
        // normal / recursive: op 0x80, val 2, __lock 2, __owner TID.
        assert_eq!(
            mutex_owner(0x80, 2, &word(2, 15499)),
            Some(MutexOwner {
                kind: MutexKind::Private,
                tid: 15499
            })
        );
        // PROCESS_SHARED: op 0, val 2.
        assert_eq!(
            mutex_owner(0, 2, &word(2, 77)).map(|o| o.kind),
            Some(MutexKind::Shared)
        );
        // robust: op 0, val 0x80000000|TID.
        assert_eq!(
            mutex_owner(0, 0x8000_0000 | 321, &word(0x8000_0000 | 321, 321)),
            Some(MutexOwner {
                kind: MutexKind::Robust,
                tid: 321
            })
        );
        // PI: op 0x86 (LOCK_PI|PRIVATE), val 0, word = TID|waiters.
        assert_eq!(
            mutex_owner(0x86, 0, &word(0x8000_0000 | 42, 42)),
            Some(MutexOwner {
                kind: MutexKind::PriorityInheritance,
                tid: 42
            })
        );
    }

    #[test]
    fn semaphores_are_not_mutexes() {
        for op in [0x109, 0x189, 0x89] {
            assert_eq!(mutex_owner(op, 0, &word(0, 0)), None);
        }
        // A plain FUTEX_WAIT with val 0 (e.g. a condition variable) is not a mutex either.
        assert_eq!(mutex_owner(0x80, 0, &word(0, 0)), None);
        // LOCK_PI2 is a PI mutex too; a robust word names its owner when `__owner` is 0.
        assert_eq!(
            mutex_owner(0x8d, 0, &word(0x8000_0000 | 42, 0)).map(|o| (o.kind, o.tid)),
            Some((MutexKind::PriorityInheritance, 42))
        );
    }

    #[test]
    fn from_the_model_futex() {
        use crate::model::{Futex, FutexRegion, FutexWord};
        let f = Futex {
            uaddr: 0x7f00_0000_1000,
            op: 0x80,
            val: 2,
            shared: false,
            timed: false,
            region: FutexRegion::Heap,
            word: Some(FutexWord {
                value: 2,
                high: 0,
                owner_tid: 15499,
            }),
            lock: None,
        };
        assert_eq!(f.mutex_owner().map(|o| o.tid), Some(15499));
        let robust = Futex {
            op: 0,
            val: 0x8000_0000 | 77,
            shared: true,
            ..f.clone()
        };
        assert_eq!(
            robust.mutex_owner().map(|o| o.kind),
            Some(MutexKind::Robust)
        );
        assert_eq!(Futex { word: None, ..f }.mutex_owner(), None);
    }

    #[test]
    fn gil_wait_needs_take_gil() {
        let f = |n: &str| NativeFrame {
            addr: 1,
            module: Some("libpython3.11.so.1.0".into()),
            function: Some(n.into()),
            file: None,
            line: None,
        };
        assert!(waits_for_gil(&[
            f("__futex_abstimed_wait_common"),
            f("take_gil")
        ]));
        assert!(waits_for_gil(&[f("take_gil.constprop.0")]));
        assert!(!waits_for_gil(&[
            f("drop_gil"),
            f("PyThread_acquire_lock_timed")
        ]));
    }

    #[test]
    fn own_tcb_gives_own_tid() {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let pid = std::process::id() as i32;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|t| crate::collect::procfs::parse_maps(&t))
            .unwrap_or_default();
        let libc = crate::collect::abi::glibc(crate::collect::abi::libc_version(&maps));
        assert_eq!(
            libc.tid_of_pthread(&crate::collect::memory::Remote(pid), me, &[tid]),
            Some(tid)
        );
    }
}
