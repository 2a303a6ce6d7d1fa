//! Host-wide selectors for `report`: every Python tree of a job on this host, found by a
//! variable in the processes' environment (`SLURM_JOB_ID=123`) or by cgroup, for launchers
//! that run one mphang per node (docs/multi-host.md). A tree's root is a matching Python
//! process whose parent does not match.

use crate::error::{Error, Result};
use crate::model::Pid;

/// Which processes belong to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `NAME=VALUE` in `/proc/PID/environ`.
    Env { name: String, value: String },
    /// The cgroup path in `/proc/PID/cgroup` is this one or below it.
    Cgroup(String),
}

impl Selector {
    /// Parses `NAME=VALUE`.
    pub fn env(spec: &str) -> Result<Selector> {
        match spec.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(Selector::Env {
                name: name.to_string(),
                value: value.to_string(),
            }),
            _ => Err(Error::Usage(format!(
                "--job-env takes NAME=VALUE (e.g. SLURM_JOB_ID=123), not `{spec}`"
            ))),
        }
    }

    fn matches(&self, pid: i32) -> bool {
        match self {
            Selector::Env { name, value } => super::host::environ(pid)
                .is_some_and(|env| super::host::env_var(&env, name) == Some(value.as_str())),
            Selector::Cgroup(path) => {
                let want = path.trim_end_matches('/');
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2))
                    .any(|p| p == want || p.starts_with(&format!("{want}/")))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Selector::Env { name, value } => format!("{name}={value} in its environment"),
            Selector::Cgroup(p) => format!("cgroup {p}"),
        }
    }
}

fn is_python(pid: i32) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| base(&p.to_string_lossy()));
    let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            b.split(|&c| c == 0)
                .next()
                .map(|a| base(&String::from_utf8_lossy(a)))
        });
    [exe, argv0]
        .iter()
        .flatten()
        .any(|n| n.starts_with("python"))
}

fn ppid(pid: i32) -> Option<i32> {
    super::procfs::read_stat(pid).map(|s| s.ppid)
}

/// The roots of every Python tree on this host that `sel` selects, lowest pid first.
pub fn roots(sel: &Selector) -> Result<Vec<Pid>> {
    let me = std::process::id() as i32;
    let mut found: Vec<i32> = std::fs::read_dir("/proc")
        .map_err(|e| Error::Io {
            context: "listing /proc".into(),
            source: e,
        })?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && is_python(pid) && sel.matches(pid))
        .collect();
    found.sort_unstable();
    let roots: Vec<Pid> = found
        .iter()
        .filter(|&&pid| ppid(pid).is_none_or(|pp| found.binary_search(&pp).is_err()))
        .map(|&pid| Pid(pid))
        .collect();
    if roots.is_empty() {
        return Err(Error::Usage(format!(
            "no Python process on this host has {}",
            sel.describe()
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn env_spec_needs_a_name() {
        assert_eq!(
            Selector::env("SLURM_JOB_ID=12").ok(),
            Some(Selector::Env {
                name: "SLURM_JOB_ID".into(),
                value: "12".into()
            })
        );
        assert!(Selector::env("=12").is_err());
        assert!(Selector::env("SLURM_JOB_ID").is_err());
    }
}
