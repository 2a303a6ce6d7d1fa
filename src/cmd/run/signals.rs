//! Signals sent to `mphang run` itself (SIGINT, SIGTERM, SIGHUP): counted by an async-signal-safe
//! handler into atomics, which the watch loop polls and forwards to the child's process group.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicUsize, Ordering};

static INT: AtomicUsize = AtomicUsize::new(0);
static TERM: AtomicUsize = AtomicUsize::new(0);
static HUP: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic increments here: everything else happens in the watch loop.
    let counter = match sig {
        libc::SIGINT => &INT,
        libc::SIGTERM => &TERM,
        _ => &HUP,
    };
    counter.fetch_add(1, Ordering::SeqCst);
}

/// Installs the counting handler for SIGINT, SIGTERM and SIGHUP. The handlers are reset to the
/// default by `execve`, so the command starts with normal dispositions.
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: `on_signal` is async-signal-safe (it only touches atomics) and the previous
        // action is not needed.
        unsafe { sigaction(sig, &action)? };
    }
    Ok(())
}

/// How many of each signal arrived so far; the loop remembers what it already forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub int: usize,
    pub term: usize,
    pub hup: usize,
}

impl Received {
    pub fn now() -> Received {
        Received {
            int: INT.load(Ordering::SeqCst),
            term: TERM.load(Ordering::SeqCst),
            hup: HUP.load(Ordering::SeqCst),
        }
    }

    /// The signals that arrived since `before`, once per arrival.
    pub fn since(&self, before: &Received) -> Vec<Signal> {
        let mut out = Vec::new();
        for _ in before.int..self.int {
            out.push(Signal::SIGINT);
        }
        for _ in before.term..self.term {
            out.push(Signal::SIGTERM);
        }
        for _ in before.hup..self.hup {
            out.push(Signal::SIGHUP);
        }
        out
    }
}
