//! Live native stacks: lock waits (3.11, 3.13), pthread mutex owners across fork and PID
//! namespaces, merging against py-spy, the vdso, and diagnostics for missing threads.

use super::*;
use mphang::collect::native::{
    mutex_owner, ns_tid_map, read_futex_word, sample, waits_for_gil, MutexKind, NativeCache,
};
use mphang::model::{Pid, Tid};

fn check_lock_stack(python: &str, libpython: &str) {
    let dir = scratch(&format!("lock-{libpython}"));
    let Some(mut t) = Target::start(python, "lock", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, blocked) = (ids[0], Tid(ids[1]));
    let mut cache = NativeCache::new();
    let s = sample(Pid(pid), &tids_of(pid), &mut cache);
    if denied(&s) {
        return;
    }
    let th = s
        .threads
        .iter()
        .find(|th| th.tid == blocked)
        .expect("blocked thread sampled");
    let names = fn_names(th);
    eprintln!(
        "{python}: thread {blocked} stack:\n  {}",
        names.join("\n  ")
    );
    eprintln!("max_stop {:?}, diagnostics {:?}", s.max_stop, s.diagnostics);
    let libc_wait = th.frames.iter().any(|f| {
        f.module.as_deref() == Some("libc.so.6")
            && matches!(
                f.function.as_deref(),
                Some(
                    "sem_wait"
                        | "do_futex_wait"
                        | "__new_sem_wait_slow64"
                        | "__futex_abstimed_wait_common"
                )
            )
    });
    assert!(libc_wait, "no libc semaphore wait frame");
    let acquire = th
        .frames
        .iter()
        .find(|f| f.function.as_deref() == Some("PyThread_acquire_lock_timed"))
        .expect("PyThread_acquire_lock_timed frame");
    assert!(acquire
        .module
        .as_deref()
        .is_some_and(|m| m.starts_with(libpython)));
    assert!(
        acquire
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("thread_pthread.h")),
        "{acquire:?}"
    );
    assert!(acquire.line.is_some_and(|l| l > 0));
    let syscall = th.syscall_before.as_deref().expect("syscall line");
    assert!(
        syscall.starts_with("202 "),
        "blocked in futex before the stop: {syscall}"
    );
    assert_ne!(th.fs_base, 0);
    assert!(!waits_for_gil(&th.frames));
    // A thread left stopped would show 't'.
    for tid in tids_of(pid) {
        assert!(
            !matches!(state_of(pid, tid), Some('t' | 'T')),
            "thread {tid} left stopped"
        );
    }
}

#[test]
fn lock_wait_stack_311() {
    check_lock_stack(PY311, "libpython3.11");
}

#[test]
fn lock_wait_stack_38() {
    check_lock_stack(PY38, "libpython3.8");
}

#[test]
fn lock_wait_stack_310() {
    check_lock_stack(PY310, "libpython3.10");
}

#[test]
fn lock_wait_stack_313() {
    check_lock_stack(PY313, "libpython3.13");
}

#[test]
fn fork_child_blocked_on_parent_threads_mutex() {
    let dir = scratch("fork-mutex");
    let Some(mut t) = Target::start(PY311, "fork_mutex", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (parent, holder, child) = (ids[0], ids[1], ids[2]);
    let line =
        std::fs::read_to_string(format!("/proc/{child}/task/{child}/syscall")).expect("syscall");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], "202", "child should wait in futex: {line}");
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let (uaddr, op, val) = (hex(f[1]), hex(f[2]) as u32, hex(f[3]) as u32);
    let word = read_futex_word(Pid(child), uaddr).expect("read futex word");
    let owner = mutex_owner(op, val, &word).expect("a pthread mutex");
    eprintln!("child {child}: futex {uaddr:#x} op {op:#x} val {val}: owner {owner:?} (holder {holder} in parent {parent})");
    assert_eq!(owner.kind, MutexKind::Private);
    assert_eq!(owner.tid, holder);
    let child_tids = ns_tid_map(Pid(child));
    assert!(
        !child_tids.contains_key(&owner.tid),
        "owner must not be a thread of the child"
    );
    assert!(
        ns_tid_map(Pid(parent)).contains_key(&owner.tid),
        "owner is a parent thread"
    );

    let mut cache = NativeCache::new();
    let s = sample(Pid(child), &tids_of(child), &mut cache);
    if denied(&s) {
        return;
    }
    let names = fn_names(&s.threads[0]);
    eprintln!("child stack:\n  {}", names.join("\n  "));
    assert!(s.threads[0].frames.iter().any(|f| f
        .function
        .as_deref()
        .is_some_and(|n| n.contains("lll_lock_wait") || n.contains("pthread_mutex_lock"))));
}

#[test]
fn mutex_owner_in_a_pid_namespace() {
    let dir = scratch("pidns");
    let wrapper = ["unshare", "--pid", "--fork", "--mount-proc"];
    let Some(mut t) = Target::start_wrapped(&wrapper, PY311, "fork_mutex", &dir, &[]) else {
        return;
    };
    let ids = t.wait_ready();
    let (ns_parent, ns_holder, ns_child) = (ids[0], ids[1], ids[2]);
    if ns_parent != 1 {
        eprintln!("skipping: unshare did not create a PID namespace (parent pid {ns_parent})");
        return;
    }
    // Host view: unshare -> python parent (ns pid 1) -> forked child.
    let unshare = t.child.id() as i32;
    let parent = *children_of(unshare).first().expect("python under unshare");
    let child = *children_of(parent).first().expect("forked child");
    let line =
        std::fs::read_to_string(format!("/proc/{child}/task/{child}/syscall")).expect("syscall");
    let f: Vec<&str> = line.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let (uaddr, op, val) = (hex(f[1]), hex(f[2]) as u32, hex(f[3]) as u32);
    let word = read_futex_word(Pid(child), uaddr).expect("futex word");
    let owner = mutex_owner(op, val, &word).expect("pthread mutex");
    let host_holder = ns_tid_map(Pid(parent))
        .get(&owner.tid)
        .copied()
        .expect("owner is a thread of the parent, by NSpid");
    eprintln!(
        "pid ns: child {child} (ns {ns_child}) waits on mutex owned by ns tid {} = host tid {host_holder} \
         in parent {parent} (ns 1)",
        owner.tid
    );
    assert_eq!(owner.tid, ns_holder);
    assert_ne!(host_holder.0, ns_holder, "namespace and host TIDs differ");
    assert!(!ns_tid_map(Pid(child)).contains_key(&owner.tid));
    // The same thread by its pthread_t (fs_base from a sample) -> TCB tid -> NSpid -> host TID.
    let mut cache = NativeCache::new();
    let s = sample(Pid(parent), &tids_of(parent), &mut cache);
    if denied(&s) {
        return;
    }
    let holder_thread = s
        .threads
        .iter()
        .find(|t| t.tid == host_holder)
        .expect("holder sampled");
    assert_eq!(
        s.tid_by_pthread().get(&holder_thread.fs_base),
        Some(&host_holder)
    );
    // Files were read through /proc/PID/root of a process in another mount namespace.
    assert!(holder_thread.frames.iter().any(|f| f.function.as_deref()
        == Some("PyThread_acquire_lock_timed")
        || f.function
            .as_deref()
            .is_some_and(|n| n.contains("clock_nanosleep"))));
}

fn check_merge_against_py_spy(python: &str) {
    use mphang::collect::native::{merge, merge_with_entries, MergedFrame};
    use mphang::model::PyFrame;
    let dir = scratch(&format!("merge-{}", python.replace('/', "_")));
    let Some(mut t) = Target::start(python, "lock", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, blocked) = (ids[0], Tid(ids[1]));
    let mut cache = NativeCache::new();
    let s = sample(Pid(pid), &tids_of(pid), &mut cache);
    if denied(&s) {
        return;
    }
    let Some(th) = s.threads.iter().find(|t| t.tid == blocked) else {
        panic!("thread {blocked} not sampled: {:?}", s.diagnostics);
    };
    // Python frames from py-spy (library). Blocking mode: py-spy seizes the threads itself for a
    // consistent read, which is fine because our own sample has already detached (a thread has
    // one tracer; never run both at once).
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::Lock,
        ..py_spy::Config::default()
    };
    // `retry_new` is the entry point py-spy's CLI uses (it also checks that a stack can be read).
    let mut spy = match py_spy::PythonSpy::retry_new(pid, &config, 5) {
        Ok(s) => s,
        Err(e) => panic!("py-spy could not attach to {pid}: {e:#}"),
    };
    let traces = spy.get_stack_traces().expect("py-spy stacks");
    // fs_base == pthread_self() == py-spy's thread_id: the join key.
    let trace = traces
        .iter()
        .find(|tr| tr.thread_id == th.fs_base)
        .expect("py-spy thread with thread_id == fs_base");
    let py: Vec<PyFrame> = trace
        .frames
        .iter()
        .map(|f| PyFrame {
            function: f.name.clone(),
            file: f.filename.clone(),
            line: f.line,
            entry: f.is_entry || f.is_shim_entry,
        })
        .collect();
    let entries: Vec<bool> = trace
        .frames
        .iter()
        .map(|f| f.is_entry || f.is_shim_entry)
        .collect();
    let show = |m: &[MergedFrame]| -> Vec<String> {
        m.iter()
            .map(|f| match f {
                MergedFrame::Python(p) => format!("py {} ({})", p.function, p.short_location()),
                MergedFrame::Native(n) => format!("c  {}", n.function.as_deref().unwrap_or("?")),
            })
            .collect()
    };
    let exact = merge_with_entries(&py, &entries, &th.frames);
    let guess = merge(&py, &th.frames);
    eprintln!(
        "{python}: merged (py-spy entry flags {entries:?}):\n  {}",
        show(&exact).join("\n  ")
    );
    assert_eq!(
        exact, guess,
        "the heuristic split matches py-spy's entry flags here"
    );
    let pys: Vec<&PyFrame> = exact
        .iter()
        .filter_map(|f| match f {
            MergedFrame::Python(p) => Some(p),
            MergedFrame::Native(_) => None,
        })
        .collect();
    assert_eq!(pys.len(), py.len(), "every Python frame appears once");
    let first_py = exact
        .iter()
        .position(|f| matches!(f, MergedFrame::Python(_)))
        .expect("python frames");
    assert!(matches!(&exact[first_py], MergedFrame::Python(p) if p.function.ends_with("body")));
    assert!(
        matches!(&exact[first_py - 1], MergedFrame::Native(n) if n.function.as_deref() == Some("lock_PyThread_acquire_lock")),
        "the C lock call sits right inside the Python frame that made it"
    );
}

#[test]
fn merge_matches_py_spy_311() {
    check_merge_against_py_spy(PY311);
}

#[test]
fn merge_matches_py_spy_38() {
    check_merge_against_py_spy(PY38);
}

#[test]
fn merge_matches_py_spy_310() {
    check_merge_against_py_spy(PY310);
}

#[test]
fn merge_matches_py_spy_313() {
    check_merge_against_py_spy(PY313);
}

#[test]
fn unwinds_through_the_vdso() {
    let dir = scratch("clock");
    let Some(mut t) = Target::start(PY311, "clock", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, tid) = (ids[0], Tid(ids[1]));
    let mut cache = NativeCache::new();
    for i in 0..400 {
        let s = sample(Pid(pid), &[tid], &mut cache);
        if denied(&s) {
            return;
        }
        let Some(th) = s.threads.first() else {
            continue;
        };
        let in_vdso = th
            .frames
            .first()
            .is_some_and(|f| f.module.as_deref() == Some("[vdso]"));
        if in_vdso {
            eprintln!(
                "sample {i}: stopped in the vdso:\n  {}",
                fn_names(th).join("\n  ")
            );
            assert!(th.frames[0].function.is_some(), "vdso symbol");
            assert!(
                th.frames
                    .iter()
                    .any(|f| f.function.as_deref() == Some("_PyEval_EvalFrameDefault")),
                "the unwind continues past the vdso into the eval loop"
            );
            return;
        }
    }
    eprintln!("note: never caught the thread inside the vdso in 400 samples");
}

#[test]
fn mutex_kinds_normal_robust_pi() {
    let dir = scratch("mutex-kinds");
    let Some(mut t) = Target::start(PY311, "mutex_kinds", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, holder) = (ids[0], ids[1]);
    let kinds = [
        (ids[2], MutexKind::Private),
        (ids[3], MutexKind::Robust),
        (ids[4], MutexKind::PriorityInheritance),
    ];
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let map = ns_tid_map(Pid(pid));
    for (waiter, kind) in kinds {
        let line =
            std::fs::read_to_string(format!("/proc/{pid}/task/{waiter}/syscall")).expect("syscall");
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "202", "{kind:?} waiter in futex: {line}");
        let (uaddr, op, val) = (hex(f[1]), hex(f[2]) as u32, hex(f[3]) as u32);
        let word = read_futex_word(Pid(pid), uaddr).expect("word");
        let owner = mutex_owner(op, val, &word);
        eprintln!("{kind:?}: futex op {op:#x} val {val:#x} -> {owner:?}");
        let owner = owner.expect("a mutex");
        assert_eq!(owner.kind, kind);
        assert_eq!(owner.tid, holder);
        assert_eq!(map.get(&owner.tid), Some(&Tid(holder)));
    }
}

#[test]
fn gil_waiters_have_take_gil() {
    let dir = scratch("gil");
    let Some(mut t) = Target::start(PY311, "gil", &dir, None) else {
        return;
    };
    let pid = t.wait_ready()[0];
    let mut cache = NativeCache::new();
    for i in 0..50 {
        let s = sample(Pid(pid), &tids_of(pid), &mut cache);
        if denied(&s) {
            return;
        }
        let waiting: Vec<_> = s
            .threads
            .iter()
            .filter(|th| waits_for_gil(&th.frames))
            .collect();
        if let Some(th) = waiting.first() {
            eprintln!(
                "sample {i}: {} of {} threads wait for the GIL; e.g. thread {}:\n  {}",
                waiting.len(),
                s.threads.len(),
                th.tid,
                fn_names(th).join("\n  ")
            );
            return;
        }
    }
    panic!("no thread was ever seen in take_gil while three threads spin");
}

#[test]
fn exited_and_unknown_threads_are_diagnostics() {
    let mut cache = NativeCache::new();
    // Our own process: refused with a diagnostic (a thread cannot trace its own process).
    let me = std::process::id() as i32;
    let s = sample(Pid(me), &tids_of(me), &mut cache);
    assert!(s.threads.is_empty() && s.diagnostics.len() == 1, "{s:?}");
    // A TID that does not exist in a live process: Gone, not a panic or an error.
    let dir = scratch("gone");
    let Some(mut t) = Target::start(PY311, "lock", &dir, None) else {
        return;
    };
    let pid = t.wait_ready()[0];
    let s = sample(Pid(pid), &[Tid(i32::MAX - 7)], &mut cache);
    assert!(s.threads.is_empty());
    assert!(
        s.diagnostics.iter().any(|d| d.kind == DiagKind::Gone),
        "{:?}",
        s.diagnostics
    );
    // Threads the caller did not list are reported as new.
    assert!(
        s.diagnostics
            .iter()
            .any(|d| d.message.contains("appeared during sampling")),
        "{:?}",
        s.diagnostics
    );
    // A process that does not exist.
    let s = sample(Pid(i32::MAX - 7), &[Tid(i32::MAX - 7)], &mut cache);
    assert!(s.threads.is_empty() && !s.diagnostics.is_empty());
}

/// Native names kept across runs (`symcache`, by build-id) are the names a cold run resolves:
/// a cold run writes the cache, a warm one reads it, and both give the same frames as a run
/// with the cache off.
#[test]
fn names_kept_across_runs_are_the_names_resolved() {
    let dir = scratch("symcache");
    let Some(mut t) = Target::start(PY311, "lock", &dir, None) else {
        return;
    };
    let pid = t.wait_ready()[0];
    let cache = dir.join("cache");
    let natives = |cache_dir: &std::ffi::OsStr| -> Vec<serde_json::Value> {
        let o = crate::util::bin()
            .args(["report", "--samples", "1", "--json"])
            .arg(pid.to_string())
            .env("MPHANG_CACHE_DIR", cache_dir)
            .output()
            .expect("run mphang");
        let r = mphang::render::json::parse_report(&String::from_utf8_lossy(&o.stdout))
            .expect("a report");
        r.snapshot
            .processes
            .iter()
            .flat_map(|p| &p.threads)
            .map(|t| serde_json::to_value(&t.native).expect("frames"))
            .collect()
    };
    let off = natives("off".as_ref());
    if off.iter().all(|n| n.is_null()) {
        eprintln!("skipping: no native stacks (no ptrace rights?)");
        return;
    }
    let cold = natives(cache.as_os_str());
    let files = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert!(
        files >= 2,
        "the cold run keeps libc's and libpython's names ({files} files)"
    );
    let warm = natives(cache.as_os_str());
    assert_eq!(
        cold, off,
        "a cold run with the cache resolves as one without"
    );
    assert_eq!(warm, off, "a warm run names the frames as a cold one");
}
