//! Job control never leaves a target stopped: mphang is sent SIGSTOP or SIGTSTP (Ctrl-Z) at a
//! random moment while it stops the threads of a 1,000-thread target one at a time, and while
//! mphang stays stopped no target thread may be in tracing stop. The ptrace helper
//! (collect/native/helper.rs) is what makes this hold for SIGSTOP; in-process sampling defers
//! SIGTSTP until the detach.
//!
//! `job_control_never_leaves_a_thread_stopped` is the short CI version; the `#[ignore]`d
//! `..._repeated` runs 100 times per case and prints the counts for docs/native.md.

use crate::util::{bin, pythons, start};
use mphang::cmd::fixture::Fixture;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn state(pid: i32, tid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn tids(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Target threads in tracing stop (`t`) or stopped (`T`).
fn held(pid: i32) -> usize {
    tids(pid)
        .into_iter()
        .filter(|&t| matches!(state(pid, t), Some('t' | 'T')))
        .count()
}

/// The state letter and tracer of thread `tid`, from one read of its status file (two reads
/// could straddle a detach and see a stop with no tracer).
fn state_and_tracer(pid: i32, tid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    let st = field("State:")?.chars().next()?;
    let tr = field("TracerPid:")?.parse().ok()?;
    Some((st, tr))
}

/// Target threads left stopped: in a stop with no tracer, or held by a tracer that is itself
/// stopped. A thread a running helper holds for its ~50 µs copy is not left stopped (once a
/// stopped helper is killed, a fresh one goes on stopping threads one at a time).
fn left_stopped(pid: i32) -> usize {
    tids(pid)
        .into_iter()
        .filter(|&t| match state_and_tracer(pid, t) {
            Some(('t' | 'T', 0)) => true,
            Some(('t' | 'T', tr)) => matches!(state(tr, tr), Some('t' | 'T')),
            _ => false,
        })
        .count()
}

/// The helper child of `mphang`, if it runs one.
fn helper_of(mphang: i32) -> Option<i32> {
    tids(mphang).into_iter().find_map(|t| {
        std::fs::read_to_string(format!("/proc/{mphang}/task/{t}/children"))
            .ok()?
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .find(|c| {
                std::fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains("__mphang-ptrace-helper"))
            })
    })
}

/// True once mphang has started stopping threads (its helper or its ptrace thread exists).
fn sampling(mphang: i32) -> bool {
    helper_of(mphang).is_some()
        || tids(mphang).into_iter().any(|t| {
            std::fs::read_to_string(format!("/proc/{mphang}/task/{t}/comm"))
                .is_ok_and(|c| c.trim() == "mphang-ptrace")
        })
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// The signal goes to mphang's pid.
    Mphang,
    /// SIGSTOP goes to the helper itself: mphang must notice and kill it.
    Helper,
}

struct Case {
    signal: libc::c_int,
    to: Target,
    helper: bool,
}

/// One run: report on `pid`, signal mid-sampling, check while stopped. Returns
/// (landed while sampling, target threads held while mphang or its helper was stopped).
fn one_run(pid: i32, case: &Case, seed: &mut u64) -> (bool, usize) {
    let mut cmd = bin();
    // A process group of its own, whose parent (this test) is in another group of the same
    // session: not orphaned, so SIGTSTP stops it as Ctrl-Z would (the kernel discards SIGTSTP
    // sent to an orphaned process group).
    cmd.args(["report", &pid.to_string(), "--samples", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if !case.helper {
        cmd.env("MPHANG_PTRACE_HELPER", "off");
    }
    let mut m: Child = cmd.spawn().expect("start mphang");
    let mpid = m.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sampling(mpid) {
        if Instant::now() > deadline || m.try_wait().ok().flatten().is_some() {
            let _ = m.kill();
            let _ = m.wait();
            return (false, 0);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // A random moment in the native phase (about 0.3-0.6 s for 1,000 threads).
    std::thread::sleep(Duration::from_micros(xorshift(seed) % 250_000));
    let victim = match case.to {
        Target::Mphang => Some(mpid),
        Target::Helper => helper_of(mpid),
    };
    let Some(victim) = victim else {
        let _ = m.wait();
        return (false, 0);
    };
    // SAFETY: kill(2) on a process this test started (or its helper).
    unsafe { libc::kill(victim, case.signal) };
    // Wait until the signal took effect, then give the helper (or the deferred stop) time to
    // finish the thread at hand and mphang's watchdog time to act.
    let t0 = Instant::now();
    while state(victim, victim) != Some('T') && t0.elapsed() < Duration::from_secs(2) {
        if m.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let landed = state(victim, victim) == Some('T');
    std::thread::sleep(Duration::from_millis(150));
    let stuck = left_stopped(pid);
    // SAFETY: as above.
    unsafe { libc::kill(mpid, libc::SIGCONT) };
    if case.to == Target::Helper {
        // SAFETY: as above (the helper may already be gone: harmless).
        unsafe { libc::kill(victim, libc::SIGCONT) };
    }
    let status = m.wait().expect("wait mphang");
    assert!(
        status.code().is_some(),
        "mphang did not finish normally after SIGCONT: {status:?}"
    );
    assert_eq!(held(pid), 0, "a thread is stopped after mphang finished");
    (landed, stuck)
}

fn run_cases(runs: usize, cases: &[(&str, Case)]) -> Vec<(String, usize, usize)> {
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return Vec::new();
    };
    let mut seed = (std::process::id() as u64) << 20 | 0x2545_f491;
    let mut out = Vec::new();
    for (name, case) in cases {
        let (mut landed, mut stuck_runs) = (0, 0);
        let mut fx: Option<Fixture> = None;
        for i in 0..runs {
            // A fresh target every 20 runs (fixtures end themselves after 120 s).
            if i % 20 == 0 {
                drop(fx.take());
                fx = Some(start(&py, "many_threads"));
            }
            let pid = fx.as_ref().map(|f| f.root()).unwrap_or(0);
            let (l, stuck) = one_run(pid, case, &mut seed);
            landed += usize::from(l);
            if stuck > 0 {
                stuck_runs += 1;
                eprintln!("{name} run {i}: {stuck} target thread(s) stopped while mphang was");
            }
        }
        eprintln!(
            "job control, {name}: {runs} runs, {landed} signals landed mid-sampling, \
             {stuck_runs} runs left a target thread stopped"
        );
        out.push((name.to_string(), landed, stuck_runs));
    }
    out
}

fn cases(all: bool) -> Vec<(&'static str, Case)> {
    let mut v = vec![
        (
            "SIGSTOP to mphang",
            Case {
                signal: libc::SIGSTOP,
                to: Target::Mphang,
                helper: true,
            },
        ),
        (
            "SIGTSTP to mphang",
            Case {
                signal: libc::SIGTSTP,
                to: Target::Mphang,
                helper: true,
            },
        ),
        (
            "SIGSTOP to the helper",
            Case {
                signal: libc::SIGSTOP,
                to: Target::Helper,
                helper: true,
            },
        ),
        (
            "SIGTSTP to mphang, in-process",
            Case {
                signal: libc::SIGTSTP,
                to: Target::Mphang,
                helper: false,
            },
        ),
    ];
    if all {
        // The weakness the helper removes: printed, not asserted.
        v.push((
            "SIGSTOP to mphang, in-process (before: no helper)",
            Case {
                signal: libc::SIGSTOP,
                to: Target::Mphang,
                helper: false,
            },
        ));
    }
    v
}

fn check(results: &[(String, usize, usize)], runs: usize) {
    for (name, landed, stuck) in results {
        if name.contains("before") {
            continue;
        }
        assert_eq!(*stuck, 0, "{name}: a target thread was left stopped");
        assert!(
            *landed * 2 >= runs,
            "{name}: only {landed} of {runs} signals landed while mphang sampled"
        );
    }
}

#[test]
fn job_control_never_leaves_a_thread_stopped() {
    let runs = 5;
    check(&run_cases(runs, &cases(false)), runs);
}

#[test]
#[ignore = "long (about 10 minutes); numbers for docs/native.md"]
fn job_control_never_leaves_a_thread_stopped_repeated() {
    let runs = 100;
    check(&run_cases(runs, &cases(true)), runs);
}

/// A thread given up on (it did not stop within the timeout) keeps an interrupt pending and
/// stops as soon as it runs: the helper must release it then, not when it exits at the end of
/// the collection. Forced here with a zero stop timeout on every thread of a 50-thread target.
#[test]
fn threads_given_up_on_are_released_while_the_helper_lives() {
    use mphang::collect::native::{helper, SampleOptions};
    use mphang::model::{Pid, Tid};
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    helper::set_program(env!("CARGO_BIN_EXE_mphang").into());
    let Some(mut h) = helper::Helper::start() else {
        eprintln!("skipping: no ptrace helper here");
        return;
    };
    let fx = start(&py, "many_threads");
    let pid = fx.root();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    let opts = SampleOptions {
        stop_timeout: Duration::ZERO,
        ..SampleOptions::default()
    };
    let mut timeouts = 0;
    for tid in tids(pid).into_iter().take(50) {
        if let Err(helper::Failure::Attach(
            mphang::collect::native::ptrace::AttachError::Timeout(_),
        )) = h.capture(Pid(pid), Tid(tid), &ranges, &opts)
        {
            timeouts += 1;
        }
    }
    // The helper is still alive: every thread must be running again within a moment.
    let t0 = Instant::now();
    while held(pid) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{} thread(s) left stopped by a live helper ({timeouts} timeouts)",
            held(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("{timeouts} of 50 stops timed out; all released while the helper lived");
    assert!(timeouts > 0, "no stop timed out: the test proved nothing");
    drop(h);
}

/// A collection that ends with threads given up on does not leave its helper idle holding them:
/// were that helper stopped (SIGSTOP) while mphang unwinds, nobody would watch it and those
/// threads would stay stopped. The helper that holds them is ended before the sample returns.
#[test]
fn a_helper_holding_threads_given_up_on_is_not_left_idle() {
    use mphang::collect::native::{
        helper, maps::parse_maps, sample_with_stopper, NativeCache, SampleOptions, Stopper,
    };
    use mphang::model::{Pid, Tid};
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(py) = pythons().into_iter().last().map(|p| p.path) else {
        eprintln!("skipping: no Python");
        return;
    };
    helper::set_program(env!("CARGO_BIN_EXE_mphang").into());
    let mut stopper = Stopper::for_collection();
    let old = match &stopper {
        Stopper::Helper {
            helper: Some(h), ..
        } => h.pid(),
        _ => {
            eprintln!("skipping: no ptrace helper here");
            return;
        }
    };
    // SAFETY: pidfd_open on the helper this test started; the result is checked.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, old, 0) };
    assert!(raw >= 0, "pidfd_open on the helper");
    // SAFETY: a fresh descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let fx = start(&py, "many_threads");
    let pid = fx.root();
    let maps = parse_maps(&std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps"));
    let threads: Vec<Tid> = tids(pid).into_iter().take(50).map(Tid).collect();
    let opts = SampleOptions {
        stop_timeout: Duration::ZERO,
        ..SampleOptions::default()
    };
    let s = sample_with_stopper(
        Pid(pid),
        &threads,
        &maps,
        &mut NativeCache::new(),
        &opts,
        &mut stopper,
    );
    let timeouts = s
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("did not stop"))
        .count();
    assert!(timeouts > 0, "no stop timed out: the test proved nothing");
    // The helper that gave up on threads has exited (its pidfd reads as ended)...
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, no wait.
    let ended = unsafe { libc::poll(&mut p, 1, 0) } > 0;
    assert!(
        ended,
        "the helper holding {timeouts} given-up thread(s) was left running idle"
    );
    // ... and a fresh one took its place.
    assert!(
        matches!(&stopper, Stopper::Helper { helper: Some(h), .. } if h.pid() != old),
        "no fresh helper after the one holding threads ended"
    );
    let t0 = Instant::now();
    while held(pid) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a thread stayed stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
