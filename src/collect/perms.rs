//! Permission checks: which right is missing to read a process, and the remedy; the checks on
//! a root before anything is read.

use super::procfs;
use crate::error::{Error, Result};
use crate::model::Pid;

/// Yama's ptrace_scope, when the kernel has Yama.
pub fn ptrace_scope() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether mphang itself holds CAP_SYS_PTRACE (bit 19 of CapEff).
pub fn has_cap_sys_ptrace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 19) != 0)
}

/// Explains why reading `pid` was refused, naming the missing right.
pub fn explain(target_uid: Option<u32>) -> String {
    let me = nix::unistd::geteuid().as_raw();
    let cap = has_cap_sys_ptrace();
    match (ptrace_scope(), target_uid) {
        (Some(3), _) => "ptrace is disabled on this machine until reboot (yama ptrace_scope=3)".into(),
        (_, Some(u)) if u != me && !cap => format!(
            "the process belongs to uid {u} and mphang runs as uid {me} without CAP_SYS_PTRACE"
        ),
        (Some(2), _) if !cap => "yama ptrace_scope=2 allows ptrace only with CAP_SYS_PTRACE".into(),
        (Some(1), _) if !cap => {
            "yama ptrace_scope=1 allows ptrace only of your own descendants without CAP_SYS_PTRACE"
                .into()
        }
        _ => "the kernel refused ptrace-level access (a container without CAP_SYS_PTRACE or a seccomp profile?)".into(),
    }
}

/// The remedy for a permission failure on this machine.
pub fn remedy() -> String {
    match ptrace_scope() {
        Some(1) | Some(2) => "run mphang with sudo, or `echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`; in Docker add --cap-add SYS_PTRACE (docs/permissions.md)".into(),
        _ => "run mphang as the target's user or with sudo; in Docker add --cap-add SYS_PTRACE, in Kubernetes the SYS_PTRACE capability (docs/permissions.md)".into(),
    }
}

/// Checks that `root` is a user process mphang may read; the errors of `report <pid>`.
pub fn check_root(root: Pid) -> Result<()> {
    if root.0 <= 0 {
        return Err(Error::NotAUserProcess(root));
    }
    let stat = match std::fs::read_to_string(format!("/proc/{}/stat", root.0)) {
        Ok(s) => s,
        Err(_) => return Err(Error::NoSuchProcess(root)),
    };
    let st = procfs::parse_stat(&stat).ok_or(Error::NoSuchProcess(root))?;
    if st.flags & procfs::PF_KTHREAD != 0 || root.0 == 2 || st.ppid == 2 {
        return Err(Error::NotAUserProcess(root));
    }
    if st.state == 'Z' {
        return Err(Error::NoSuchProcess(root));
    }
    match std::fs::read_to_string(format!("/proc/{}/syscall", root.0)) {
        Ok(_) => Ok(()),
        // ptrace-level access refused but /proc's read-level files open (e.g. Yama
        // ptrace_scope=1, same uid): go on with what /proc allows; each process records why.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
                && std::fs::read_dir(format!("/proc/{}/fd", root.0)).is_ok() =>
        {
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let uid = std::fs::read_to_string(format!("/proc/{}/status", root.0))
                .ok()
                .and_then(|s| procfs::parse_status(&s).uid);
            Err(Error::PermissionDenied {
                pid: root,
                why: explain(uid),
            })
        }
        Err(_) => Err(Error::NoSuchProcess(root)),
    }
}
