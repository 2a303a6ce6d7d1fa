//! Integration tests: the live view. Snapshots of the screen drawn on ratatui's `TestBackend`
//! from a hand-made join-before-drain report, key-driven state tests, the event threads, and
//! (in `tui/tmux.rs`) one end-to-end run of `mphang attach` in a real terminal under tmux.

mod demo;
mod tmux;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mphang::model::{GoneProcess, Pid, Snapshot, ThreadRef, Tid};
use mphang::tui::app::{Action, App, Overlay, Pane};
use mphang::tui::event::{spawn_sampler_thread, Event};
use mphang::tui::history::Status;
use mphang::tui::{action_for, keymap, run, view};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const W: u16 = 140;
const H: u16 = 42;

fn key(c: char) -> Action {
    keymap::action(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)).expect("bound key")
}

fn code(k: KeyCode) -> Action {
    keymap::action(KeyEvent::new(k, KeyModifiers::NONE)).expect("bound key")
}

/// An app that has seen the demo report twice, five minutes apart (nothing moved).
fn demo_app() -> App {
    let mut app = App::new(demo::PARENT, Duration::from_secs(1), std::env::temp_dir());
    app.update(Action::Refresh(Box::new(demo::report(0))));
    app.update(Action::Refresh(Box::new(demo::report(300_000))));
    app
}

fn screen(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
    terminal
        .draw(|f| view::draw(app, f))
        .expect("draw on the test backend");
    terminal.backend().to_string()
}

#[test]
fn main_screen() {
    let mut app = demo_app();
    app.update(key('j')); // the child: its feeder thread is blocked writing the pipe
    let s = screen(&app);
    assert!(s.contains("[pipe write, 5 minutes]"), "{s}");
    assert!(s.contains("join_before_drain"), "{s}");
    insta::assert_snapshot!("tui_main_screen", s);
}

#[test]
fn monochrome_screen_has_no_colors_but_keeps_the_selection() {
    use ratatui::style::{Color, Modifier};
    let app = demo_app();
    let mut terminal = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
    let colored = terminal
        .draw(|f| view::draw(&app, f))
        .expect("draw")
        .buffer
        .clone();
    assert!(colored.content.iter().any(|c| c.fg != Color::Reset));
    let mut mono = colored.clone();
    mphang::tui::monochrome(&mut mono);
    assert!(mono
        .content
        .iter()
        .all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
    // The selection (drawn reversed) is still there.
    let reversed = |b: &ratatui::buffer::Buffer| {
        b.content
            .iter()
            .filter(|c| c.modifier.contains(Modifier::REVERSED))
            .count()
    };
    assert!(reversed(&mono) > 0 && reversed(&mono) == reversed(&colored));
    // A banner's background becomes reverse video.
    let mut banner = ratatui::buffer::Buffer::empty(ratatui::layout::Rect::new(0, 0, 3, 1));
    banner.content[1].bg = Color::Red;
    mphang::tui::monochrome(&mut banner);
    assert_eq!(reversed(&banner), 1);
    assert!(banner.content[1].modifier.contains(Modifier::REVERSED));
}

#[test]
fn help_overlay() {
    let mut app = demo_app();
    app.update(key('?'));
    assert_eq!(app.overlay, Overlay::Help);
    insta::assert_snapshot!("tui_help_overlay", screen(&app));
    app.update(key('?'));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn finding_drilled_into() {
    let mut app = demo_app();
    app.update(code(KeyCode::BackTab));
    assert_eq!(app.focus, Pane::Findings);
    app.update(code(KeyCode::Enter));
    assert_eq!(app.overlay, Overlay::Finding { link: 0 });
    // The culprit's thread is selected, so closing the finding leaves it in view.
    assert_eq!(app.selected_pid, Some(demo::PARENT));
    // Walk the chain to the feeder: its merged stack (native + Python) is shown.
    app.update(key('j'));
    app.update(key('j'));
    assert_eq!(
        app.stack_thread(),
        Some(ThreadRef {
            pid: demo::CHILD,
            tid: demo::FEEDER
        })
    );
    let s = screen(&app);
    assert!(s.contains("__GI___libc_write"), "{s}");
    insta::assert_snapshot!("tui_finding_drilled", s);
    app.update(code(KeyCode::Esc));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn j_k_move_the_selection_in_the_focused_pane() {
    let mut app = demo_app();
    assert_eq!(app.focus, Pane::Tree);
    assert_eq!(app.selected_pid, Some(demo::PARENT));
    app.update(key('j'));
    assert_eq!(app.selected_pid, Some(demo::CHILD));
    assert_eq!(app.selected_tid, Some(Tid(demo::CHILD.0)));
    app.update(code(KeyCode::Down)); // clamps at the last row
    assert_eq!(app.selected_pid, Some(demo::CHILD));
    app.update(code(KeyCode::Tab));
    app.update(key('j'));
    assert_eq!(app.selected_tid, Some(demo::FEEDER));
    app.update(key('k'));
    assert_eq!(app.selected_tid, Some(Tid(demo::CHILD.0)));
    app.update(code(KeyCode::BackTab));
    app.update(code(KeyCode::Up));
    assert_eq!(app.selected_pid, Some(demo::PARENT));
}

#[test]
fn tab_cycles_panes() {
    let mut app = demo_app();
    let mut seen = vec![app.focus];
    for _ in 0..3 {
        app.update(code(KeyCode::Tab));
        seen.push(app.focus);
    }
    assert_eq!(
        seen,
        [Pane::Tree, Pane::Threads, Pane::Stack, Pane::Findings]
    );
    app.update(code(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Tree);
    app.update(code(KeyCode::BackTab));
    assert_eq!(app.focus, Pane::Findings);
}

#[test]
fn p_pauses_refreshing() {
    let mut app = demo_app();
    let flag = app.pause_flag();
    app.update(key('p'));
    assert!(app.paused);
    assert!(
        flag.load(Ordering::Relaxed),
        "the sampler is told to stop collecting"
    );
    app.update(Action::Refresh(Box::new(demo::report(600_000))));
    assert_eq!(
        app.history.refreshes, 2,
        "a report arriving while paused is ignored"
    );
    assert!(screen(&app).contains("PAUSED"));
    app.update(key('p'));
    assert!(!app.paused && !flag.load(Ordering::Relaxed));
    app.update(Action::Refresh(Box::new(demo::report(600_000))));
    assert_eq!(app.history.refreshes, 3);
}

fn temp_dir(name: &str) -> crate::util::TempDir {
    crate::util::tempdir(&format!("tui-{name}"))
}

#[test]
fn s_saves_a_loadable_snapshot() {
    let dir = temp_dir("save");
    let mut app = App::new(demo::PARENT, Duration::from_secs(1), dir.to_path_buf());
    app.update(key('s'));
    assert!(app
        .status
        .as_deref()
        .is_some_and(|s| s.contains("nothing to save")));
    app.update(Action::Refresh(Box::new(demo::report(0))));
    app.update(key('s'));
    let path = dir.join("mphang-3694-20251121-060101.json");
    let text = std::fs::read_to_string(&path).expect("saved file");
    let back: Snapshot = serde_json::from_str(&text).expect("a snapshot `report --from` reads");
    assert_eq!(back, demo::snapshot(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mphang"))
        .args(["report", "--color", "never", "--from"])
        .arg(&path)
        .output()
        .expect("run mphang report --from");
    assert_ne!(
        out.status.code(),
        Some(2),
        "`mphang report --from` rejected the saved file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        screen(&app).contains("saved "),
        "the status line names the file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exited_processes_stay_visible_marked_gone() {
    let mut app = demo_app();
    let mut r = demo::report(301_000);
    r.snapshot.processes.retain(|p| p.pid != demo::CHILD);
    r.threads.retain(|v| v.thread.pid != demo::CHILD);
    r.findings.clear();
    r.hang = false;
    r.snapshot.gone.push(GoneProcess {
        pid: demo::CHILD,
        ppid: Some(demo::PARENT),
        cmdline: vec!["python3".into()],
        ended: Some("signal 9 (SIGKILL)".into()),
        ended_at_ms: None,
        last_stack: None,
    });
    app.update(Action::Refresh(Box::new(r)));
    assert_eq!(
        app.history.status(demo::CHILD, app.report.as_ref()),
        Status::Gone
    );
    assert_eq!(app.rows.len(), 2);
    app.update(key('j')); // a gone process can still be selected, its last threads shown
    let s = screen(&app);
    assert!(s.contains("gone: signal 9 (SIGKILL)"), "{s}");
    assert!(s.contains("QueueFeederThread"), "{s}");
}

#[test]
fn cpu_percent_comes_from_tick_deltas() {
    let mut app = App::new(demo::PARENT, Duration::from_secs(1), std::env::temp_dir());
    app.update(Action::Refresh(Box::new(demo::report(0))));
    let mut r = demo::report(2_000);
    r.snapshot.processes[0].cpu_ticks += 50; // 0.5 s of CPU in 2 s = 25 %
    app.update(Action::Refresh(Box::new(r)));
    let cpu = app.history.process(demo::PARENT).and_then(|t| t.cpu_pct);
    assert!(cpu.is_some_and(|c| (c - 25.0).abs() < 0.01), "{cpu:?}");
}

#[test]
fn a_thread_that_moves_restarts_its_blocked_time() {
    let mut app = demo_app();
    let feeder = ThreadRef {
        pid: demo::CHILD,
        tid: demo::FEEDER,
    };
    assert_eq!(app.history.blocked_for_ms(feeder), Some(300_000));
    let mut r = demo::report(301_000);
    if let Some(py) = r.snapshot.processes[1].threads[1].py.as_mut() {
        py.frames[0].line += 1;
    }
    app.update(Action::Refresh(Box::new(r)));
    assert_eq!(app.history.blocked_for_ms(feeder), Some(0));
    assert_eq!(app.history.idle_ms(demo::CHILD), Some(0));
    assert_eq!(app.history.idle_ms(demo::PARENT), Some(301_000));
}

#[test]
fn target_exit_keeps_the_last_state_until_q() {
    let (tx, rx) = mpsc::channel();
    let mut app = demo_app();
    let mut terminal = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
    tx.send(Event::TargetGone("process 3694 has exited".into()))
        .expect("send");
    tx.send(Event::Tick).expect("send");
    drop(tx);
    run(&mut terminal, &rx, &mut app).expect("loop ends when the senders are gone");
    let s = terminal.backend().to_string();
    assert!(
        s.contains("process 3694 has exited; showing the last state"),
        "{s}"
    );
    assert!(
        s.contains("join_before_drain"),
        "the last findings stay: {s}"
    );
    assert!(!app.quit);
}

#[test]
fn the_loop_redraws_on_resize_and_quits_on_ctrl_c() {
    let (tx, rx) = mpsc::channel();
    let mut app = demo_app();
    let mut terminal = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
    tx.send(Event::Key(KeyEvent::new(
        KeyCode::Char('j'),
        KeyModifiers::NONE,
    )))
    .expect("send");
    terminal.backend_mut().resize(100, 30);
    tx.send(Event::Resize(100, 30)).expect("send");
    tx.send(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )))
    .expect("send");
    tx.send(Event::Key(KeyEvent::new(
        KeyCode::Char('k'),
        KeyModifiers::NONE,
    )))
    .expect("send");
    run(&mut terminal, &rx, &mut app).expect("run");
    assert!(app.quit);
    assert_eq!(
        app.selected_pid,
        Some(demo::CHILD),
        "keys after the quit are not handled"
    );
    assert_eq!(terminal.backend().buffer().area.width, 100);
    let s = terminal.backend().to_string();
    assert!(s.contains("Processes"), "{s}");
}

#[test]
fn sampler_sends_reports_then_target_gone() {
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let mut calls = 0;
    let handle = spawn_sampler_thread(
        move || {
            calls += 1;
            if calls <= 2 {
                Ok(demo::snapshot(calls * 1000))
            } else {
                Err(mphang::Error::NoSuchProcess(Pid(3694)))
            }
        },
        tx,
        Arc::clone(&stop),
        paused,
        Duration::from_millis(10),
    );
    let events: Vec<Event> = rx.iter().collect();
    handle.join().expect("sampler thread");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[0], Event::Report(_)));
    assert!(matches!(&events[2], Event::TargetGone(m) if m.contains("3694")));
    let mut app = demo_app();
    for ev in events {
        if let Some(a) = action_for(ev) {
            app.update(a);
        }
    }
    assert!(app.target_gone.is_some());
    assert_eq!(
        app.history.status(demo::PARENT, app.report.as_ref()),
        Status::Gone
    );
}

/// A snapshot recorded with `mphang report <pid> --save` from fixtures/tui_hang.py, analysed by
/// the real analysis: the live view finds the hang, the feeder's wait and the `# CULPRIT` line.
#[test]
fn recorded_snapshot_through_the_real_analysis() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/snapshots/tui_join_before_drain.json"
    );
    let text = std::fs::read_to_string(path).expect("recorded snapshot");
    let snap: Snapshot = serde_json::from_str(&text).expect("valid snapshot");
    let root = snap.root;
    let child = snap.processes[1].pid;
    let mut app = App::new(root, Duration::from_secs(1), std::env::temp_dir());
    let mut later = snap.clone();
    later.taken_at_ms += 65_000;
    app.update(Action::Refresh(Box::new(mphang::render::Report::analyze(
        snap,
    ))));
    app.update(Action::Refresh(Box::new(mphang::render::Report::analyze(
        later,
    ))));
    assert_eq!(app.findings()[0].pattern, "join_before_drain");
    assert_eq!(app.history.status(root, app.report.as_ref()), Status::Stuck);
    app.update(key('j'));
    assert_eq!(app.selected_pid, Some(child));
    let s = screen(&app);
    assert!(s.contains("[pipe write, 1 minute]"), "{s}");
    let line = crate::util::marked_lines("tui_hang", "CULPRIT")[0];
    assert!(
        s.contains(&format!("culprit: tui_hang.py:{line} in main")),
        "{s}"
    );
}

#[test]
fn a_look_without_a_python_stack_is_not_a_move() {
    let mut app = demo_app();
    let feeder = ThreadRef {
        pid: demo::CHILD,
        tid: demo::FEEDER,
    };
    let mut r = demo::report(310_000);
    r.snapshot.processes[1].threads[1].py = None;
    app.update(Action::Refresh(Box::new(r)));
    assert_eq!(app.history.blocked_for_ms(feeder), Some(310_000));
    app.update(Action::Refresh(Box::new(demo::report(320_000))));
    assert_eq!(app.history.blocked_for_ms(feeder), Some(320_000));
}

#[test]
fn a_small_terminal_still_shows_the_finding_and_whole_pids() {
    let app = demo_app();
    let mut terminal = Terminal::new(TestBackend::new(90, 28)).expect("test terminal");
    terminal
        .draw(|f| view::draw(&app, f))
        .expect("draw on the test backend");
    let s = terminal.backend().to_string();
    assert!(s.contains("HANG join_before_drain"), "{s}");
    assert!(s.contains("└ 3736"), "{s}");
}

#[test]
fn the_stack_keeps_the_user_frame_in_sight_and_scrolls() {
    let mut app = demo_app();
    // The parent, 20 library frames deeper: its user frame is far below the pane's height.
    let mut r = demo::report(300_000);
    if let Some(py) = r.snapshot.processes[0].threads[0].py.as_mut() {
        for i in 0..20 {
            py.frames.insert(
                0,
                mphang::model::PyFrame {
                    function: format!("helper_{i}"),
                    file: "/usr/lib/python3.11/site.py".into(),
                    line: i,
                    entry: false,
                },
            );
        }
    }
    app.update(Action::Refresh(Box::new(r)));
    let draw = |app: &App| {
        let mut terminal = Terminal::new(TestBackend::new(100, 24)).expect("test terminal");
        terminal
            .draw(|f| view::draw(app, f))
            .expect("draw on the test backend");
        terminal.backend().to_string()
    };
    let s = draw(&app);
    assert!(s.contains("▶ main (join_before_drain.py:31)"), "{s}");
    assert!(!s.contains("helper_19 "), "{s}");
    app.update(code(KeyCode::Tab));
    app.update(code(KeyCode::Tab));
    assert_eq!(app.focus, Pane::Stack);
    for _ in 0..30 {
        app.update(key('k'));
    }
    let s = draw(&app);
    assert!(s.contains("helper_19 "), "the innermost frame: {s}");
    app.update(code(KeyCode::BackTab));
    app.update(code(KeyCode::BackTab));
    app.update(key('j')); // another process, another stack: the scroll starts over
    assert_eq!(app.stack_scroll, 0);
}

#[test]
fn a_failed_refresh_is_reported_until_the_next_good_one() {
    let mut app = demo_app();
    app.update(Action::CollectFailed(
        "permission denied reading process 3736".into(),
    ));
    assert!(screen(&app).contains("refresh failed: permission denied"));
    app.update(Action::Refresh(Box::new(demo::report(301_000))));
    assert_eq!(app.status, None);
    assert!(!app.quit, "a failed refresh never ends the view");
}

#[test]
fn native_frames_of_an_earlier_look_stay_while_the_thread_stays() {
    let mut app = App::new(demo::PARENT, Duration::from_secs(1), std::env::temp_dir());
    app.update(Action::Refresh(Box::new(demo::report(0))));
    // A look without native stacks (attach reads them every few looks only).
    let without_native = |later| {
        let mut r = demo::report(later);
        for p in &mut r.snapshot.processes {
            for t in &mut p.threads {
                t.native = None;
            }
        }
        r
    };
    app.update(Action::Refresh(Box::new(without_native(1_000))));
    app.update(key('j'));
    app.update(code(KeyCode::Tab));
    app.update(key('j'));
    assert_eq!(app.selected_tid, Some(demo::FEEDER));
    let s = screen(&app);
    assert!(
        s.contains("native frames of look #1, unchanged since"),
        "{s}"
    );
    assert!(s.contains("__GI___libc_write"), "{s}");
    // Once the thread moves, the old native stack no longer applies.
    let mut moved = without_native(2_000);
    if let Some(py) = moved.snapshot.processes[1].threads[1].py.as_mut() {
        py.frames[0].line += 1;
    }
    app.update(Action::Refresh(Box::new(moved)));
    let s = screen(&app);
    assert!(!s.contains("__GI___libc_write"), "{s}");
}
