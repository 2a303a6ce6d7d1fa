//! Drawing: pure functions from `&App` to a ratatui frame. Nothing here changes state.
//!
//! Screen: a header line, the process tree and the selected process's threads on top, the
//! selected thread's merged stack and the findings below, a status line; the help and a drilled
//! finding are drawn over the panes.

mod findings;
mod help;
mod stack;
mod threads;
mod tree;

use super::app::{utc_clock, App, Overlay, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};
use ratatui::Frame;

/// Draws the whole screen for `app`.
pub fn draw(app: &App, frame: &mut Frame) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(app, frame, header);
    draw_footer(app, frame, footer);

    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
    let [tree_area, threads_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(top);
    let [stack_area, findings_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom);
    tree::draw(app, frame, tree_area);
    threads::draw(app, frame, threads_area);
    stack::draw(app, frame, stack_area, focused(app, Pane::Stack));
    findings::draw(app, frame, findings_area);

    match app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(frame, popup(body, 80, 80)),
        Overlay::Finding { link } => findings::draw_detail(app, frame, body, link),
    }
}

fn draw_header(app: &App, frame: &mut Frame, area: Rect) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(
        format!(" mphang attach {} ", app.target),
        bold,
    )];
    let sep = || Span::styled(" │ ", Style::new().fg(Color::DarkGray));
    if let Some(r) = &app.report {
        let alive = app
            .rows
            .iter()
            .filter(|(p, _)| app.history.process(*p).is_some_and(|t| t.gone.is_none()))
            .count();
        spans.push(sep());
        spans.push(Span::raw(format!(
            "{alive} process{}",
            if alive == 1 { "" } else { "es" }
        )));
        spans.push(sep());
        spans.push(Span::raw(format!(
            "look #{} at {} UTC, every {}",
            app.history.refreshes,
            utc_clock(r.snapshot.taken_at_ms),
            interval_label(app)
        )));
        if let Some(w) = &r.snapshot.watched {
            spans.push(sep());
            spans.push(Span::styled(
                format!(
                    "watched since {} UTC, earlier unknown",
                    utc_clock(w.since_ms)
                ),
                Style::new().fg(Color::DarkGray),
            ));
        }
        spans.push(sep());
        match r.findings.first() {
            Some(f) if r.hang => spans.push(Span::styled(
                format!("HANG: {}", f.pattern),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )),
            Some(f) => spans.push(Span::styled(
                format!("warning: {}", f.pattern),
                Style::new().fg(Color::Yellow),
            )),
            None => spans.push(Span::styled("no hang found", Style::new().fg(Color::Green))),
        }
    } else {
        spans.push(sep());
        spans.push(Span::raw("waiting for the first look…"));
    }
    if app.paused {
        spans.push(sep());
        spans.push(Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    if app.target_gone.is_some() {
        spans.push(sep());
        spans.push(Span::styled(
            " TARGET EXITED ",
            Style::new().fg(Color::White).bg(Color::Red),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn interval_label(app: &App) -> String {
    let ms = app.interval.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn draw_footer(app: &App, frame: &mut Frame, area: Rect) {
    let line = if let Some(msg) = &app.target_gone {
        Line::from(Span::styled(
            format!(" {msg}; showing the last state. q to quit"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ))
    } else if let Some(msg) = &app.status {
        Line::from(Span::styled(
            format!(" {msg}"),
            Style::new().fg(Color::Yellow),
        ))
    } else {
        Line::from(Span::styled(
            " Tab pane · ↑↓/jk move · Enter open finding · p pause · s save snapshot · ? help · q quit",
            Style::new().fg(Color::DarkGray),
        ))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A bordered pane; the focused one has a bright double border.
fn pane(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(Span::styled(
        format!(" {title} "),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    if focused {
        block
            .border_type(BorderType::Double)
            .border_style(Style::new().fg(Color::Cyan))
    } else {
        block.border_style(Style::new().fg(Color::DarkGray))
    }
}

fn focused(app: &App, p: Pane) -> bool {
    app.overlay == Overlay::None && app.focus == p
}

/// A centered rectangle of `pw`% x `ph`% of `area`.
fn popup(area: Rect, pw: u16, ph: u16) -> Rect {
    let [_, mid, _] = Layout::vertical([
        Constraint::Percentage((100 - ph) / 2),
        Constraint::Percentage(ph),
        Constraint::Fill(1),
    ])
    .areas(area);
    let [_, c, _] = Layout::horizontal([
        Constraint::Percentage((100 - pw) / 2),
        Constraint::Percentage(pw),
        Constraint::Fill(1),
    ])
    .areas(mid);
    c
}

/// Greedy word wrap to `width` columns (counted in chars); continuation lines get `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let width = width.max(indent.chars().count() + 8);
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let cur_len = cur.chars().count();
        let wlen = word.chars().count();
        if cur_len > 0 && cur_len + 1 + wlen > width {
            out.push(std::mem::take(&mut cur));
            cur.push_str(indent);
        } else if cur_len > 0 && !cur.ends_with(' ') {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_words() {
        assert_eq!(
            wrap("aaa bbb ccc ddd", 9, "  "),
            vec!["aaa bbb".to_string(), "  ccc ddd".to_string()]
        );
        assert!(wrap("", 10, "").is_empty());
    }
}
