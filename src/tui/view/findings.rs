//! The findings pane (worst first: pattern, summary, chain, culprit line, fix) and the drilled
//! view of one finding (the chain walked link by link next to the selected link's stack).

use super::{focused, pane, wrap};
use crate::analysis::{CodeLine, Finding, Severity};
use crate::tui::app::{App, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

fn severity_span(f: &Finding) -> Span<'static> {
    match f.severity {
        Severity::Hang => Span::styled(
            "HANG ",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        Severity::Warning => Span::styled("WARN ", Style::new().fg(Color::Yellow)),
    }
}

fn culprit_text(c: &CodeLine) -> String {
    let base = c.file.rsplit('/').next().unwrap_or(&c.file);
    format!(
        "{base}:{} in {} (pid {}, thread {})",
        c.line, c.function, c.pid, c.tid
    )
}

pub(super) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let is_focused = focused(app, Pane::Findings);
    let findings = app.findings();
    let block = pane(format!("Findings ({})", findings.len()), is_focused);
    if findings.is_empty() {
        let msg = if app.report.is_none() {
            "waiting for the first look…"
        } else {
            "nothing proven stuck: no hang found in this look"
        };
        let p = Paragraph::new(Span::styled(msg, Style::new().fg(Color::DarkGray))).block(block);
        frame.render_widget(p, area);
        return;
    }
    // Borders and the highlight symbol take 3 columns, the item indent 2 more.
    let width = area.width.saturating_sub(5) as usize;
    let label = Style::new().fg(Color::DarkGray);
    // One paragraph scrolled to the selected finding: a List would drop an item taller than
    // the pane, and a finding (summary, chain, culprit, fix) often is on small terminals.
    let mut all: Vec<Line> = Vec::new();
    let mut selected_start = 0;
    for (idx, f) in findings.iter().enumerate() {
        {
            let mut lines = vec![Line::from(vec![
                severity_span(f),
                Span::styled(
                    f.pattern.as_str(),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::styled(
                    format!("  pids {}", join(f.pids.iter())),
                    Style::new().fg(Color::Magenta),
                ),
            ])];
            for l in wrap(&f.summary, width, "  ") {
                lines.push(Line::from(format!("  {}", l.trim_start())));
            }
            let mut field = |head: &str, text: &str, style: Style| {
                let pad = " ".repeat(head.chars().count());
                let w = width.saturating_sub(pad.len());
                for (i, l) in wrap(text, w, "  ").into_iter().enumerate() {
                    let h = if i == 0 {
                        head.to_string()
                    } else {
                        pad.clone()
                    };
                    lines.push(Line::from(vec![
                        Span::styled(format!("  {h}"), label),
                        Span::styled(l, style),
                    ]));
                }
            };
            for (i, l) in f.chain.iter().enumerate() {
                let head = if i == 0 { "chain: " } else { "     → " };
                let text = format!("{} {}: {}", l.thread.pid, l.name, l.waits_on);
                field(head, &text, Style::new());
            }
            if let Some(c) = &f.culprit {
                field(
                    "culprit: ",
                    &culprit_text(c),
                    Style::new().fg(Color::Yellow),
                );
            }
            if !f.fix.is_empty() {
                field("fix: ", &f.fix, Style::new().fg(Color::Green));
            }
            lines.push(Line::from(""));
            let selected = idx == app.finding;
            if selected {
                selected_start = all.len();
            }
            let gutter = if selected { "▌" } else { " " };
            for mut line in lines {
                line.spans
                    .insert(0, Span::styled(gutter, Style::new().fg(Color::Magenta)));
                if selected && is_focused {
                    line = line.style(Style::new().bg(Color::Rgb(40, 40, 60)));
                }
                all.push(line);
            }
        }
    }
    let inner = area.height.saturating_sub(2) as usize;
    let scroll = selected_start.min(all.len().saturating_sub(inner));
    let p = Paragraph::new(all)
        .block(block)
        .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0));
    frame.render_widget(p, area);
}

/// The drilled view of the selected finding; `link` is the selected chain link.
pub(super) fn draw_detail(app: &App, frame: &mut Frame, area: Rect, link: usize) {
    let Some(f) = app.selected_finding() else {
        return;
    };
    frame.render_widget(Clear, area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let label = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![
            severity_span(f),
            Span::styled(
                f.pattern.as_str(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(f.summary.clone()),
        Line::from(""),
        Line::from(Span::styled(
            "Wait chain (↑↓ walks it; its stack is on the right)",
            label,
        )),
    ];
    let width = left.width.saturating_sub(16) as usize; // borders + the 13-column indent
    for (i, l) in f.chain.iter().enumerate() {
        let selected = i == link;
        let style = if selected {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        lines.push(Line::from(vec![
            Span::raw(if selected { "▶ " } else { "  " }),
            Span::styled(
                format!("{}/{} {}", l.thread.pid, l.thread.tid, l.name),
                style,
            ),
        ]));
        for (j, w) in wrap(&l.waits_on, width, "").into_iter().enumerate() {
            let head = if j == 0 {
                "    waits on "
            } else {
                "             "
            };
            lines.push(Line::from(vec![
                Span::styled(head, Style::new().fg(Color::DarkGray)),
                Span::styled(w, Style::new().fg(Color::Cyan)),
            ]));
        }
        // The full verdict of the selected link (who is on the other side).
        let verdict = app.report.as_ref().and_then(|r| r.verdict(l.thread));
        if let (true, Some(v)) = (selected, verdict) {
            for w in wrap(&v.line, width, "") {
                lines.push(Line::from(Span::styled(
                    format!("             {w}"),
                    Style::new().fg(Color::Gray),
                )));
            }
        }
    }
    lines.push(Line::from(""));
    if let Some(c) = &f.culprit {
        lines.push(Line::from(vec![
            Span::styled("Culprit: ", label),
            Span::styled(culprit_text(c), Style::new().fg(Color::Yellow)),
        ]));
    }
    if !f.fix.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("Fix: ", label),
            Span::styled(f.fix.clone(), Style::new().fg(Color::Green)),
        ]));
    }
    if !f.user_lines.is_empty() {
        lines.push(Line::from(Span::styled("User code involved:", label)));
        for c in &f.user_lines {
            lines.push(Line::from(format!("  {}", culprit_text(c))));
        }
    }
    if !f.evidence.is_empty() {
        lines.push(Line::from(Span::styled("Evidence:", label)));
        for e in &f.evidence {
            lines.push(Line::from(format!("  • {e}")));
        }
    }
    if !f.doc.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("More: ", label),
            Span::raw(f.doc.clone()),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Esc or Enter to close",
        Style::new().fg(Color::DarkGray),
    )));
    let p = Paragraph::new(lines)
        .block(pane(
            format!("Finding {} of {}", app.finding + 1, app.findings().len()),
            true,
        ))
        .wrap(Wrap { trim: false });
    frame.render_widget(p, left);
    super::stack::draw(app, frame, right, true);
}

fn join<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> String {
    it.map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}
