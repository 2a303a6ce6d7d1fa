//! The key table: the one place that turns a key press into an [`Action`]; the help overlay
//! shows [`BINDINGS`], so the two cannot drift apart.

use super::app::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Keys as shown in the help overlay: (keys, what they do).
pub const BINDINGS: &[(&str, &str)] = &[
    (
        "↑ ↓  k j",
        "move the selection (or scroll the stack) in the focused pane",
    ),
    (
        "Tab  Shift-Tab",
        "next / previous pane (processes, threads, stack, findings)",
    ),
    (
        "Enter",
        "open the selected finding (in the tree: go to its threads)",
    ),
    ("Esc", "close the finding or this help"),
    ("p", "pause / resume refreshing"),
    ("s", "save the current snapshot to mphang-<pid>-<time>.json"),
    ("?", "show / hide this help"),
    ("q  Ctrl-C", "quit (the target is left running, untouched)"),
];

/// The action for a key press; None for keys that do nothing (and for key releases).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let a = match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Tab => Action::NextPane,
        KeyCode::BackTab => Action::PrevPane,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('s') => Action::Save,
        KeyCode::Char('?') => Action::ToggleHelp,
        _ => return None,
    };
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_c_quits_and_plain_c_does_nothing() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert!(matches!(action(ctrl_c), Some(Action::Quit)));
        let c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE);
        assert!(action(c).is_none());
    }
}
