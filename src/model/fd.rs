//! Open file descriptors, pipes and unix sockets: the edges between processes.

use super::ids::Inode;
use serde::{Deserialize, Serialize};

/// Which way an fd was opened (from the permission bits of the `/proc/PID/fd/N` link,
/// equal to `fdinfo` `flags & 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Unknown,
}

impl Access {
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One open fd of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdEntry {
    pub fd: i32,
    pub access: Access,
    pub kind: FdKind,
}

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FdKind {
    /// `pipe:[INODE]`; buffered bytes live in `Snapshot::pipes`.
    Pipe { inode: Inode },
    /// `socket:[INODE]` of family AF_UNIX (found in the sock_diag dump).
    UnixSocket {
        inode: Inode,
        /// The other end's inode (UNIX_DIAG_PEER); None for listeners and unconnected sockets.
        peer: Option<Inode>,
        /// Bound path (abstract names start with `@`).
        path: Option<String>,
        listening: bool,
        /// Unread bytes in this socket's receive queue (or pending connections when listening).
        rqueue: Option<u32>,
    },
    /// Any other `socket:[INODE]` (inet, netlink): its peer is outside mphang's view.
    Socket { inode: Inode },
    /// A regular file, device or directory path.
    File { path: String },
    /// A terminal (`/dev/pts/N`, `/dev/ttyN`).
    Tty { path: String },
    /// `anon_inode:[eventfd]`.
    EventFd,
    /// `anon_inode:[eventpoll]`.
    Epoll,
    /// Another `anon_inode:` kind (signalfd, timerfd, pidfd...).
    AnonInode { name: String },
    /// The link could not be read or parsed; the raw text when there is one.
    Unknown { target: Option<String> },
}

impl FdEntry {
    /// The pipe inode, when this fd is a pipe.
    pub fn pipe_inode(&self) -> Option<Inode> {
        match self.kind {
            FdKind::Pipe { inode } => Some(inode),
            _ => None,
        }
    }
    /// The socket inode (unix or other), when this fd is a socket.
    pub fn socket_inode(&self) -> Option<Inode> {
        match self.kind {
            FdKind::UnixSocket { inode, .. } | FdKind::Socket { inode } => Some(inode),
            _ => None,
        }
    }
}

/// One pipe, queried once however many fds refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeSnap {
    pub inode: Inode,
    /// Bytes buffered (FIONREAD on a reopened O_RDONLY|O_NONBLOCK fd; consumes nothing).
    pub buffered: Option<u32>,
    /// Capacity (F_GETPIPE_SZ), normally 65536. "Full" is counted in page slots, so a
    /// writer can block with `buffered` below this.
    pub capacity: Option<u32>,
    /// `buffered` at each later look, in order (progress evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later_buffered: Vec<Option<u32>>,
    /// Holders outside the reported tree, looked up machine-wide (once, only for a pipe a thread
    /// waits on whose other end no process of the tree holds). `Some(empty)`: looked up, found
    /// nobody (gone meanwhile, or not readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<Vec<OutsideHolder>>,
}

/// A process outside the reported tree that holds an fd on a pipe or socket of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutsideHolder {
    pub pid: super::ids::Pid,
    pub comm: String,
    pub fd: i32,
    pub access: Access,
}
