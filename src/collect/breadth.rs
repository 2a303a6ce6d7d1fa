//! Is a tree too broad to stop threads in without asking? `report 1`, or a root whose tree
//! holds other users' processes or system daemons, would stop threads all over the machine;
//! `cmd` asks on a terminal or wants `--yes` (docs/permissions.md).

use super::procfs;

/// Daemons whose presence in a tree means it is not one program's tree.
const SYSTEM_DAEMONS: [&str; 14] = [
    "systemd",
    "init",
    "sshd",
    "cron",
    "crond",
    "dbus-daemon",
    "dbus-broker",
    "containerd",
    "dockerd",
    "systemd-journal",
    "systemd-udevd",
    "NetworkManager",
    "polkitd",
    "rsyslogd",
];

/// What a walk of the tree found, for the question or the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breadth {
    /// Why the tree is broad, one clause.
    pub why: String,
    pub processes: usize,
    pub threads: usize,
}

fn uid_and_comm(pid: i32) -> Option<(u32, String, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = procfs::parse_status(&status).uid?;
    let stat = procfs::read_stat(pid)?;
    Some((uid, stat.comm, stat.num_threads))
}

/// `Some` when the tree of `roots` is broad: `roots[0]` is pid 1, or the tree holds processes
/// of more than one user, or a known system daemon.
pub fn check(roots: &[i32]) -> Option<Breadth> {
    let pids = super::tree::walk(roots);
    let mut uids: Vec<(u32, i32, String)> = Vec::new();
    let mut daemon: Option<(i32, String)> = None;
    let mut threads = 0usize;
    for &pid in &pids {
        let Some((uid, comm, n)) = uid_and_comm(pid) else {
            continue;
        };
        threads += n as usize;
        if !uids.iter().any(|(u, _, _)| *u == uid) {
            uids.push((uid, pid, comm.clone()));
        }
        if daemon.is_none() && SYSTEM_DAEMONS.contains(&comm.as_str()) {
            daemon = Some((pid, comm));
        }
    }
    let root = *roots.first()?;
    let why = if root == 1 {
        format!(
            "pid 1 is the init process of this PID namespace, and its tree is every process ({} processes)",
            pids.len()
        )
    } else if uids.len() > 1 {
        let list: Vec<String> = uids
            .iter()
            .map(|(u, p, c)| format!("uid {u} ({p} {})", crate::model::safe::escape_control(c)))
            .collect();
        format!(
            "the tree of {root} holds processes of {} users: {}",
            uids.len(),
            list.join(", ")
        )
    } else if let Some((p, c)) = daemon {
        format!(
            "the tree of {root} holds the system daemon {p} ({})",
            crate::model::safe::escape_control(&c)
        )
    } else {
        return None;
    };
    Some(Breadth {
        why,
        processes: pids.len(),
        threads,
    })
}
