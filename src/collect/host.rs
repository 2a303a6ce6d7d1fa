//! Host identity (hostname, boot id, machine id, PID namespace) and what a process's environment
//! says about its rank. Only the rank variables are kept; the environment is never stored.

use crate::model::{HostInfo, NetNs};

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The host mphang runs on, with the network namespaces of the tree.
pub fn this_host(net_ns: &[NetNs]) -> Option<HostInfo> {
    let hostname = read_trimmed("/proc/sys/kernel/hostname").or_else(|| {
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is valid for `buf.len()` bytes; gethostname NUL-terminates within it.
        (unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0).then(|| {
            let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        })
    })?;
    Some(HostInfo {
        label: None,
        hostname,
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        machine_id: read_trimmed("/etc/machine-id"),
        pid_ns: super::net::ns_inode("/proc/self/ns/pid", "pid:["),
        net_ns: net_ns.to_vec(),
        sources: Vec::new(),
    })
}

/// Environment variables that name a process's rank, most specific first.
const RANK_VARS: &[&str] = &[
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

/// The NUL-separated environment of `pid` (needs the same rights as reading its memory).
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `name` in an environment block.
pub fn env_var<'a>(env: &'a [u8], name: &str) -> Option<&'a str> {
    env.split(|&c| c == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The rank of `pid` in a distributed job, when its environment names one.
pub fn rank_of(pid: i32) -> Option<u32> {
    let env = environ(pid)?;
    RANK_VARS
        .iter()
        .find_map(|v| env_var(&env, v)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn env_lookup_takes_whole_names() {
        let env = b"XRANK=9\0RANK=3\0SLURM_PROCID=7\0";
        assert_eq!(env_var(env, "RANK"), Some("3"));
        assert_eq!(env_var(env, "SLURM_PROCID"), Some("7"));
        assert_eq!(env_var(env, "PMI_RANK"), None);
        let h = this_host(&[]).expect("host");
        assert!(!h.hostname.is_empty());
        assert!(h.pid_ns.is_some());
    }
}
