//! Processes stopped by a signal (state T) or held by a tracer (state t): a note saying so and,
//! when the kernel knows, by whom, so that the report does not call them "ok".

use crate::model::{DiagKind, Diagnostic, Pid, Stage};

/// A process stopped by a signal (state T) or held by a tracer (state t): who, when the kernel
/// says (`TracerPid`; the sender of a stop signal is not recorded anywhere).
pub fn note(pid: i32, state: char, status: &str) -> Option<Diagnostic> {
    if state != 'T' && state != 't' {
        return None;
    }
    let tracer: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let message = if tracer != 0 {
        let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap_or_default();
        format!(
            "process {pid} is stopped (state {state}) and traced by pid {tracer} ({}); it runs \
             again when its tracer lets it go or it gets SIGCONT",
            crate::model::safe::escape_control(comm.trim())
        )
    } else {
        format!(
            "process {pid} is stopped (state {state}) by a stop signal (SIGSTOP, SIGTSTP, SIGTTIN \
             or SIGTTOU; the kernel does not record who sent it); it will not run until it gets \
             SIGCONT"
        )
    };
    Some(Diagnostic {
        pid: Some(Pid(pid)),
        tid: None,
        stage: Stage::Process,
        kind: DiagKind::Failed,
        message,
    })
}
