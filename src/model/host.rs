//! Host identity: which machine (and which PID namespace on it) a snapshot's ids belong to, the
//! network namespaces of its tree with their addresses, and the host labels of merged snapshots.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// The host a snapshot was taken on. A one-host snapshot has one; a merged snapshot one per
/// host, each with the `label` its qualified ids carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostInfo {
    /// In a merged snapshot: the host part of its qualified ids (`node-b/4242`), the hostname
    /// made unique. Absent in a one-host snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The hostname in mphang's UTS namespace (a pod's name under Kubernetes).
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: one kernel, one boot.
    pub boot_id: Option<String>,
    /// `/etc/machine-id`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Inode of mphang's PID namespace: pids are unique only within (boot_id, pid_ns).
    pub pid_ns: Option<u64>,
    /// Each network namespace of the tree, with its interface addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_ns: Vec<NetNs>,
    /// In a merged snapshot: the report it came from (file, mphang version, root pid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

/// One network namespace: TCP addresses are scoped by it (loopback is per namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetNs {
    /// The namespace's inode (`/proc/PID/ns/net`).
    pub inode: u64,
    /// Addresses of its interfaces (loopback included), as `getifaddrs` lists them.
    pub addrs: Vec<IpAddr>,
}

/// One input of a merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    pub file: String,
    pub mphang_version: String,
    pub root: super::Pid,
    pub taken_at_ms: u64,
}

impl HostInfo {
    /// The key that decides whether two snapshots share pids: same boot and PID namespace.
    /// None when either is unknown (an older report): such a snapshot is a host of its own.
    pub fn key(&self) -> Option<(String, u64)> {
        Some((self.boot_id.clone()?, self.pid_ns?))
    }
    /// The host code of its qualified ids (0 for a one-host snapshot).
    pub fn code(&self) -> u16 {
        self.label.as_deref().and_then(code).unwrap_or(0)
    }
    /// The name used in text: the label, else the hostname.
    pub fn name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.hostname)
    }
}

/// Host labels seen by this process, in the order first seen: label `i` has code `i + 1`.
/// Append-only, so a code never changes meaning while the process runs.
static LABELS: RwLock<Vec<Arc<str>>> = RwLock::new(Vec::new());

/// The code of host `label` (1..=[`super::ids::MAX_HOSTS`]), allocating one the first time.
/// None when every code is taken.
pub fn code(label: &str) -> Option<u16> {
    if let Ok(labels) = LABELS.read() {
        if let Some(i) = labels.iter().position(|l| &**l == label) {
            return u16::try_from(i + 1).ok();
        }
    }
    let mut labels = LABELS.write().ok()?;
    if let Some(i) = labels.iter().position(|l| &**l == label) {
        return u16::try_from(i + 1).ok();
    }
    if labels.len() >= usize::from(super::ids::MAX_HOSTS) {
        return None;
    }
    labels.push(Arc::from(label));
    u16::try_from(labels.len()).ok()
}

/// The label of host `code` (`#N` if it was never allocated, which only corrupt input causes).
/// Shared, not copied: every qualified id printed or serialized asks for it.
pub fn label(code: u16) -> Arc<str> {
    LABELS
        .read()
        .ok()
        .and_then(|l| l.get(usize::from(code).checked_sub(1)?).cloned())
        .unwrap_or_else(|| Arc::from(format!("#{code}")))
}

/// True for addresses that mean "this host" (or "this network namespace"): loopback,
/// unspecified, link-local. Their TCP endpoints are scoped by host and namespace; every other
/// address is taken to be global.
pub fn host_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_are_stable_and_labels_come_back() {
        let a = code("host-test-one").expect("code");
        assert_eq!(code("host-test-one"), Some(a));
        assert_eq!(&*label(a), "host-test-one");
        assert!(host_local(&"127.0.0.5".parse().expect("ip")));
        assert!(host_local(&"::1".parse().expect("ip")));
        assert!(host_local(&"fe80::1".parse().expect("ip")));
        assert!(!host_local(&"10.1.2.3".parse().expect("ip")));
    }
}
