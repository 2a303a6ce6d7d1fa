//! Typed identifiers: process ids, thread ids, inodes and semaphore keys, never bare integers.
//!
//! Ids are unique on one host only. When snapshots of several hosts are merged
//! (`mphang merge`), every id is *host-qualified*: the host's code (1..=[`MAX_HOSTS`], see
//! [`super::host`]) goes into the bits above the local value, so that ids of different hosts
//! never compare equal while every equality within one host is kept (pid == main thread's tid,
//! a mutex owner's TID, a pipe's two ends). A qualified id prints and serializes as
//! `"label/local"` (`"node-b/4242"`); an unqualified one stays a plain number.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bits of a pid or tid below the host code: the kernel's `PID_MAX_LIMIT` is 2^22.
pub const LOCAL_ID_BITS: u32 = 22;
/// Bits of a pipe or socket inode below the host code (pipefs and sockfs inodes are 32-bit).
pub const LOCAL_INODE_BITS: u32 = 40;
/// The most hosts one merge can hold: the host codes that fit in an `i32` id above 22 bits.
pub const MAX_HOSTS: u16 = (1 << (31 - LOCAL_ID_BITS)) - 1;

const ID_MASK: i32 = (1 << LOCAL_ID_BITS) - 1;
const INODE_MASK: u64 = (1 << LOCAL_INODE_BITS) - 1;

/// A process id as seen from mphang's own PID namespace (host-qualified in a merged snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub i32);

/// A kernel thread id (the `task/TID` directory name), in mphang's PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(pub i32);

/// An inode number of a pipe or socket: the join key between the two ends of an IPC channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// `id` (a pid or tid of one host) qualified with host `code`; 0 and negative values (meaning
/// "none" in futex words and owner fields) are kept as they are.
pub fn qualify_id(code: u16, id: i32) -> i32 {
    if id <= 0 || code == 0 {
        id
    } else {
        (i32::from(code) << LOCAL_ID_BITS) | (id & ID_MASK)
    }
}

/// The host code of a (possibly) qualified pid or tid; 0 when unqualified.
pub fn id_host(id: i32) -> u16 {
    if id <= 0 {
        0
    } else {
        (id >> LOCAL_ID_BITS) as u16
    }
}

/// The host-local value of a (possibly) qualified pid or tid.
pub fn id_local(id: i32) -> i32 {
    if id <= 0 {
        id
    } else {
        id & ID_MASK
    }
}

impl Pid {
    /// The pid with host `code` (see [`super::host::code`]).
    pub fn qualified(self, code: u16) -> Pid {
        Pid(qualify_id(code, self.0))
    }
    /// The host code (0 = not qualified: the host of a one-host snapshot).
    pub fn host(self) -> u16 {
        id_host(self.0)
    }
    /// The pid on its own host.
    pub fn local(self) -> i32 {
        id_local(self.0)
    }
}

impl Tid {
    pub fn qualified(self, code: u16) -> Tid {
        Tid(qualify_id(code, self.0))
    }
    pub fn host(self) -> u16 {
        id_host(self.0)
    }
    pub fn local(self) -> i32 {
        id_local(self.0)
    }
}

impl Inode {
    pub fn qualified(self, code: u16) -> Inode {
        if code == 0 || self.0 == 0 {
            self
        } else {
            Inode((u64::from(code) << LOCAL_INODE_BITS) | (self.0 & INODE_MASK))
        }
    }
    pub fn host(self) -> u16 {
        (self.0 >> LOCAL_INODE_BITS) as u16
    }
    pub fn local(self) -> u64 {
        self.0 & INODE_MASK
    }
}

impl SemKey {
    /// The key prefixed with host `label` (semaphores of different hosts never match).
    pub fn qualified(&self, label: &str) -> SemKey {
        SemKey(format!("{label}/{}", self.0))
    }
}

/// `label/local` for a qualified id, the bare number otherwise.
fn fmt_id(f: &mut fmt::Formatter<'_>, code: u16, local: impl fmt::Display) -> fmt::Result {
    if code == 0 {
        write!(f, "{local}")
    } else {
        write!(f, "{}/{local}", super::host::label(code))
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_id(f, self.host(), self.local())
    }
}
/// A thread id prints its local number only: it is always shown after its pid
/// (`node-b/4242/4243`).
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.local())
    }
}
impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_id(f, self.host(), self.local())
    }
}
impl fmt::Display for SemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Serializes a qualified id as `"label/local"`, an unqualified one as a number.
fn ser_id<S: Serializer, N: Serialize + fmt::Display>(
    s: S,
    code: u16,
    raw: N,
    local: N,
) -> Result<S::Ok, S::Error> {
    if code == 0 {
        raw.serialize(s)
    } else {
        s.collect_str(&format_args!("{}/{local}", super::host::label(code)))
    }
}

impl Serialize for Pid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_id(s, self.host(), self.0, self.local())
    }
}
impl Serialize for Tid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_id(s, self.host(), self.0, self.local())
    }
}
impl Serialize for Inode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_id(s, self.host(), self.0, self.local())
    }
}

/// Reads a number, or `"label/number"` for a host-qualified id, as (host code, local value).
struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = (u16, i64);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or \"host/number\"")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(|n| (0, n))
            .map_err(|_| E::custom("id out of range"))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok((0, v))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let (label, local) = s
            .rsplit_once('/')
            .ok_or_else(|| E::custom(format!("id {s:?} is neither a number nor host/number")))?;
        let local: i64 = local
            .parse()
            .map_err(|_| E::custom(format!("id {s:?}: {local:?} is not a number")))?;
        let code = super::host::code(label).ok_or_else(|| {
            E::custom(format!("more than {MAX_HOSTS} host labels in one process"))
        })?;
        Ok((code, local))
    }
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let (code, local) = d.deserialize_any(IdVisitor)?;
    let local = i32::try_from(local).map_err(|_| serde::de::Error::custom("id out of range"))?;
    Ok(qualify_id(code, local))
}

impl<'de> Deserialize<'de> for Pid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_id(d).map(Pid)
    }
}
impl<'de> Deserialize<'de> for Tid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_id(d).map(Tid)
    }
}
impl<'de> Deserialize<'de> for Inode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (code, local) = d.deserialize_any(IdVisitor)?;
        let local =
            u64::try_from(local).map_err(|_| serde::de::Error::custom("inode out of range"))?;
        Ok(Inode(local).qualified(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualification_keeps_equalities_within_a_host_and_none_across() {
        let a = super::super::host::code("ids-test-a").expect("code");
        let b = super::super::host::code("ids-test-b").expect("code");
        assert_ne!(a, b);
        let (pa, pb) = (Pid(42).qualified(a), Pid(42).qualified(b));
        assert_ne!(pa, pb);
        assert_eq!(pa.0, Tid(42).qualified(a).0, "main thread tid == pid");
        assert_eq!((pa.host(), pa.local()), (a, 42));
        assert_eq!(qualify_id(a, 0), 0, "0 still means none");
        assert_eq!(Pid(4_194_303).qualified(MAX_HOSTS).local(), 4_194_303);
        assert!(Pid(4_194_303).qualified(MAX_HOSTS).0 > 0);
        assert_eq!(pa.to_string(), "ids-test-a/42");
        assert_eq!(Pid(42).to_string(), "42");
    }

    #[test]
    fn qualified_ids_round_trip_as_label_slash_number() {
        let a = super::super::host::code("ids-test-rt").expect("code");
        let r = ThreadRef {
            pid: Pid(7).qualified(a),
            tid: Tid(9).qualified(a),
        };
        let text = serde_json::to_string(&r).expect("ser");
        assert_eq!(text, r#"{"pid":"ids-test-rt/7","tid":"ids-test-rt/9"}"#);
        assert_eq!(serde_json::from_str::<ThreadRef>(&text).expect("de"), r);
        let plain: ThreadRef = serde_json::from_str(r#"{"pid":7,"tid":9}"#).expect("de");
        assert_eq!(plain.pid, Pid(7));
        let ino = Inode(123).qualified(a);
        let t = serde_json::to_string(&ino).expect("ser");
        assert_eq!(t, r#""ids-test-rt/123""#);
        assert_eq!(serde_json::from_str::<Inode>(&t).expect("de"), ino);
    }
}

/// JSON Schema of an id that serializes as a number on one host and as `"label/local"` in a
/// merged report.
macro_rules! id_schema {
    ($t:ty, $name:literal, $what:literal) => {
        impl JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": concat!($what, ": a number, or \"host/number\" in a merged report"),
                    "type": ["integer", "string"]
                })
            }
        }
    };
}
id_schema!(Pid, "Pid", "A process id");
id_schema!(Tid, "Tid", "A thread id");
id_schema!(Inode, "Inode", "A pipe or socket inode");
