//! Exit statuses through pidfds (Linux 6.15+, no privilege needed): a pidfd held on a process
//! while it ends answers `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` and its wait status, even when
//! its own parent (not mphang) reaped it. Used when the proc connector is not available.

use super::tree::RawStatus;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `PIDFD_INFO_EXIT` request/answer bit.
const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// Size of `struct pidfd_info` version 0 (its `exit_code` is the last field, at offset 60).
const INFO_SIZE: usize = 64;
/// `_IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((INFO_SIZE as libc::c_ulong) << 16) | (0xFF << 8) | 11;

/// `struct pidfd_info` v0, laid out as the kernel's.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// Opens a pidfd on `pid`; `None` when the process is gone or pidfds are not supported.
pub fn open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The wait status of the process behind `fd`, once it ended and was reaped.
pub fn exit_status(fd: &OwnedFd) -> Option<RawStatus> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a valid, writable `struct pidfd_info` of the size encoded in the request.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    (rc == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(RawStatus(info.exit_code))
}

/// Whether this kernel reports exit statuses through pidfds: `PIDFD_GET_INFO` works on
/// mphang's own pidfd and the kernel is 6.15 or later (older ones accept the ioctl but never set
/// the exit bit).
pub fn supported() -> bool {
    let Some(fd) = open(std::process::id() as i32) else {
        return false;
    };
    let mut info = PidfdInfo::default();
    // SAFETY: as in `exit_status`.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    rc == 0 && kernel_at_least(6, 15)
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<super::PidfdInfo>(), super::INFO_SIZE);
        assert_eq!(super::PIDFD_GET_INFO, 0xC040_FF0B);
    }
}
