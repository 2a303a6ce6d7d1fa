//! `threading` lock objects behind a futex: a bounded scan of a process's anonymous memory for
//! the `_thread.lock`/`_thread.RLock` whose `sem_t*` is the waited address, giving an RLock's
//! owner (`rlock_owner`, a `pthread_t`) and count (field guide §3.4, `find_lock_object.py`).

use super::memory;
use super::procfs::MapEntry;
use crate::model::LockObject;
use std::collections::HashMap;

/// Anonymous memory one process scan may read.
const SCAN_LIMIT: u64 = 64 << 20;

/// Finds the lock objects whose `lock_lock`/`rlock_lock` (at +16) is one of `uaddrs`.
/// Layout (3.8–3.13.0): +8 ob_type, +16 sem_t*, RLock: +24 rlock_owner, +32 rlock_count.
pub fn find(pid: i32, maps: &[MapEntry], uaddrs: &[u64], tids: &[i32]) -> HashMap<u64, LockObject> {
    let mut found = HashMap::new();
    let mut types: HashMap<u64, Option<String>> = HashMap::new();
    memory::scan_words(pid, maps, uaddrs, SCAN_LIMIT, |hit, v| {
        if hit >= 16 {
            if let Some(l) = check(pid, hit - 16, &mut types, tids) {
                found.entry(v).or_insert(l);
            }
        }
        found.len() < uaddrs.len()
    });
    found
}

fn check(
    pid: i32,
    obj: u64,
    types: &mut HashMap<u64, Option<String>>,
    tids: &[i32],
) -> Option<LockObject> {
    let b = memory::read(pid, obj, 40).ok()?;
    let ob_type = memory::u64_at(&b, 8)?;
    let name = types
        .entry(ob_type)
        .or_insert_with(|| memory::type_name(pid, ob_type))
        .clone()?;
    match name.as_str() {
        "_thread.RLock" => {
            let owner = memory::u64_at(&b, 24)?;
            Some(LockObject {
                kind: name,
                object: obj,
                owner,
                owner_tid: super::python::tid_of_pthread(pid, owner, tids),
                count: memory::u64_at(&b, 32)?,
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
