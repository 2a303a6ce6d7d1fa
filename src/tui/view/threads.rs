//! The threads pane: each thread of the selected process with a Go-style `[reason, time]`
//! (how long it has sat in the same call with the same stack) and its verdict line.

use super::{focused, pane};
use crate::analysis::Progress;
use crate::model::{SyscallState, ThreadRef};
use crate::tui::app::{App, Pane};
use crate::tui::history::{long_age, wait_reason};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{List, ListItem, ListState};
use ratatui::Frame;

pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let title = match app.selected_pid.and_then(|p| app.history.process(p)) {
        Some(track) => {
            let role = track.last.as_ref().map_or("?", |p| p.role.label());
            let gone = match &track.gone {
                Some(Some(ended)) => format!(", gone: {ended}"),
                Some(None) => ", gone".to_string(),
                None => String::new(),
            };
            format!("Threads of {} ({role}{gone})", track.pid)
        }
        None => "Threads".into(),
    };
    let marked: Vec<ThreadRef> = app
        .selected_finding()
        .map(|f| f.threads.clone())
        .unwrap_or_default();
    let width = area.width.saturating_sub(4) as usize;
    let items: Vec<ListItem> = app
        .threads()
        .iter()
        .filter_map(|t| {
            let r = ThreadRef {
                pid: app.selected_pid?,
                tid: t.tid,
            };
            let verdict = app.report.as_ref().and_then(|rep| rep.verdict(r));
            let reason = wait_reason(t, verdict.map(|v| &v.blocked_on));
            let bracket = match app.history.blocked_for_ms(r).and_then(long_age) {
                Some(age) => format!("[{reason}, {age}]"),
                None => format!("[{reason}]"),
            };
            let stuck = verdict.is_some_and(|v| v.progress == Progress::Stuck);
            let mark = if marked.contains(&r) {
                Span::styled("● ", Style::new().fg(Color::Magenta))
            } else {
                Span::raw("  ")
            };
            let mut first = vec![
                mark,
                Span::styled(
                    format!("{:<7} ", t.tid),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("{:<18} ", t.display_name())),
                Span::styled(bracket, Style::new().fg(Color::Cyan)),
            ];
            if stuck {
                first.push(Span::styled(
                    "  stuck",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            } else if verdict.is_some_and(|v| v.housekeeping) {
                first.push(Span::styled(
                    "  housekeeping",
                    Style::new().fg(Color::DarkGray),
                ));
            }
            let detail = match verdict {
                Some(v) => v.line.clone(),
                None => fallback_line(t),
            };
            let mut lines = vec![Line::from(first)];
            for l in super::wrap(&detail, width.saturating_sub(4), "")
                .into_iter()
                .take(4)
            {
                lines.push(Line::from(Span::styled(
                    format!("    {l}"),
                    Style::new().fg(Color::Gray),
                )));
            }
            Some(ListItem::new(Text::from(lines)))
        })
        .collect();
    let is_focused = focused(app, Pane::Threads);
    let list = List::new(items)
        .block(pane(title, is_focused))
        .highlight_style(if is_focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        });
    let selected = app
        .threads()
        .iter()
        .position(|t| Some(t.tid) == app.selected_tid);
    let mut state = ListState::default().with_selected(selected);
    frame.render_stateful_widget(list, area, &mut state);
}

/// What to say about a thread when the analysis gave no verdict: the raw kernel view.
fn fallback_line(t: &crate::model::ThreadSnap) -> String {
    let wchan = t.wchan.as_deref().unwrap_or("-");
    match &t.syscall {
        SyscallState::Blocked(s) => format!("in {} (wchan {wchan}), no verdict", s.name),
        SyscallState::Running => "running".into(),
        SyscallState::UserStopped => format!("stopped (state {})", t.state),
        SyscallState::Unknown => format!("state {}, syscall not readable", t.state),
    }
}
