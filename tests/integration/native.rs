//! Integration tests: native stacks (ptrace + framehop + symbols) against live Python targets
//! from `fixtures/native_targets.py`. They need ptrace rights on the children (root here) and
//! skip loudly otherwise. Each target runs in its own process group, killed and reaped on Drop.

use mphang::collect::native::{
    self, mutex_owner, ns_tid_map, read_futex_word, sample, sample_with, waits_for_gil, MutexKind,
    NativeCache, SampleOptions, StopMode,
};
use mphang::model::{DiagKind, Pid, Tid};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PY311: &str = "/root/.pyenv/versions/3.11.7/bin/python3";
const PY313: &str = "/root/.pyenv/versions/3.13.0/bin/python3";
const SAMPLER_ENV: &str = "MPHANG_NATIVE_SAMPLER_PID";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/native_targets.py")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mphang-native-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A fixture process in its own process group; Drop kills the whole group and reaps the leader.
struct Target {
    child: Child,
    ready: PathBuf,
}

impl Target {
    fn start(python: &str, mode: &str, dir: &Path, arg: Option<&str>) -> Option<Target> {
        Self::start_wrapped(&[], python, mode, dir, arg)
    }

    /// Like `start`, with the interpreter run under `wrapper` (e.g. `unshare --pid --fork`).
    fn start_wrapped(
        wrapper: &[&str],
        python: &str,
        mode: &str,
        dir: &Path,
        arg: Option<&str>,
    ) -> Option<Target> {
        if !Path::new(python).exists() {
            eprintln!("skipping: {python} not installed");
            return None;
        }
        let ready = dir.join(format!("{mode}.ready"));
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(python);
                c
            }
            None => Command::new(python),
        };
        cmd.arg(fixture()).arg(mode).arg(&ready);
        if let Some(a) = arg {
            cmd.arg(a);
        }
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn python fixture");
        Some(Target { child, ready })
    }

    /// Waits for the readiness file (the fixture writes it once it is wedged).
    fn wait_ready(&mut self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.ready) {
                return s
                    .split_whitespace()
                    .map(|x| x.parse().expect("pid"))
                    .collect();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("fixture exited early: {st}");
            }
            assert!(Instant::now() < deadline, "fixture never became ready");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the fixture's own process group only.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn tids_of(pid: i32) -> Vec<Tid> {
    let mut v: Vec<Tid> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .map(Tid)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn state_of(pid: i32, tid: Tid) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", tid.0)).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Samples once and reports whether ptrace was refused (then the caller skips loudly).
fn denied(s: &native::NativeSample) -> bool {
    let d = s
        .diagnostics
        .iter()
        .any(|d| d.kind == DiagKind::PermissionDenied);
    if d {
        eprintln!("skipping: ptrace not permitted here: {:?}", s.diagnostics);
    }
    d
}

fn fn_names(t: &native::NativeThread) -> Vec<String> {
    t.frames
        .iter()
        .map(|f| {
            format!(
                "{} [{}] {}:{}",
                f.function.as_deref().unwrap_or("?"),
                f.module.as_deref().unwrap_or("?"),
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            )
        })
        .collect()
}

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
    assert_eq!(owner.ns_tid, holder);
    let child_tids = ns_tid_map(Pid(child));
    assert!(
        !child_tids.contains_key(&owner.ns_tid),
        "owner must not be a thread of the child"
    );
    assert!(
        ns_tid_map(Pid(parent)).contains_key(&owner.ns_tid),
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
    let Some(mut t) = Target::start_wrapped(&wrapper, PY311, "fork_mutex", &dir, None) else {
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
        .get(&owner.ns_tid)
        .copied()
        .expect("owner is a thread of the parent, by NSpid");
    eprintln!(
        "pid ns: child {child} (ns {ns_child}) waits on mutex owned by ns tid {} = host tid {host_holder} \
         in parent {parent} (ns 1)",
        owner.ns_tid
    );
    assert_eq!(owner.ns_tid, ns_holder);
    assert_ne!(host_holder.0, ns_holder, "namespace and host TIDs differ");
    assert!(!ns_tid_map(Pid(child)).contains_key(&owner.ns_tid));
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
        native::tid_of_pthread(Pid(parent), holder_thread.fs_base),
        Some(host_holder)
    );
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

/// Not a test on its own: the body of the sampler process that `sigkill_mid_sample_never_leaves_a_stop`
/// re-executes and kills. Without the env var it returns at once.
#[test]
#[ignore = "helper process for sigkill_mid_sample_never_leaves_a_stop"]
fn sampler_child() {
    let Some(pid) = std::env::var(SAMPLER_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    let mode = if std::env::var("MPHANG_NATIVE_ALL_AT_ONCE").is_ok() {
        StopMode::AllAtOnce
    } else {
        StopMode::OneAtATime
    };
    // Hold each stop for 3 ms so that most random kills land while a thread is stopped.
    let opts = SampleOptions {
        mode,
        extra_hold: Duration::from_millis(3),
        ..SampleOptions::default()
    };
    let mut cache = NativeCache::new();
    loop {
        let _ = sample_with(Pid(pid), &tids_of(pid), &mut cache, &opts);
    }
}

fn counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Cheap pseudo-random numbers for kill timing (no rand dependency).
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn sigkill_mid_sample_never_leaves_a_stop() {
    let dir = scratch("sigkill");
    let count_file = dir.join("count");
    let arg = count_file.to_str().expect("utf8").to_string();
    let Some(mut t) = Target::start(PY311, "counter", &dir, Some(&arg)) else {
        return;
    };
    let pid = t.wait_ready()[0];
    let mut cache = NativeCache::new();
    if denied(&sample(Pid(pid), &tids_of(pid), &mut cache)) {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut seed = (std::process::id() as u64) << 17 | 0x9e37_79b9;
    let kills = 30;
    let mut mid_stop = 0;
    for i in 0..kills {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "native::sampler_child",
            "--ignored",
            "--test-threads=1",
            "-q",
        ])
        .env(SAMPLER_ENV, pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if i % 2 == 1 {
            cmd.env("MPHANG_NATIVE_ALL_AT_ONCE", "1");
        }
        let mut sampler = cmd.spawn().expect("re-exec test binary");
        // Wait until the sampler holds a thread stopped, then kill it at a random moment after.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tids_of(pid).iter().any(|&t| state_of(pid, t) == Some('t')) {
            assert!(Instant::now() < deadline, "sampler never stopped a thread");
            std::thread::sleep(Duration::from_micros(200));
        }
        let delay = xorshift(&mut seed) % 20_000;
        std::thread::sleep(Duration::from_micros(delay));
        let stopped_at_kill = tids_of(pid)
            .iter()
            .filter(|&&t| state_of(pid, t) == Some('t'))
            .count();
        sampler.kill().expect("SIGKILL sampler");
        sampler.wait().expect("reap sampler");
        if stopped_at_kill > 0 {
            mid_stop += 1;
        }
        for tid in tids_of(pid) {
            let st = state_of(pid, tid);
            assert!(
                !matches!(st, Some('t' | 'T')),
                "kill {i}: thread {tid} left in state {st:?}"
            );
        }
    }
    // The target still makes progress.
    let before = counter(&count_file);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&count_file) <= before + 5 {
        assert!(
            Instant::now() < deadline,
            "target stopped making progress after the kills"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "{kills} sampler kills, {mid_stop} with a thread seen in tracing stop just before the kill; \
         no thread left stopped; counter {before} -> {}",
        counter(&count_file)
    );
    assert!(mid_stop > 0, "no kill landed while a thread was stopped");
}

#[test]
fn panic_while_a_thread_is_stopped_detaches_it() {
    let dir = scratch("panic");
    let Some(mut t) = Target::start(PY311, "lock", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, tid) = (ids[0], Tid(ids[1]));
    let r = std::thread::spawn(move || {
        let Ok(mut g) = native::ptrace::Attached::seize(tid) else {
            return false;
        };
        g.wait_stopped(Instant::now() + Duration::from_secs(5))
            .expect("stop");
        assert_eq!(state_of(pid, tid), Some('t'));
        panic!("boom while thread {tid} is stopped");
    })
    .join();
    match r {
        Ok(false) => eprintln!("skipping: ptrace not permitted"),
        Ok(true) => unreachable!(),
        Err(_) => {
            let st = state_of(pid, tid);
            assert!(!matches!(st, Some('t' | 'T')), "left in state {st:?}");
        }
    }
}

#[test]
fn a_thread_traced_by_someone_else_is_a_diagnostic() {
    let dir = scratch("traced");
    let Some(mut t) = Target::start(PY311, "lock", &dir, None) else {
        return;
    };
    let ids = t.wait_ready();
    let (pid, tid) = (ids[0], Tid(ids[1]));
    // Hold the thread seized (not stopped) from another thread, as py-spy or gdb would.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<bool>();
    let holder = std::thread::spawn(move || {
        let g = native::ptrace::Attached::seize(tid);
        let _ = ready_tx.send(g.is_ok());
        let _ = rx.recv();
        drop(g);
    });
    if !ready_rx.recv().expect("holder") {
        eprintln!("skipping: ptrace not permitted");
        return;
    }
    let mut cache = NativeCache::new();
    let s = sample(Pid(pid), &tids_of(pid), &mut cache);
    let _ = tx.send(());
    holder.join().expect("holder thread");
    assert!(s.threads.iter().all(|th| th.tid != tid));
    let d = s
        .diagnostics
        .iter()
        .find(|d| d.tid == Some(tid))
        .expect("a diagnostic for the traced thread");
    eprintln!("diagnostic: {d:?}");
    assert!(d.message.contains("already traced"), "{}", d.message);
    // The other threads were still sampled.
    assert_eq!(s.threads.len(), tids_of(pid).len() - 1);
    for t in tids_of(pid) {
        assert!(!matches!(state_of(pid, t), Some('t' | 'T')));
    }
}

#[test]
fn a_process_stopped_by_sigstop_stays_stopped() {
    let dir = scratch("sigstop");
    let count_file = dir.join("count");
    let arg = count_file.to_str().expect("utf8").to_string();
    let Some(mut t) = Target::start(PY311, "counter", &dir, Some(&arg)) else {
        return;
    };
    let pid = t.wait_ready()[0];
    // SAFETY: kill(2) on our own fixture process.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tids_of(pid).iter().all(|&t| state_of(pid, t) == Some('T')) {
        assert!(Instant::now() < deadline, "SIGSTOP did not take");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut cache = NativeCache::new();
    let t0 = Instant::now();
    let s = sample(Pid(pid), &tids_of(pid), &mut cache);
    if denied(&s) {
        return;
    }
    eprintln!(
        "sampled a SIGSTOPped process in {:?}: {} threads, diagnostics {:?}",
        t0.elapsed(),
        s.threads.len(),
        s.diagnostics
    );
    assert_eq!(s.threads.len(), tids_of(pid).len());
    assert!(s.threads.iter().all(|th| th.frames.len() > 3));
    // Still stopped as the user wanted: not resumed by our detach, not in tracing stop.
    for t in tids_of(pid) {
        assert_eq!(state_of(pid, t), Some('T'), "thread {t}");
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let before = counter(&count_file);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&count_file) <= before + 3 {
        assert!(Instant::now() < deadline, "no progress after SIGCONT");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn monotonic_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Largest gap (µs) the target saw in windows that ended within [from, to].
fn worst_gap(log: &Path, from: f64, to: f64) -> (u64, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut worst = 0;
    let mut n = 0;
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let (Some(t), Some(g)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(t), Ok(g)) = (t.parse::<f64>(), g.parse::<u64>()) else {
            continue;
        };
        if t >= from && t <= to {
            worst = worst.max(g);
            n += 1;
        }
    }
    (worst, n)
}

fn pause_run(mode: StopMode) {
    let dir = scratch(&format!("gap-{mode:?}"));
    let log = dir.join("gaps");
    let arg = log.to_str().expect("utf8").to_string();
    let Some(mut t) = Target::start(PY311, "gap", &dir, Some(&arg)) else {
        return;
    };
    let pid = t.wait_ready()[0];
    let tids = tids_of(pid);
    let mut cache = NativeCache::new();
    let opts = SampleOptions {
        mode,
        ..SampleOptions::default()
    };
    if denied(&sample_with(Pid(pid), &tids, &mut cache, &opts)) {
        return;
    }
    // Baseline: the same loop, not sampled.
    let b0 = monotonic_now();
    std::thread::sleep(Duration::from_millis(1000));
    let b1 = monotonic_now();
    let s0 = monotonic_now();
    let mut max_stop = Duration::ZERO;
    let mut total = Duration::ZERO;
    for _ in 0..100 {
        let t0 = Instant::now();
        let s = sample_with(Pid(pid), &tids, &mut cache, &opts);
        total += t0.elapsed();
        max_stop = max_stop.max(s.max_stop);
        assert_eq!(s.threads.len(), tids.len(), "{:?}", s.diagnostics);
        std::thread::sleep(Duration::from_millis(5));
    }
    let s1 = monotonic_now();
    // Let the last window close.
    std::thread::sleep(Duration::from_millis(120));
    let (base, nb) = worst_gap(&log, b0, b1 + 0.05);
    let (sampled, ns) = worst_gap(&log, s0 + 0.05, s1 + 0.05);
    eprintln!(
        "pause[{mode:?}] {} threads: target's worst loop gap {} us sampled ({ns} windows) vs {} us baseline ({nb} windows); \
         tracer-side max stop {} us; sample() mean {} us",
        tids.len(),
        sampled,
        base,
        max_stop.as_micros(),
        total.as_micros() / 100
    );
    assert!(ns > 0 && nb > 0, "no gap windows recorded");
    assert!(
        max_stop < Duration::from_millis(50),
        "a stop lasted {max_stop:?}"
    );
    assert!(sampled < 50_000, "the target saw a {sampled} us gap");
}

#[test]
fn pause_seen_by_target_one_at_a_time() {
    pause_run(StopMode::OneAtATime);
}

#[test]
fn pause_seen_by_target_all_at_once() {
    pause_run(StopMode::AllAtOnce);
}

fn check_merge_against_py_spy(python: &str) {
    use mphang::collect::native::{merge, merge_with_entries, MergedFrame};
    use mphang::model::PyFrame;
    let dir = scratch(&format!("merge-{}", python.len()));
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
        .find(|t| t.tid == blocked)
        .expect("sampled");
    // Python frames from py-spy (library, non-blocking: the thread is parked anyway).
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::NonBlocking,
        ..py_spy::Config::default()
    };
    let mut spy = py_spy::PythonSpy::new(pid, &config).expect("py-spy attaches");
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
fn exited_and_unknown_threads_are_diagnostics() {
    let mut cache = NativeCache::new();
    // A TID that does not exist in a live process (ours): Gone, not a panic or an error.
    let me = std::process::id() as i32;
    let s = sample(Pid(me), &[Tid(i32::MAX - 7)], &mut cache);
    assert!(s.threads.is_empty());
    assert!(
        s.diagnostics.iter().any(|d| d.kind == DiagKind::Gone),
        "{:?}",
        s.diagnostics
    );
    // A process that does not exist.
    let s = sample(Pid(i32::MAX - 7), &[Tid(i32::MAX - 7)], &mut cache);
    assert!(s.threads.is_empty() && !s.diagnostics.is_empty());
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in tids_of(pid) {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{}/children", t.0)) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

/// Timing of `sample()` over trees of 1, 8, 32, 64 forked children, against
/// `py-spy dump --native --subprocesses`. Run with `scripts/bench_native.sh` (release build).
#[test]
#[ignore = "benchmark; run scripts/bench_native.sh"]
fn bench_tree() {
    let pyspy =
        std::env::var("MPHANG_PYSPY").unwrap_or_else(|_| "/work/venv-bench/bin/py-spy".into());
    let sizes: Vec<usize> = std::env::var("MPHANG_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32, 64]);
    println!("| children | processes | threads | sample() cold ms | sample() warm ms (median of 5) | warm per process ms | max stop per thread us | py-spy dump --native ms (median of 3) |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = scratch(&format!("bench-{n}"));
        let Some(mut t) = Target::start(PY311, "tree", &dir, Some(&n.to_string())) else {
            return;
        };
        let root = t.wait_ready()[0];
        let mut pids = vec![root];
        pids.extend(children_of(root));
        let threads: usize = pids.iter().map(|&p| tids_of(p).len()).sum();
        let run = |cache: &mut NativeCache| -> (Duration, Duration, usize) {
            let t0 = Instant::now();
            let mut max_stop = Duration::ZERO;
            let mut got = 0;
            for &p in &pids {
                let s = sample(Pid(p), &tids_of(p), cache);
                max_stop = max_stop.max(s.max_stop);
                got += s.threads.len();
            }
            (t0.elapsed(), max_stop, got)
        };
        let mut cache = NativeCache::new();
        let (cold, stop0, got) = run(&mut cache);
        if got == 0 {
            eprintln!("skipping: no thread could be sampled (ptrace not permitted?)");
            return;
        }
        let mut warm = Vec::new();
        let mut max_stop = stop0;
        for _ in 0..5 {
            let (d, s, _) = run(&mut cache);
            warm.push(d);
            max_stop = max_stop.max(s);
        }
        warm.sort();
        let warm_med = warm[2];
        let mut spy = Vec::new();
        if Path::new(&pyspy).exists() {
            for _ in 0..3 {
                let t0 = Instant::now();
                let out = Command::new(&pyspy)
                    .args([
                        "dump",
                        "--native",
                        "--pid",
                        &root.to_string(),
                        "--subprocesses",
                    ])
                    .output()
                    .expect("run py-spy");
                let d = t0.elapsed();
                if !out.status.success() {
                    eprintln!("py-spy failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                spy.push(d);
            }
            spy.sort();
        }
        let spy_s = spy
            .get(1)
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {n} | {} | {threads} | {:.1} | {:.1} | {:.2} | {} | {spy_s} |",
            pids.len(),
            cold.as_secs_f64() * 1e3,
            warm_med.as_secs_f64() * 1e3,
            warm_med.as_secs_f64() * 1e3 / pids.len() as f64,
            max_stop.as_micros(),
        );
        drop(t);
    }
}
