//! The one event stream of the live view and the threads that feed it: the input thread (keys,
//! resizes, a slow tick), the sampler thread (collect + analyse every interval) and the signal
//! thread (termination signals become a normal quit).
//!
//! The input and sampler threads stop when the shared `stop` flag is set or the receiver is
//! dropped; the caller joins the sampler so that no collection (and no ptrace) is in flight
//! when `attach` returns.

use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::render::Report;
use crossterm::event::KeyEvent;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything the main loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A key press (Ctrl-C arrives here too: raw mode turns off the signal).
    Key(KeyEvent),
    /// The terminal changed size (columns, rows); the next draw uses the new size.
    Resize(u16, u16),
    /// A fresh look at the tree, analysed.
    Report(Box<Report>),
    /// Nothing happened for a while; redraw anyway.
    Tick,
    /// The target process exited (or can no longer be found); the text says how.
    TargetGone(String),
    /// One refresh failed; the sampler keeps trying.
    CollectFailed(String),
    /// The sampler stopped for good (it panicked).
    Fatal(String),
    /// SIGTERM, SIGHUP, SIGINT or SIGQUIT arrived: quit the same way `q` does, restoring the
    /// terminal on the way out.
    Signal(String),
}

/// How often the input thread checks `stop` and sends a [`Event::Tick`].
pub const TICK: Duration = Duration::from_millis(1000);

/// Reads terminal input with crossterm and forwards it; sends a tick every [`TICK`] without input.
pub fn spawn_input_thread(tx: Sender<Event>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let poll_step = Duration::from_millis(200);
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let ev = match crossterm::event::poll(poll_step) {
                Ok(true) => match crossterm::event::read() {
                    Ok(crossterm::event::Event::Key(k)) => Some(Event::Key(k)),
                    Ok(crossterm::event::Event::Resize(w, h)) => Some(Event::Resize(w, h)),
                    Ok(_) => None,
                    Err(e) => Some(Event::Fatal(format!("reading the terminal failed: {e}"))),
                },
                Ok(false) if last_tick.elapsed() >= TICK => {
                    last_tick = Instant::now();
                    Some(Event::Tick)
                }
                Ok(false) => None,
                Err(e) => Some(Event::Fatal(format!("reading the terminal failed: {e}"))),
            };
            if let Some(ev) = ev {
                let fatal = matches!(ev, Event::Fatal(_));
                if tx.send(ev).is_err() || fatal {
                    return;
                }
            }
        }
    })
}

/// Calls `collect` every `interval` (skipping while `paused`), analyses the snapshot and sends it.
/// A vanished target ends the thread with [`Event::TargetGone`]; other errors are reported and
/// retried at the next interval.
pub fn spawn_sampler_thread<F>(
    mut collect: F,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    interval: Duration,
) -> JoinHandle<()>
where
    F: FnMut() -> Result<Snapshot> + Send + 'static,
{
    let mut spent = Duration::ZERO;
    let mut last: Option<Report> = None;
    std::thread::spawn(move || loop {
        // A slow collection eats into the interval instead of adding to it.
        if !sleep_unless_stopped(interval.saturating_sub(spent), &stop) {
            return;
        }
        if paused.load(Ordering::Relaxed) {
            spent = Duration::ZERO;
            continue;
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut collect));
        let ev = match outcome {
            Ok(Ok(mut snap)) => {
                // A refresh that found nothing moved returns the same snapshot: reuse its
                // analysis instead of redoing it every second.
                let taken = snap.taken_at_ms;
                let report = match last.as_ref() {
                    Some(prev)
                        if {
                            snap.taken_at_ms = prev.snapshot.taken_at_ms;
                            snap == prev.snapshot
                        } =>
                    {
                        let mut r = prev.clone();
                        r.snapshot.taken_at_ms = taken;
                        r
                    }
                    _ => {
                        snap.taken_at_ms = taken;
                        Report::analyze(snap)
                    }
                };
                last = Some(report.clone());
                Event::Report(Box::new(report))
            }
            Ok(Err(Error::NoSuchProcess(pid))) => {
                let _ = tx.send(Event::TargetGone(format!("process {pid} has exited")));
                return;
            }
            Ok(Err(e)) => Event::CollectFailed(e.to_string()),
            Err(_) => {
                let _ = tx.send(Event::Fatal("the collector panicked".into()));
                return;
            }
        };
        spent = started.elapsed();
        if stop.load(Ordering::Relaxed) || tx.send(ev).is_err() {
            return;
        }
    })
}

/// Turns the termination signals into [`Event::Signal`]: blocks them in the calling thread
/// (and so in every thread it starts afterwards) and waits for them on a thread of their own.
/// A second signal (or one that arrives when the loop is gone) restores the terminal and ends
/// the process the default way. Call it before starting the other threads. The waiting thread
/// is not joined: it ends with the process.
pub fn spawn_signal_thread(tx: Sender<Event>) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    set.thread_block().map_err(|e| Error::Io {
        context: "blocking termination signals".into(),
        source: std::io::Error::from(e),
    })?;
    std::thread::spawn(move || {
        let mut asked = false;
        while let Ok(sig) = set.wait() {
            let delivered = tx.send(Event::Signal(sig.as_str().to_string())).is_ok();
            if asked || !delivered {
                // Asked twice, or nobody is listening any more: restore the terminal and let
                // the signal do what it does by default (end the process).
                super::restore();
                let _ = set.thread_unblock();
                let _ = nix::sys::signal::raise(sig);
                return;
            }
            asked = true;
        }
    });
    Ok(())
}

/// Sleeps `d` in short steps; false when `stop` was set meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
