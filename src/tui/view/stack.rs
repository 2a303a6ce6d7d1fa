//! The stack pane: the selected thread's Python frames merged with its native frames (when
//! native sampling ran), innermost first, with the innermost user-code frame highlighted.

use super::pane;
use crate::model::merge::{merge_with_entries, MergedFrame};
use crate::model::{NativeFrame, PyFrame, ThreadSnap};
use crate::tui::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

/// One line of a merged stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackLine {
    /// A native frame (C, libc, the interpreter loop).
    Native(String),
    /// A Python frame; `user` marks the innermost frame of user code.
    Python { text: String, user: bool },
    /// A Python frame of the parent, inherited by a fork child (not this process's work).
    Inherited(String),
    /// A remark between frames.
    Note(String),
}

/// The stack of a thread, innermost first, merged the way the analysis merges it
/// ([`merge_with_entries`]: Python frames in place of the interpreter's eval loop, libc and
/// extension frames kept) when native frames exist, else the Python frames alone. The innermost user frame among
/// the frames this process runs itself is marked; frames below multiprocessing's `_bootstrap`
/// were copied from the parent at fork and are shown as such.
///
/// `native` stands in for the thread's own native frames when this look did not read them.
pub fn merged(t: &ThreadSnap, native: Option<&[NativeFrame]>) -> Vec<StackLine> {
    let py_frames: &[PyFrame] = t.py.as_ref().map_or(&[], |p| p.frames.as_slice());
    let own = t.py.as_ref().map_or(0, |p| p.own_frames().len());
    let user =
        t.py.as_ref()
            .and_then(|p| p.own_frames().iter().position(|f| f.is_user_code()));
    let mut out = Vec::with_capacity(py_frames.len() + 1);
    let mut py_index = 0;
    let mut python = |f: &PyFrame, out: &mut Vec<StackLine>| {
        let i = py_index;
        py_index += 1;
        if i == own && own < py_frames.len() {
            out.push(StackLine::Note(
                "below: the parent's stack, copied at fork".into(),
            ));
        }
        let text = format!("{} ({})", f.function, f.short_location());
        out.push(if i < own {
            StackLine::Python {
                text,
                user: Some(i) == user,
            }
        } else {
            StackLine::Inherited(text)
        });
    };
    match t.native.as_deref().or(native) {
        Some(native) if !native.is_empty() => {
            let entries: Vec<bool> = py_frames.iter().map(|f| f.entry).collect();
            for m in merge_with_entries(py_frames, &entries, native) {
                match m {
                    MergedFrame::Python(f) => python(&f, &mut out),
                    MergedFrame::Native(n) => out.push(native_line(&n)),
                }
            }
        }
        _ => {
            for f in py_frames {
                python(f, &mut out);
            }
        }
    }
    out
}

/// `name (file.c:123)`, or `name (module)` without line info, as in the text report.
fn native_line(f: &NativeFrame) -> StackLine {
    let func = f
        .function
        .clone()
        .unwrap_or_else(|| format!("{:#x}", f.addr));
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let loc = match (&f.file, f.line) {
        (Some(file), Some(line)) => Some(format!("{}:{line}", base(file))),
        _ => f.module.as_deref().map(base),
    };
    StackLine::Native(match loc {
        Some(l) => format!("{func} ({l})"),
        None => func,
    })
}

/// Draws the stack of [`App::stack_thread`] into `area`.
pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect, focused: bool) {
    let r = app.stack_thread();
    let t = r.and_then(|r| app.thread(r));
    let title = match (r, t) {
        (Some(r), Some(t)) => format!("Stack of {}/{} {}", r.pid, r.tid, t.display_name()),
        _ => "Stack".into(),
    };
    let mut lines: Vec<Line> = Vec::new();
    match t {
        None => lines.push(Line::from(Span::styled(
            "no thread selected",
            Style::new().fg(Color::DarkGray),
        ))),
        Some(t) => {
            // Native stacks are read every few looks; until the thread moves, show the last one.
            let earlier = match (t.native.as_ref(), r) {
                (None, Some(r)) => app.history.native(r),
                _ => None,
            };
            if let Some((_, look)) = earlier {
                lines.push(Line::from(Span::styled(
                    format!("  (native frames of look #{look}, unchanged since)"),
                    Style::new()
                        .fg(Color::DarkGray)
                        .add_modifier(Modifier::ITALIC),
                )));
            }
            let merged = merged(t, earlier.map(|(n, _)| n));
            if merged.is_empty() {
                lines.push(Line::from(Span::styled(
                    "no stack: not a Python thread mphang could read, and no native stack",
                    Style::new().fg(Color::DarkGray),
                )));
            }
            for l in merged {
                lines.push(match l {
                    StackLine::Native(s) => Line::from(Span::styled(
                        format!("  [native] {s}"),
                        Style::new().fg(Color::DarkGray),
                    )),
                    StackLine::Python { text, user: true } => Line::from(Span::styled(
                        format!("▶ {text}"),
                        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                    )),
                    StackLine::Python { text, user: false } => Line::from(format!("  {text}")),
                    StackLine::Inherited(text) => Line::from(Span::styled(
                        format!("  {text}"),
                        Style::new().fg(Color::DarkGray),
                    )),
                    StackLine::Note(text) => Line::from(Span::styled(
                        format!("  ── {text} ──"),
                        Style::new()
                            .fg(Color::DarkGray)
                            .add_modifier(Modifier::ITALIC),
                    )),
                });
            }
        }
    }
    // By itself the view keeps the user-code frame in sight; ↑↓ in the pane move from there.
    let inner = usize::from(area.height.saturating_sub(2));
    let user = lines
        .iter()
        .position(|l| l.spans.first().is_some_and(|s| s.content.starts_with('▶')))
        .unwrap_or(0);
    let auto = if user >= inner { user - inner / 2 } else { 0 };
    let max = lines.len().saturating_sub(inner);
    let offset = (auto as i64 + i64::from(app.stack_scroll)).clamp(0, max as i64);
    let p = Paragraph::new(lines)
        .block(pane(title, focused))
        .wrap(Wrap { trim: false })
        .scroll((u16::try_from(offset).unwrap_or(u16::MAX), 0));
    frame.render_widget(p, area);
}
