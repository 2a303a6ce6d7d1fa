//! The state of the live view and the only code that changes it: [`App::update`] folds one
//! [`Action`] (a key, a new report, the target going away) into [`App`]. No drawing here.

use super::history::History;
use crate::analysis::{Finding, Severity};
use crate::error::{Error, Result};
use crate::model::{Pid, Snapshot, ThreadRef, ThreadSnap, Tid};
use crate::render::Report;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything that can change the state: keys (through the keymap) and events from the threads.
#[derive(Debug)]
pub enum Action {
    Quit,
    Up,
    Down,
    NextPane,
    PrevPane,
    /// Enter: drill into the selected finding (or from the tree into its threads).
    Open,
    /// Esc: close the overlay.
    Back,
    TogglePause,
    Save,
    ToggleHelp,
    /// A fresh look at the tree.
    Refresh(Box<Report>),
    /// The target exited; the text says how it was noticed.
    TargetGone(String),
    /// One refresh failed (the sampler keeps going).
    CollectFailed(String),
    /// The sampler died; the loop ends with this error.
    Fatal(String),
}

/// The panes that take the arrow keys, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Tree,
    Threads,
    /// The merged stack: ↑↓ scroll it.
    Stack,
    Findings,
}

/// What is drawn over the panes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    /// The selected finding, drilled into; `link` is the selected chain link.
    Finding {
        link: usize,
    },
}

/// The whole state of `mphang attach`.
#[derive(Debug)]
pub struct App {
    pub target: Pid,
    pub interval: Duration,
    /// The newest report (findings sorted worst first).
    pub report: Option<Report>,
    pub history: History,
    /// Display order of the tree, recomputed on each refresh.
    pub rows: Vec<(Pid, usize)>,
    pub focus: Pane,
    pub overlay: Overlay,
    pub selected_pid: Option<Pid>,
    pub selected_tid: Option<Tid>,
    pub finding: usize,
    /// Stack scroll in lines, relative to where the view puts it by itself (the user-code frame
    /// in sight); back to 0 whenever another thread's stack is shown.
    pub stack_scroll: i32,
    pub paused: bool,
    /// Set when the target has exited: the message shown; the last state stays on screen.
    pub target_gone: Option<String>,
    /// One line of feedback (saved file, failed refresh).
    pub status: Option<String>,
    /// The status goes away at the next good refresh (a failed refresh, "resumed").
    status_is_transient: bool,
    /// Where `s` writes snapshots.
    pub save_dir: PathBuf,
    pub quit: bool,
    /// Draw with colors (`--color`, NO_COLOR); without, selections are shown reversed.
    pub color: bool,
    /// Set by [`Action::Fatal`].
    pub fatal: Option<String>,
    /// Shared with the sampler thread so that pausing also stops collecting.
    pause_flag: Arc<AtomicBool>,
}

impl App {
    pub fn new(target: Pid, interval: Duration, save_dir: PathBuf) -> App {
        App {
            target,
            interval,
            report: None,
            history: History::default(),
            rows: Vec::new(),
            focus: Pane::Tree,
            overlay: Overlay::None,
            selected_pid: None,
            selected_tid: None,
            finding: 0,
            stack_scroll: 0,
            paused: false,
            target_gone: None,
            status: None,
            status_is_transient: false,
            save_dir,
            quit: false,
            color: true,
            fatal: None,
            pause_flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag the sampler reads to skip collecting while paused.
    pub fn pause_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.pause_flag)
    }

    /// Folds one action into the state.
    pub fn update(&mut self, action: Action) {
        let shown = self.stack_thread();
        self.apply(action);
        if self.stack_thread() != shown {
            self.stack_scroll = 0;
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Up => self.step(-1),
            Action::Down => self.step(1),
            Action::NextPane => self.cycle(1),
            Action::PrevPane => self.cycle(-1),
            Action::Open => self.open(),
            Action::Back => self.overlay = Overlay::None,
            Action::ToggleHelp => {
                self.overlay = match self.overlay {
                    Overlay::Help => Overlay::None,
                    _ => Overlay::Help,
                }
            }
            Action::TogglePause => {
                self.paused = !self.paused;
                self.pause_flag.store(self.paused, Ordering::Relaxed);
                self.status = Some(if self.paused {
                    "paused: press p to resume refreshing".into()
                } else {
                    "resumed".into()
                });
                self.status_is_transient = !self.paused;
            }
            Action::Save => self.save(),
            Action::Refresh(report) => {
                if !self.paused && self.target_gone.is_none() {
                    self.refresh(*report);
                }
            }
            Action::TargetGone(msg) => {
                self.history.all_gone();
                self.target_gone = Some(msg);
            }
            Action::CollectFailed(msg) => {
                self.status = Some(format!("refresh failed: {msg}"));
                self.status_is_transient = true;
            }
            Action::Fatal(msg) => {
                self.fatal = Some(msg);
                self.quit = true;
            }
        }
    }

    fn refresh(&mut self, mut report: Report) {
        if self.status_is_transient {
            self.status = None;
            self.status_is_transient = false;
        }
        // Worst first; the sort is stable so the analysis order breaks ties.
        report
            .findings
            .sort_by_key(|f| f.severity != Severity::Hang);
        self.history.observe(&report);
        self.rows = self.history.rows();
        self.report = Some(report);
        let pid_shown = |p: Pid| self.rows.iter().any(|(r, _)| *r == p);
        if !self.selected_pid.is_some_and(pid_shown) {
            self.selected_pid = self.rows.first().map(|(p, _)| *p);
            self.selected_tid = None;
        }
        let tids: Vec<Tid> = self.threads().iter().map(|t| t.tid).collect();
        if !self.selected_tid.is_some_and(|t| tids.contains(&t)) {
            self.selected_tid = tids.first().copied();
        }
        let n = self.findings().len();
        self.finding = self.finding.min(n.saturating_sub(1));
        if let Overlay::Finding { link } = self.overlay {
            match self.selected_finding() {
                Some(f) => {
                    let link = link.min(f.chain.len().saturating_sub(1));
                    self.overlay = Overlay::Finding { link };
                }
                None => self.overlay = Overlay::None,
            }
        }
    }

    fn cycle(&mut self, dir: i32) {
        // Reading order of the screen: top left, top right, bottom left, bottom right.
        const ORDER: [Pane; 4] = [Pane::Tree, Pane::Threads, Pane::Stack, Pane::Findings];
        let i = ORDER.iter().position(|p| *p == self.focus).unwrap_or(0) as i32;
        self.focus = ORDER[(i + dir).rem_euclid(4) as usize];
    }

    fn step(&mut self, dir: i32) {
        match self.overlay {
            Overlay::Help => return,
            Overlay::Finding { link } => {
                let n = self.selected_finding().map_or(0, |f| f.chain.len());
                self.overlay = Overlay::Finding {
                    link: moved(link, dir, n),
                };
                return;
            }
            Overlay::None => {}
        }
        match self.focus {
            Pane::Tree => {
                let i = self
                    .rows
                    .iter()
                    .position(|(p, _)| Some(*p) == self.selected_pid)
                    .unwrap_or(0);
                let j = moved(i, dir, self.rows.len());
                if let Some((p, _)) = self.rows.get(j) {
                    if Some(*p) != self.selected_pid {
                        self.selected_pid = Some(*p);
                        self.selected_tid = self.threads().first().map(|t| t.tid);
                    }
                }
            }
            Pane::Threads => {
                let tids: Vec<Tid> = self.threads().iter().map(|t| t.tid).collect();
                let i = tids
                    .iter()
                    .position(|t| Some(*t) == self.selected_tid)
                    .unwrap_or(0);
                self.selected_tid = tids.get(moved(i, dir, tids.len())).copied();
            }
            Pane::Stack => {
                let depth = self
                    .stack_thread()
                    .and_then(|r| self.thread(r))
                    .map_or(0, |t| {
                        t.py.as_ref().map_or(0, |p| p.frames.len())
                            + t.native.as_ref().map_or(0, Vec::len)
                    });
                let bound = i32::try_from(depth).unwrap_or(i32::MAX);
                self.stack_scroll = (self.stack_scroll + dir).clamp(-bound, bound);
            }
            Pane::Findings => self.finding = moved(self.finding, dir, self.findings().len()),
        }
    }

    fn open(&mut self) {
        if self.overlay != Overlay::None {
            self.overlay = Overlay::None;
            return;
        }
        match self.focus {
            Pane::Tree => self.focus = Pane::Threads,
            Pane::Threads | Pane::Stack => {}
            Pane::Findings => {
                let Some(f) = self.selected_finding() else {
                    return;
                };
                let target = f
                    .culprit
                    .as_ref()
                    .map(|c| ThreadRef {
                        pid: c.pid,
                        tid: c.tid,
                    })
                    .or_else(|| f.chain.first().map(|l| l.thread));
                let link = target
                    .and_then(|t| f.chain.iter().position(|l| l.thread == t))
                    .unwrap_or(0);
                if let Some(t) = target {
                    self.selected_pid = Some(t.pid);
                    self.selected_tid = Some(t.tid);
                }
                self.overlay = Overlay::Finding { link };
            }
        }
    }

    fn save(&mut self) {
        let Some(report) = &self.report else {
            self.status = Some("nothing to save yet: no refresh has completed".into());
            self.status_is_transient = true;
            return;
        };
        self.status_is_transient = false;
        self.status = Some(match save_snapshot(&report.snapshot, &self.save_dir) {
            Ok(path) => format!(
                "saved {} (open with `mphang report --from`)",
                path.display()
            ),
            Err(e) => format!("save failed: {e}"),
        });
    }

    /// Findings of the newest report, worst first.
    pub fn findings(&self) -> &[Finding] {
        self.report.as_ref().map_or(&[], |r| &r.findings)
    }

    pub fn selected_finding(&self) -> Option<&Finding> {
        self.findings().get(self.finding)
    }

    /// Threads of the selected process (from its last look, also when it is gone).
    pub fn threads(&self) -> &[ThreadSnap] {
        self.selected_pid
            .and_then(|p| self.history.process(p))
            .and_then(|t| t.last.as_ref())
            .map_or(&[], |p| &p.threads)
    }

    /// The thread whose stack is shown: the selected chain link inside a drilled finding,
    /// otherwise the selected thread of the selected process.
    pub fn stack_thread(&self) -> Option<ThreadRef> {
        if let Overlay::Finding { link } = self.overlay {
            if let Some(l) = self.selected_finding().and_then(|f| f.chain.get(link)) {
                return Some(l.thread);
            }
        }
        Some(ThreadRef {
            pid: self.selected_pid?,
            tid: self.selected_tid?,
        })
    }

    /// The thread `r` from its process's last look (live or gone).
    pub fn thread(&self, r: ThreadRef) -> Option<&ThreadSnap> {
        self.history.process(r.pid)?.last.as_ref()?.thread(r.tid)
    }
}

/// Index `i` moved by `dir` within `0..n`, clamped.
fn moved(i: usize, dir: i32, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let j = i as i64 + i64::from(dir);
    j.clamp(0, n as i64 - 1) as usize
}

/// Writes `snap` as `mphang-<root>-<YYYYmmdd-HHMMSS>.json` (UTC time of the look) in `dir`.
/// The file is a plain snapshot, the input of `mphang report --from`.
pub fn save_snapshot(snap: &Snapshot, dir: &Path) -> Result<PathBuf> {
    let name = format!(
        "mphang-{}-{}.json",
        snap.root,
        utc_stamp(snap.taken_at_ms / 1000)
    );
    let path = dir.join(name);
    let json = serde_json::to_string_pretty(snap).map_err(|e| Error::Io {
        context: "serializing the snapshot".into(),
        source: std::io::Error::other(e),
    })?;
    crate::cmd::report::write_private(&path, (json + "\n").as_bytes()).map_err(|source| {
        Error::WriteOutput {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// `YYYYmmdd-HHMMSS` in UTC for seconds since the epoch (civil-from-days, H. Hinnant).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `HH:MM:SS` in UTC for milliseconds since the epoch.
pub fn utc_clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_763_704_800), "20251121-060000");
        assert_eq!(utc_stamp(951_825_600), "20000229-120000");
        assert_eq!(utc_clock(1_763_704_861_000), "06:01:01");
    }

    #[test]
    fn moved_clamps() {
        assert_eq!(moved(0, -1, 3), 0);
        assert_eq!(moved(2, 1, 3), 2);
        assert_eq!(moved(1, 1, 3), 2);
        assert_eq!(moved(5, 1, 0), 0);
    }
}
