//! Measuring a pipe must not change what the target sees: a process writing to a pipe whose
//! readers are all gone keeps getting EPIPE under repeated reports (field guide §5.1: reopening
//! the pipe for reading added a reader, and such writes succeeded).

use crate::util::{bin, pythons, start};
use std::time::{Duration, Instant};

/// `(successes, epipe, eof, eagain)` counted by `fixtures/pipe_no_reader.py` so far.
fn counts(fx: &mphang::cmd::fixture::Fixture) -> (u64, u64, u64, u64) {
    let path = fx.dir().join("counts");
    let _ = std::fs::remove_file(&path);
    let pid = fx.ready.pid("writer").expect("writer pid");
    // SAFETY: kill(2) on our own fixture process.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(t) = std::fs::read_to_string(&path) {
            let n: Vec<u64> = t
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if n.len() == 4 {
                return (n[0], n[1], n[2], n[3]);
            }
        }
        assert!(Instant::now() < deadline, "fixture wrote no counts");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn epipe_under_reports(measure: &str) {
    let Some((ver, py)) = pythons().into_iter().last().map(|p| (p.label(), p.path)) else {
        eprintln!("skipping: no Python");
        return;
    };
    let fx = start(&py, "pipe_no_reader");
    let pid = fx.ready.pid("writer").expect("writer pid");
    let reports = 10;
    for _ in 0..reports {
        let o = bin()
            .env("MPHANG_PIPE_MEASURE", measure)
            .args(["report", &pid.to_string(), "--json", "--samples", "3"])
            .args(["--interval", "20ms"])
            .output()
            .expect("run mphang");
        let text = String::from_utf8_lossy(&o.stdout);
        let r: mphang::render::Report = serde_json::from_str(&text).expect("report is JSON");
        // The pipe was measured (through its write end), on every look.
        let p = r
            .snapshot
            .pipes
            .first()
            .unwrap_or_else(|| panic!("no pipe measured: {:?}", r.snapshot.pipes));
        assert_eq!(p.capacity, Some(65536), "{p:?}");
        assert!(p.later_buffered.iter().all(|b| b.is_some()), "{p:?}");
    }
    let (ok, epipe, eof, eagain) = counts(&fx);
    eprintln!(
        "{ver}, {reports} reports (pipes measured {measure}): {ok} writes succeeded, {epipe} got EPIPE; \
         the EOF reader saw {eof} EOFs and {eagain} EAGAIN"
    );
    assert!(epipe > 1000, "the writer did not loop: {epipe}");
    assert_eq!(
        ok, 0,
        "a write to a reader-less pipe succeeded while mphang measured it"
    );
    assert!(eof > 1000, "the reader did not see EOF: {eof}");
    if measure == "getfd" {
        assert_eq!(
            eagain, 0,
            "pidfd_getfd changes no pipe count: no EAGAIN for the EOF reader"
        );
    }
}

#[test]
fn a_writer_without_readers_keeps_getting_epipe() {
    epipe_under_reports("getfd");
}

#[test]
fn the_reopen_fallback_adds_no_reader_either() {
    epipe_under_reports("reopen");
}
