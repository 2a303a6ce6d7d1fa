//! The process tree pane: one row per process (gone ones kept), with role, CPU %, thread count,
//! status and time since it last made progress; processes of the selected finding are marked ●.

use super::{focused, pane};
use crate::tui::app::{App, Pane};
use crate::tui::history::{short_age, Status};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let marked: Vec<_> = app
        .selected_finding()
        .map(|f| f.pids.clone())
        .unwrap_or_default();
    let report = app.report.as_ref();
    let rows: Vec<Row> = app
        .rows
        .iter()
        .filter_map(|(pid, depth)| {
            let track = app.history.process(*pid)?;
            let status = app.history.status(*pid, report);
            let indent = match depth {
                0 => String::new(),
                d => format!("{}└ ", "  ".repeat(d - 1)),
            };
            let (role, threads) = match &track.last {
                Some(p) => (p.role.label().to_string(), p.num_threads.to_string()),
                None => ("?".into(), "-".into()),
            };
            let cpu = track
                .cpu_pct
                .map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
            let since = match status {
                Status::Gone => String::new(),
                _ => app.history.idle_ms(*pid).map(short_age).unwrap_or_default(),
            };
            let cmd = match &track.gone {
                Some(Some(ended)) => ended.clone(),
                _ => short_cmd(&track.cmdline),
            };
            let status_style = match status {
                Status::Running => Style::new().fg(Color::Green),
                Status::Waiting => Style::new().fg(Color::Yellow),
                Status::Stuck => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                Status::Gone => Style::new().fg(Color::DarkGray),
            };
            let mark = if marked.contains(pid) {
                Span::styled("●", Style::new().fg(Color::Magenta))
            } else {
                Span::raw(" ")
            };
            let row = Row::new(vec![
                Cell::from(mark),
                Cell::from(format!("{indent}{pid}")),
                Cell::from(role),
                Cell::from(cpu),
                Cell::from(threads),
                Cell::from(Span::styled(status.label(), status_style)),
                Cell::from(since),
                Cell::from(cmd),
            ]);
            Some(if status == Status::Gone {
                row.style(Style::new().fg(Color::DarkGray))
            } else {
                row
            })
        })
        .collect();
    let header = Row::new(vec![
        "", "PID", "ROLE", "CPU%", "THR", "STATUS", "IDLE", "COMMAND",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    // The pid column fits the deepest indented pid (a cut pid is worse than anything else);
    // the role column gives way next, then the command takes what is left.
    let pid_width = app
        .rows
        .iter()
        .map(|(p, d)| 2 * d + p.to_string().len())
        .max()
        .unwrap_or(3)
        .max(3);
    let inner = usize::from(area.width.saturating_sub(3)); // borders + highlight symbol
    let fixed = 1 + pid_width + 5 + 3 + 7 + 6 + 7; // mark, pid, cpu, thr, status, idle, gaps
    let role_width = inner.saturating_sub(fixed).min(12);
    let len = |w: usize| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX));
    let widths = [
        Constraint::Length(1),
        len(pid_width),
        len(if role_width >= 4 { role_width } else { 0 }),
        Constraint::Length(5),
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let is_focused = focused(app, Pane::Tree);
    let table = Table::new(rows, widths)
        .header(header)
        .block(pane("Processes".into(), is_focused))
        .row_highlight_style(if is_focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        })
        .highlight_symbol("▶");
    let selected = app
        .rows
        .iter()
        .position(|(p, _)| Some(*p) == app.selected_pid);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

/// `python join_before_drain.py` from a full command line: basenames, at most three words.
fn short_cmd(cmdline: &[String]) -> String {
    cmdline
        .iter()
        .take(3)
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect::<Vec<_>>()
        .join(" ")
}
