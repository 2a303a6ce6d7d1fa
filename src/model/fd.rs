//! Open file descriptors, pipes and unix sockets: the edges between processes.

use super::ids::Inode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Which way an fd was opened (from the permission bits of the `/proc/PID/fd/N` link,
/// equal to `fdinfo` `flags & 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FdEntry {
    pub fd: i32,
    pub access: Access,
    pub kind: FdKind,
}

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
        /// For a listener: the client sockets whose connections wait in its accept queue
        /// (UNIX_DIAG_ICONS). Such a client has no peer yet; whoever accepts here serves it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pending: Vec<Inode>,
    },
    /// Any other `socket:[INODE]` (inet, netlink). `tcp`: the connection when it is a TCP
    /// socket (from `inet_diag`), whose peer may be in the tree, on another host, or gone.
    Socket {
        inode: Inode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tcp: Option<TcpEndpoint>,
    },
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
            FdKind::UnixSocket { inode, .. } | FdKind::Socket { inode, .. } => Some(inode),
            _ => None,
        }
    }
}

/// A TCP socket as `inet_diag` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TcpEndpoint {
    pub state: TcpState,
    /// Local address and port (IPv4-mapped IPv6 written as IPv4). None for a socket the kernel
    /// no longer lists: closed by a reset, or never connected.
    pub local: Option<SocketAddr>,
    /// The peer's address and port; None for listeners and closed sockets.
    pub remote: Option<SocketAddr>,
    /// Bytes received and not yet read (a listener: connections waiting for `accept`).
    pub rqueue: u32,
    /// Bytes sent and not yet acknowledged (a listener: its backlog).
    pub wqueue: u32,
    /// `tcp_info`: bytes of this side's stream the peer has acknowledged, and bytes received
    /// from the peer, since the connection began. With the peer's counters they tell whether
    /// anything crossed between two hosts' reports (`analysis::tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_acked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    /// `tcp_info`: milliseconds since data was last received on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recv_ms: Option<u32>,
}

/// TCP states (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    /// Closed: after a reset, or not (yet) connected.
    Close,
    /// The peer closed its side (FIN received); this side has not closed yet.
    CloseWait,
    LastAck,
    Listen,
    Closing,
    /// A state this mphang does not know.
    #[serde(other)]
    Other,
}

impl TcpState {
    /// From the kernel's state number.
    pub fn from_kernel(n: u8) -> TcpState {
        match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => TcpState::Other,
        }
    }
    /// The name `ss` prints (`ESTAB`, `CLOSE-WAIT`).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "ESTAB",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynRecv => "SYN-RECV",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::TimeWait => "TIME-WAIT",
            TcpState::Close => "CLOSED",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::LastAck => "LAST-ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::Other => "?",
        }
    }
    /// The peer has closed or reset the connection: nothing more will ever arrive.
    pub fn peer_gone(self) -> bool {
        matches!(
            self,
            TcpState::CloseWait | TcpState::Close | TcpState::LastAck | TcpState::TimeWait
        )
    }
}

impl FdEntry {
    /// The TCP connection, when this fd is a TCP socket.
    pub fn tcp(&self) -> Option<&TcpEndpoint> {
        match &self.kind {
            FdKind::Socket { tcp, .. } => tcp.as_ref(),
            _ => None,
        }
    }
}

/// One pipe, queried once however many fds refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PipeSnap {
    pub inode: Inode,
    /// Bytes buffered (FIONREAD on the target's own fd duplicated with `pidfd_getfd`, else on
    /// a write-only reopen; adds no reader and consumes nothing).
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutsideHolder {
    pub pid: super::ids::Pid,
    pub comm: String,
    pub fd: i32,
    pub access: Access,
}
