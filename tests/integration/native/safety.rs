//! Sampling never harms the target: SIGKILL of the sampler mid-stop, a panic while a thread is
//! stopped, a thread traced by someone else, a SIGSTOPped process.

use super::*;
use mphang::collect::native::{self, sample, sample_with, NativeCache, SampleOptions, StopMode};
use mphang::model::{Pid, Tid};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
            "native::safety::sampler_child",
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
