//! The command's stderr, passed through a pipe that mphang reads: every byte goes on to
//! mphang's own stderr unchanged, and each line goes through the traceback recogniser
//! ([`super::traceback`]). Memory is bounded: a partial line is cut at
//! [`super::traceback::MAX_LINE`]-ish, and at most [`MAX_TRACEBACKS`] tracebacks are kept (the
//! latest). The command's stderr is then a pipe, not a terminal (Python does not color its
//! tracebacks then); `MPHANG_STDERR=inherit` hands it the terminal instead, without tracebacks.

use super::traceback::Parser;
use super::tree::now_ms;
use crate::model::past::MAX_TRACEBACKS;
use crate::model::Traceback;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest partial line buffered before it is fed as a line anyway.
const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Default)]
struct Captured {
    parser: Parser,
    tracebacks: VecDeque<Traceback>,
}

/// A running stderr pass-through.
pub struct Capture {
    shared: Arc<Mutex<Captured>>,
    thread: Option<JoinHandle<()>>,
}

/// A pipe for the command's stderr: (read end for mphang, write end for the command). Both
/// close-on-exec: the command gets the write end through `Stdio`, nothing else does.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// True unless `MPHANG_STDERR=inherit`.
pub fn wanted() -> bool {
    std::env::var("MPHANG_STDERR").map_or(true, |v| v != "inherit")
}

impl Capture {
    /// Starts the thread that copies `read` to stderr and recognises tracebacks.
    pub fn start(read: OwnedFd) -> std::io::Result<Capture> {
        let shared = Arc::new(Mutex::new(Captured::default()));
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || pump(std::fs::File::from(read), &s2))?;
        Ok(Capture {
            shared,
            thread: Some(thread),
        })
    }

    /// The tracebacks recognised so far, oldest first.
    pub fn tracebacks(&self) -> Vec<Traceback> {
        self.shared
            .lock()
            .map(|c| c.tracebacks.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits up to `limit` for the pipe's end (every writer gone) so that everything the
    /// command wrote is passed on before mphang exits.
    pub fn finish(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(mut from: std::fs::File, shared: &Mutex<Captured>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut out_ok = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if out_ok {
            // A closed stderr must not block the command: keep reading, stop writing.
            out_ok = std::io::stderr().lock().write_all(&buf[..n]).is_ok();
        }
        let now = now_ms();
        let Ok(mut c) = shared.lock() else { continue };
        for &b in &buf[..n] {
            if b == b'\n' || partial.len() >= MAX_PARTIAL {
                let line = String::from_utf8_lossy(&partial).into_owned();
                c.parser.line(&line, now);
                partial.clear();
                if b == b'\n' {
                    continue;
                }
            }
            partial.push(b);
        }
        let done = c.parser.take();
        push(&mut c.tracebacks, done);
    }
    if let Ok(mut c) = shared.lock() {
        if !partial.is_empty() {
            let line = String::from_utf8_lossy(&partial).into_owned();
            c.parser.line(&line, now_ms());
        }
        // An exception line at the very end is complete.
        c.parser.line("", now_ms());
        let done = c.parser.take();
        push(&mut c.tracebacks, done);
    }
}

fn push(into: &mut VecDeque<Traceback>, done: Vec<Traceback>) {
    for t in done {
        if into.len() >= MAX_TRACEBACKS {
            into.pop_front();
        }
        into.push_back(t);
    }
}
