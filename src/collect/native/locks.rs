//! Lock owners from the outside: who holds the pthread mutex a thread waits on (field guide
//! §3.3, §3.8), namespace TID translation through `NSpid`, `pthread_t` -> TID, and the GIL wait
//! test. The decoders are pure; the readers use `process_vm_readv` and `/proc`.

use super::ptrace::read_memory;
use crate::model::{Futex, NativeFrame, Pid, Tid};
use std::collections::HashMap;

/// `FUTEX_TID_MASK`: the owner TID bits of a robust or PI futex word.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// How a pthread mutex records its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutexKind {
    /// Normal or recursive, process-private: `__lll_lock_wait`, futex op 0x80, val 2.
    Private,
    /// `PTHREAD_PROCESS_SHARED`: op 0x00, val 2.
    Shared,
    /// Robust: the futex word is the owner TID (| 0x80000000 when there are waiters).
    Robust,
    /// Priority inheritance: FUTEX_LOCK_PI, the word is the owner TID.
    PriorityInheritance,
}

/// The owner of a contended pthread mutex, as stored in the target's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutexOwner {
    pub kind: MutexKind,
    /// The owner's TID **in the target's PID namespace** (0 = released meanwhile, or unknown).
    /// Translate with [`ns_tid_map`].
    pub ns_tid: i32,
}

fn le_u32(b: &[u8; 16], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Decides whether a futex wait `(op, val)` whose first 16 bytes at `uaddr` are `word` is a
/// glibc pthread mutex, and who owns it. `None` for anything else (semaphores: op 0x109,
/// 0x189, 0x89; condition variables; the parking lot).
pub fn mutex_owner(op: u32, val: u32, word: &[u8; 16]) -> Option<MutexOwner> {
    let cmd = op & 0x7f;
    let private = op & 0x80 != 0;
    // The pthread_mutex_t layout has not changed across the glibcs in the table.
    let libc = crate::collect::abi::glibc(None);
    let lock = le_u32(word, libc.mutex_lock);
    let owner_field = le_u32(word, libc.mutex_owner) as i32;
    match cmd {
        // FUTEX_LOCK_PI: the word holds the owner TID.
        6 => Some(MutexOwner {
            kind: MutexKind::PriorityInheritance,
            ns_tid: (lock & FUTEX_TID_MASK) as i32,
        }),
        // FUTEX_WAIT: __lll_lock_wait waits for value 2; robust waits for TID|0x80000000.
        0 if val == 2 => Some(MutexOwner {
            kind: if private {
                MutexKind::Private
            } else {
                MutexKind::Shared
            },
            ns_tid: owner_field,
        }),
        0 if val & 0x8000_0000 != 0 && val & FUTEX_TID_MASK != 0 => Some(MutexOwner {
            kind: MutexKind::Robust,
            ns_tid: (val & FUTEX_TID_MASK) as i32,
        }),
        _ => None,
    }
}

/// [`mutex_owner`] for the collector's decoded futex wait (`model::Futex` with `word` read).
/// Unlike `Futex::is_mutex`, this also recognises robust mutexes (op 0, val `0x80000000|TID`).
pub fn mutex_owner_of(f: &Futex) -> Option<MutexOwner> {
    let w = f.word.as_ref()?;
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&w.value.to_le_bytes());
    b[4..8].copy_from_slice(&w.high.to_le_bytes());
    b[8..12].copy_from_slice(&w.owner_tid.to_le_bytes());
    mutex_owner(f.op, f.val, &b)
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
                ns_tid: 15499
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
                ns_tid: 321
            })
        );
        // PI: op 0x86 (LOCK_PI|PRIVATE), val 0, word = TID|waiters.
        assert_eq!(
            mutex_owner(0x86, 0, &word(0x8000_0000 | 42, 42)),
            Some(MutexOwner {
                kind: MutexKind::PriorityInheritance,
                ns_tid: 42
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
    }

    #[test]
    fn from_the_model_futex() {
        use crate::model::{FutexRegion, FutexWord};
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
        assert_eq!(mutex_owner_of(&f).map(|o| o.ns_tid), Some(15499));
        let robust = Futex {
            op: 0,
            val: 0x8000_0000 | 77,
            shared: true,
            ..f.clone()
        };
        assert_eq!(
            mutex_owner_of(&robust).map(|o| o.kind),
            Some(MutexKind::Robust)
        );
        assert_eq!(mutex_owner_of(&Futex { word: None, ..f }), None);
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
