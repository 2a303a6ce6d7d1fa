//! The pause a sampled Python loop sees, and the tree benchmark (`scripts/bench_native.sh`).

use super::*;
use mphang::collect::native::{sample, sample_with, NativeCache, SampleOptions, StopMode};
use mphang::model::Pid;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
    pause_run_with(mode, 3);
}

fn pause_run_with(mode: StopMode, blocked: usize) {
    let dir = scratch(&format!("gap-{mode:?}-{blocked}"));
    let log = dir.join("gaps");
    let arg = log.to_str().expect("utf8").to_string();
    let n = blocked.to_string();
    let Some(mut t) = Target::start_wrapped(&[], PY311, "gap", &dir, &[&arg, &n]) else {
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
    let mut stops = Vec::new();
    let mut total = Duration::ZERO;
    for _ in 0..100 {
        let t0 = Instant::now();
        let s = sample_with(Pid(pid), &tids, &mut cache, &opts);
        total += t0.elapsed();
        stops.push(s.max_stop);
        assert_eq!(s.threads.len(), tids.len(), "{:?}", s.diagnostics);
        std::thread::sleep(Duration::from_millis(5));
    }
    let s1 = monotonic_now();
    // Let the last window close.
    std::thread::sleep(Duration::from_millis(120));
    let (base, nb) = worst_gap(&log, b0, b1 + 0.05);
    let (sampled, ns) = worst_gap(&log, s0 + 0.05, s1 + 0.05);
    stops.sort();
    let max_stop = stops[stops.len() - 1];
    eprintln!(
        "\npause[{mode:?}] {} threads, 100 samples: target's worst loop gap {} us while sampled ({ns} windows) \
         vs {} us unsampled baseline ({nb} windows); tracer-side stop per sample median {} us, p90 {} us, max {} us; \
         sample() mean {} us",
        tids.len(),
        sampled,
        base,
        stops[stops.len() / 2].as_micros(),
        stops[stops.len() * 9 / 10].as_micros(),
        max_stop.as_micros(),
        total.as_micros() / 100
    );
    assert!(ns > 0 && nb > 0, "no gap windows recorded");
    // Sanity bounds only (the figures are for docs/native.md and docs/performance.md). Timing
    // belongs to the benchmark: these run by hand (`scripts/bench_native.sh`), not in the suite,
    // where a loaded 2-CPU machine makes a runnable thread wait milliseconds for a CPU.
    let p90 = stops[stops.len() * 9 / 10];
    assert!(p90 < Duration::from_millis(50), "p90 stop {p90:?}");
    assert!(
        max_stop < Duration::from_millis(500),
        "a stop lasted {max_stop:?}"
    );
    assert!(
        sampled < base + 50_000,
        "the target saw a {sampled} us gap (baseline {base} us)"
    );
}

/// The same measurement with `py-spy dump [--native]` as the sampler, for comparison: py-spy
/// keeps every thread stopped while it reads the Python stacks and unwinds the native ones.
#[test]
#[ignore = "benchmark; run scripts/bench_native.sh"]
fn pause_seen_by_target_under_py_spy() {
    let pyspy =
        std::env::var("MPHANG_PYSPY").unwrap_or_else(|_| "/work/venv-bench/bin/py-spy".into());
    if !Path::new(&pyspy).exists() {
        eprintln!("skipping: no py-spy at {pyspy}");
        return;
    }
    for native in [false, true] {
        let dir = scratch(&format!("gap-pyspy-{native}"));
        let log = dir.join("gaps");
        let arg = log.to_str().expect("utf8").to_string();
        let Some(mut t) = Target::start(PY311, "gap", &dir, Some(&arg)) else {
            return;
        };
        let pid = t.wait_ready()[0];
        let b0 = monotonic_now();
        std::thread::sleep(Duration::from_millis(1000));
        let b1 = monotonic_now();
        let s0 = monotonic_now();
        let mut total = Duration::ZERO;
        let runs = 20;
        for _ in 0..runs {
            let mut cmd = Command::new(&pyspy);
            cmd.args(["dump", "--pid", &pid.to_string()]);
            if native {
                cmd.arg("--native");
            }
            let t0 = Instant::now();
            let out = cmd.output().expect("py-spy");
            total += t0.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let s1 = monotonic_now();
        std::thread::sleep(Duration::from_millis(120));
        let (base, nb) = worst_gap(&log, b0, b1 + 0.05);
        let (sampled, ns) = worst_gap(&log, s0 + 0.05, s1 + 0.05);
        eprintln!(
            "\npause[py-spy dump{}] {runs} runs: target's worst loop gap {sampled} us while sampled ({ns} windows) \
             vs {base} us unsampled baseline ({nb} windows); py-spy run mean {} ms",
            if native { " --native" } else { "" },
            total.as_millis() / runs
        );
        drop(t);
    }
}

/// How the pause scales with threads: 32 blocked threads plus the loop, both modes.
#[test]
#[ignore = "benchmark; run scripts/bench_native.sh"]
fn pause_with_many_threads() {
    pause_run_with(StopMode::OneAtATime, 32);
    pause_run_with(StopMode::AllAtOnce, 32);
}

#[test]
#[ignore = "benchmark (timing); run scripts/bench_native.sh"]
fn pause_seen_by_target_one_at_a_time() {
    pause_run(StopMode::OneAtATime);
}

#[test]
#[ignore = "benchmark (timing); run scripts/bench_native.sh"]
fn pause_seen_by_target_all_at_once() {
    pause_run(StopMode::AllAtOnce);
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
    println!("\n| children | processes | threads | sample() cold ms | sample() warm ms (median of 5) | warm per process ms | stop per process us (median / max) | py-spy dump --native ms (median of 3) | processes in py-spy output |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = scratch(&format!("bench-{n}"));
        let Some(mut t) = Target::start(PY311, "tree", &dir, Some(&n.to_string())) else {
            return;
        };
        let root = t.wait_ready()[0];
        let mut pids = vec![root];
        pids.extend(children_of(root));
        let threads: usize = pids.iter().map(|&p| tids_of(p).len()).sum();
        let tids: Vec<Vec<_>> = pids.iter().map(|&p| tids_of(p)).collect();
        let run = |cache: &mut NativeCache, stops: &mut Vec<Duration>| -> (Duration, usize) {
            let t0 = Instant::now();
            let mut got = 0;
            for (&p, t) in pids.iter().zip(&tids) {
                let s = sample(Pid(p), t, cache);
                stops.push(s.max_stop);
                got += s.threads.len();
            }
            (t0.elapsed(), got)
        };
        let mut cache = NativeCache::new();
        let mut stops = Vec::new();
        let (cold, got) = run(&mut cache, &mut stops);
        if got == 0 {
            eprintln!("skipping: no thread could be sampled (ptrace not permitted?)");
            return;
        }
        let mut warm = Vec::new();
        for _ in 0..5 {
            let (d, _) = run(&mut cache, &mut stops);
            warm.push(d);
        }
        stops.sort();
        warm.sort();
        let warm_med = warm[2];
        let mut spy = Vec::new();
        let mut spy_procs = 0;
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
                spy_procs = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with("Process "))
                    .count();
                spy.push(d);
            }
            spy.sort();
        }
        let spy_s = spy
            .get(1)
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {n} | {} | {threads} | {:.1} | {:.1} | {:.2} | {} / {} | {spy_s} | {spy_procs} |",
            pids.len(),
            cold.as_secs_f64() * 1e3,
            warm_med.as_secs_f64() * 1e3,
            warm_med.as_secs_f64() * 1e3 / pids.len() as f64,
            stops[stops.len() / 2].as_micros(),
            stops[stops.len() - 1].as_micros(),
        );
        drop(t);
    }
}
