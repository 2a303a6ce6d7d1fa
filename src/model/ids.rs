//! Typed identifiers: process ids, thread ids, inodes and semaphore keys, never bare integers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A process id as seen from mphang's own PID namespace.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Pid(pub i32);

/// A kernel thread id (the `task/TID` directory name), in mphang's PID namespace.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Tid(pub i32);

/// An inode number of a pipe or socket: the join key between the two ends of an IPC channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Inode(pub u64);

/// Identity of a POSIX semaphore file in `/dev/shm`: `major:minor:inode` of its mapping.
/// Matched across processes by this key, never by name or address (a creator sees the glibc
/// temp name `sem.XXXXXX (deleted)`, spawn children `sem.mp-…`, at different addresses).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct SemKey(pub String);

/// One thread of one process; the node type of the wait-for graph.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ThreadRef {
    pub pid: Pid,
    pub tid: Tid,
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for SemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
