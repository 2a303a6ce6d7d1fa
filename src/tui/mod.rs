//! Live terminal UI for `mphang attach`: one event enum, one loop, state apart from the view.
//!
//! [`event`] threads feed [`event::Event`]s into a channel; [`run`] turns each into an
//! [`app::Action`] (keys through [`keymap`]), lets [`app::App::update`] fold it in, and redraws
//! with the pure [`view::draw`]. `run` is generic over the ratatui backend so the tests drive it
//! with `TestBackend`. [`Tty`] owns raw mode and the alternate screen: it restores them on drop,
//! and the panic hook installed with it restores them on a panic.

pub mod app;
pub mod event;
pub mod history;
pub mod keymap;
pub mod view;

use crate::error::{Error, Result};
use app::{Action, App};
use crossterm::{cursor, execute, terminal};
use event::Event;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::Terminal;
use std::io::{IsTerminal, Stdout};
use std::sync::mpsc::Receiver;
use std::sync::Once;

/// Runs the loop until the user quits (or every event source is gone): draw, wait for an event,
/// update, repeat. Events queued meanwhile are folded in before the next draw.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    events: &Receiver<Event>,
    app: &mut App,
) -> Result<()> {
    loop {
        terminal
            .draw(|f| {
                view::draw(app, f);
                if !app.color {
                    monochrome(f.buffer_mut());
                }
            })
            .map_err(|e| Error::Terminal(format!("cannot draw on the terminal: {e}")))?;
        if app.quit {
            break;
        }
        let Ok(first) = events.recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(ev) = next {
            if let Some(action) = action_for(ev) {
                app.update(action);
            }
            if app.quit {
                break;
            }
            next = events.try_recv().ok();
        }
    }
    match app.fatal.take() {
        Some(msg) => Err(Error::Terminal(msg)),
        None => Ok(()),
    }
}

/// Drops every color from a drawn frame (`--color never`, NO_COLOR): a cell with a background
/// (a selection, a banner) is shown reversed instead, so it still stands out.
pub fn monochrome(buf: &mut ratatui::buffer::Buffer) {
    use ratatui::style::{Color, Modifier};
    for cell in buf.content.iter_mut() {
        if cell.bg != Color::Reset {
            cell.modifier.insert(Modifier::REVERSED);
        }
        cell.fg = Color::Reset;
        cell.bg = Color::Reset;
    }
}

/// The action an event asks for (None: just redraw, as after a resize or tick).
pub fn action_for(ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => keymap::action(k),
        Event::Resize(..) | Event::Tick => None,
        Event::Report(r) => Some(Action::Refresh(r)),
        Event::TargetGone(m) => Some(Action::TargetGone(m)),
        Event::CollectFailed(m) => Some(Action::CollectFailed(m)),
        Event::Fatal(m) => Some(Action::Fatal(m)),
        Event::Signal(_) => Some(Action::Quit),
    }
}

/// The real terminal in raw mode on the alternate screen; restores it when dropped.
pub struct Tty {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Tty {
    /// Checks that stdin and stdout are terminals, installs the panic hook, enters raw mode
    /// and the alternate screen.
    pub fn enter() -> Result<Tty> {
        if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
            return Err(Error::Terminal("mphang attach needs a terminal".into()));
        }
        install_panic_hook();
        let io = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        terminal::enable_raw_mode().map_err(io("entering raw mode"))?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, terminal::EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(io("switching to the alternate screen")(e));
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Tty { terminal }),
            Err(e) => {
                restore();
                Err(io("setting up the terminal")(e))
            }
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; safe to call twice.
pub fn restore() {
    // Raw mode first: it has more side effects than the screen switch. Nothing useful can be
    // done if the terminal refuses while we are already on the way out.
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// Chains a hook that restores the terminal before the previous hook prints the panic.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
