//! The help overlay: the key table from [`crate::tui::keymap::BINDINGS`] and what the columns mean.

use super::pane;
use crate::tui::keymap::BINDINGS;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

pub(super) fn draw(frame: &mut Frame, area: Rect) {
    frame.render_widget(Clear, area);
    let head = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(Span::styled("Keys", head))];
    for (keys, what) in BINDINGS {
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {keys:<16}"),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Columns and marks", head)));
    for (k, v) in [
        (
            "CPU%",
            "CPU used between the last two looks, in % of one CPU",
        ),
        (
            "STATUS",
            "running · waiting (blocked, not proven stuck) · stuck (proven) · gone",
        ),
        (
            "IDLE",
            "time since a thread of the process last moved (counted since attach)",
        ),
        (
            "[reason, t]",
            "how long a thread has sat in the same call with the same stack",
        ),
        ("●", "belongs to the selected finding"),
        ("▶ (stack)", "the innermost frame of your own code"),
    ] {
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {k:<16}"),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(v),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "mphang only reads the tree; quitting leaves every process as it was.  ? or Esc closes.",
        Style::new().fg(Color::DarkGray),
    )));
    let p = Paragraph::new(lines)
        .block(pane("Help".into(), true))
        .wrap(Wrap { trim: false });
    frame.render_widget(p, area);
}
