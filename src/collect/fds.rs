//! Open fds (`/proc/PID/fd`) and pipe fill levels: the edges between processes.

use crate::model::{Access, FdEntry, FdKind, Inode, PipeSnap};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// Lists the fds of `pid`. Sockets come back as `FdKind::Socket`; unix ones are upgraded later
/// from the sock_diag dump.
pub fn read_fds(pid: i32) -> std::io::Result<Vec<FdEntry>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        // The link's own permission bits give the access mode (0500 read, 0300 write, 0700 both),
        // several times cheaper than parsing fdinfo.
        let access = match std::fs::symlink_metadata(&path) {
            Ok(m) => match (m.mode() & 0o400 != 0, m.mode() & 0o200 != 0) {
                (true, true) => Access::ReadWrite,
                (true, false) => Access::Read,
                (false, true) => Access::Write,
                _ => Access::Unknown,
            },
            Err(_) => Access::Unknown,
        };
        let kind = match std::fs::read_link(&path) {
            Ok(target) => classify(&target.to_string_lossy()),
            Err(_) => continue, // closed meanwhile
        };
        out.push(FdEntry { fd, access, kind });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// Turns a `/proc/PID/fd/N` link target into an [`FdKind`].
pub fn classify(target: &str) -> FdKind {
    let bracket = |prefix: &str| -> Option<u64> {
        target
            .strip_prefix(prefix)?
            .strip_prefix('[')?
            .strip_suffix(']')?
            .parse()
            .ok()
    };
    if let Some(ino) = bracket("pipe:") {
        return FdKind::Pipe { inode: Inode(ino) };
    }
    if let Some(ino) = bracket("socket:") {
        return FdKind::Socket { inode: Inode(ino) };
    }
    if let Some(name) = target.strip_prefix("anon_inode:") {
        return match name {
            "[eventfd]" => FdKind::EventFd,
            "[eventpoll]" => FdKind::Epoll,
            other => FdKind::AnonInode {
                name: other.trim_matches(|c| c == '[' || c == ']').to_string(),
            },
        };
    }
    if target.starts_with("/dev/pts/") || target.starts_with("/dev/tty") {
        return FdKind::Tty {
            path: target.to_string(),
        };
    }
    if target.starts_with('/') {
        return FdKind::File {
            path: target.to_string(),
        };
    }
    FdKind::Unknown {
        target: Some(target.to_string()),
    }
}

/// Queries one pipe through `/proc/PID/fd/N`: FIONREAD and F_GETPIPE_SZ on a fresh
/// O_RDONLY|O_NONBLOCK open, closed at once. Consumes nothing; the extra reader exists only for
/// the microseconds the fd is open (see field guide §5.1).
pub fn query_pipe(pid: i32, fd: i32, inode: Inode) -> PipeSnap {
    let (buffered, capacity) = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
    {
        Ok(file) => {
            let raw = file.as_raw_fd();
            let mut n: libc::c_int = 0;
            // SAFETY: `raw` is an open fd owned by `file` for this whole block, and FIONREAD
            // writes one c_int to the valid pointer we pass.
            let r = unsafe { libc::ioctl(raw, libc::FIONREAD, &mut n as *mut libc::c_int) };
            let buffered = (r == 0).then_some(n.max(0) as u32);
            // SAFETY: F_GETPIPE_SZ takes no argument and only reads the fd's pipe.
            let c = unsafe { libc::fcntl(raw, libc::F_GETPIPE_SZ) };
            (buffered, (c > 0).then_some(c as u32))
        }
        Err(_) => (None, None),
    };
    PipeSnap {
        inode,
        buffered,
        capacity,
        later_buffered: Vec::new(),
        outside: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn classify_targets() {
        assert_eq!(classify("pipe:[6692]"), FdKind::Pipe { inode: Inode(6692) });
        assert_eq!(classify("socket:[77]"), FdKind::Socket { inode: Inode(77) });
        assert_eq!(classify("anon_inode:[eventfd]"), FdKind::EventFd);
        assert_eq!(
            classify("anon_inode:inotify"),
            FdKind::AnonInode {
                name: "inotify".into()
            }
        );
        assert!(matches!(classify("/dev/pts/3"), FdKind::Tty { .. }));
        assert!(matches!(classify("/tmp/x (deleted)"), FdKind::File { .. }));
    }
}
