//! Open fds (`/proc/PID/fd`) and pipe fill levels: the edges between processes.

use crate::model::{Access, FdEntry, FdKind, Inode, PipeSnap};
use nix::fcntl::AtFlags;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The fd tables read so far in one collection, by pid, each with the boot-time clock tick at
/// which its reading began: a forked child's inherited fds are taken from its parent's table
/// ([`read_fds_from`]).
#[derive(Default)]
pub struct Tables(Mutex<HashMap<i32, Table>>);

/// One process's fds and the boot-time tick at which their reading began.
type Table = (u64, Arc<Vec<FdEntry>>);

impl Tables {
    /// The table of `pid` and when its reading began, if read.
    pub fn get(&self, pid: i32) -> Option<Table> {
        self.0.lock().ok()?.get(&pid).cloned()
    }

    pub fn put(&self, pid: i32, read_at: u64, fds: Arc<Vec<FdEntry>>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(pid, (read_at, fds));
        }
    }
}

/// Now, in clock ticks since boot (`CLOCK_BOOTTIME`, the clock of `/proc/PID/stat`'s start
/// time).
pub fn boot_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let tck = super::process::clock_ticks();
    (ts.tv_sec.max(0) as u64) * tck + (ts.tv_nsec.max(0) as u64) * tck / 1_000_000_000
}

/// Whether `kcmp` answered so far (it needs CONFIG_CHECKPOINT_RESTORE and ptrace access).
static KCMP: AtomicBool = AtomicBool::new(true);

/// True when fd `fd` of `a` and fd `fd` of `b` are the same open file (`kcmp(KCMP_FILE)`: one
/// system call, no path walk); false when they differ or the kernel cannot tell.
fn same_file(a: i32, b: i32, fd: i32) -> bool {
    if !KCMP.load(Ordering::Relaxed) {
        return false;
    }
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes two pids, a type and two fd numbers, and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILE, fd, fd) };
    if r < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        if matches!(e, Some(libc::ENOSYS | libc::EPERM | libc::EACCES)) {
            KCMP.store(false, Ordering::Relaxed);
        }
        return false;
    }
    r == 0
}

/// Lists the fds of `pid`. Sockets come back as `FdKind::Socket`; unix ones are upgraded later
/// from the sock_diag dump.
pub fn read_fds(pid: i32) -> std::io::Result<Vec<FdEntry>> {
    read_fds_from(pid, None)
}

/// [`read_fds`], taking each fd that is the very open file its parent `base` holds under the
/// same number (`kcmp`) from the parent's table instead of reading its link and mode: a forked
/// child holds its parent's pipes, 67,000 fds in a 256-process fork tree. The caller passes a
/// parent's table only if it began reading it after this process was forked: the entry then
/// describes the file both hold (a parent that since closed that number and opened another
/// file there no longer shares it with the child).
pub fn read_fds_from(pid: i32, base: Option<(i32, &[FdEntry])>) -> std::io::Result<Vec<FdEntry>> {
    let dir = format!("/proc/{pid}/fd");
    // Each link is looked up relative to the open directory: a path from the root would walk
    // /proc/PID again (and check ptrace access) twice per fd, the larger part of the cost in
    // a tree whose forked children inherit hundreds of fds.
    let handle = std::fs::File::open(&dir)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(fd) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((bpid, bfds)) = base {
            if let Ok(i) = bfds.binary_search_by_key(&fd, |f| f.fd) {
                if same_file(pid, bpid, fd) {
                    out.push(bfds[i].clone());
                    continue;
                }
            }
        }
        // The link's own permission bits give the access mode (0500 read, 0300 write, 0700 both),
        // several times cheaper than parsing fdinfo.
        let access = match nix::sys::stat::fstatat(
            &handle,
            name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(m) => match (m.st_mode & 0o400 != 0, m.st_mode & 0o200 != 0) {
                (true, true) => Access::ReadWrite,
                (true, false) => Access::Read,
                (false, true) => Access::Write,
                _ => Access::Unknown,
            },
            Err(_) => Access::Unknown,
        };
        let kind = match nix::fcntl::readlinkat(&handle, name.as_os_str()) {
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
        return FdKind::Socket {
            inode: Inode(ino),
            tcp: None,
        };
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

/// Queries one pipe's fill (FIONREAD) and capacity (F_GETPIPE_SZ) through fd `fd` of `pid`,
/// which holds one end of it (callers prefer a write end), without ever adding a reader (field guide §5.1):
///
/// 1. `pidfd_getfd` duplicates the target's own open file: no new open, so the pipe's reader and writer counts do not change at all;
/// 2. when that is refused (no ptrace-level access, a kernel before 5.6, or
///    `MPHANG_PIPE_MEASURE=reopen`), `/proc/PID/fd/N` is reopened `O_WRONLY|O_NONBLOCK`: one
///    extra *writer* for the microseconds it is open, never an extra reader, so a writer whose
///    readers are gone still gets EPIPE (a reader whose writers are all gone sees EOF that
///    much later).
///
/// The descriptor is closed at once and nothing is read or written. docs/permissions.md states
/// the residual effect of each way.
pub fn query_pipe(pid: i32, fd: i32, inode: Inode) -> PipeSnap {
    let reopen_only = std::env::var("MPHANG_PIPE_MEASURE").is_ok_and(|v| v == "reopen");
    let file = if reopen_only {
        None
    } else {
        dup_from(pid, fd, inode)
    }
    .or_else(|| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.ino() == inode.0))
    });
    let (buffered, capacity) = match file {
        Some(file) => {
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
        None => (None, None),
    };
    PipeSnap {
        inode,
        buffered,
        capacity,
        later_buffered: Vec::new(),
        outside: None,
    }
}

/// `pidfd_getfd(pidfd_open(pid), fd)`: a duplicate of the target's open file (no new open, so
/// no pipe reader or writer is added), if it is still pipe `inode`.
fn dup_from(pid: i32, fd: i32, inode: Inode) -> Option<std::fs::File> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = i32::try_from(pidfd).ok().filter(|&f| f >= 0)?;
    // SAFETY: `pidfd` is a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd takes a pidfd, a target fd number and flags (0); returns a new
    // descriptor or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let dup = i32::try_from(dup).ok().filter(|&f| f >= 0)?;
    // SAFETY: `dup` is a fresh descriptor that nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(dup) });
    // The target may have closed and reused fd N since its link was read.
    file.metadata()
        .is_ok_and(|m| m.ino() == inode.0)
        .then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_fds_are_taken_from_the_base_only_when_the_same_file() {
        let me = std::process::id() as i32;
        // A pipe without CLOEXEC: a spawned child holds both ends under the same numbers.
        let (mut r, w) = nix::unistd::pipe().expect("pipe");
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let kid = child.id() as i32;
        let mut base = read_fds(me).expect("own fds");
        let at = |fds: &[FdEntry], fd: i32| fds.iter().position(|f| f.fd == fd).expect("listed");
        // Marked entries show which were taken from the base.
        let (ri, wi) = (at(&base, rfd), at(&base, wfd));
        base[ri].access = Access::Unknown;
        base[wi].access = Access::Unknown;
        let got = read_fds_from(kid, Some((me, &base))).expect("child fds");
        let kcmp = got[at(&got, rfd)].access == Access::Unknown;
        if kcmp {
            assert_eq!(
                got[at(&got, wfd)].access,
                Access::Unknown,
                "same file: taken"
            );
            // The parent now holds the write end under the read end's number: no longer the
            // child's file, so the child's link is read, not the stale base entry.
            nix::unistd::dup2(&w, &mut r).expect("dup2");
            let got = read_fds_from(kid, Some((me, &base))).expect("child fds");
            assert_eq!(
                got[at(&got, rfd)].access,
                Access::Read,
                "another file: read"
            );
        } else {
            eprintln!("kcmp unavailable here: the base is never used");
        }
        let _ = child.kill();
        let _ = child.wait();
        drop((r, w));
    }

    #[test]
    fn classify_targets() {
        assert_eq!(classify("pipe:[6692]"), FdKind::Pipe { inode: Inode(6692) });
        assert_eq!(
            classify("socket:[77]"),
            FdKind::Socket {
                inode: Inode(77),
                tcp: None
            }
        );
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
