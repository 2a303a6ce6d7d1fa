//! Test "hosts": network namespaces joined by a bridge (in a namespace of its own), each with
//! its own address 10.77.0.N (N = rank + 1), hostname (`node-a`, `node-b`, ...) and PID
//! namespace, so that pids collide across hosts as they do on real machines. Nothing touches
//! the machine's own network namespace. Dropping a [`Cluster`] kills every rank and deletes
//! the namespaces.

use mphang::cmd::fixture::Ready;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why multi-host tests cannot run here, if they cannot (not root, no iproute2/util-linux).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("multi-host tests need root (network and PID namespaces)".into());
    }
    for tool in ["ip", "unshare", "nsenter"] {
        if crate::util::which(tool).is_none() && !Path::new(&format!("/usr/sbin/{tool}")).exists() {
            return Some(format!("multi-host tests need `{tool}`"));
        }
    }
    None
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The hostname of host `i`.
pub fn hostname(i: usize) -> String {
    format!("node-{}", (b'a' + i as u8) as char)
}

/// The address of host `i`.
pub fn addr(i: usize) -> String {
    format!("10.77.0.{}", i + 1)
}

/// A set of hosts and the ranks running on them.
pub struct Cluster {
    prefix: String,
    hosts: usize,
    ranks: Vec<Rank>,
    pub dir: PathBuf,
}

/// One rank: `ip netns exec` -> `unshare` (outer pid) -> `sh` (pid 1 of the host's PID
/// namespace) -> python.
pub struct Rank {
    pub host: usize,
    child: Child,
    /// Outer pid of the host's PID-namespace init (the `sh`).
    init: i32,
    pub ready: Ready,
}

impl Cluster {
    /// Creates `hosts` namespaces on one bridge.
    pub fn new(hosts: usize) -> Cluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("mh{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("mphang-{prefix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let c = Cluster {
            prefix,
            hosts,
            ranks: Vec::new(),
            dir,
        };
        if let Err(e) = c.setup() {
            panic!("cannot create the test hosts: {e}");
        }
        c
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-{}", self.prefix, hostname(i))
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn setup(&self) -> Result<(), String> {
        let sw = self.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..self.hosts {
            let ns = self.ns(i);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Starts `script` as rank `rank` on host `rank` of a job of `world` ranks, then waits
    /// until every rank's ready file holds.
    pub fn start_job(&mut self, python: &Path, script: &Path, world: usize) {
        for rank in 0..world {
            self.spawn(python, script, rank, world);
        }
        for i in 0..self.ranks.len() {
            self.wait_ready(i, script);
        }
    }

    fn spawn(&mut self, python: &Path, script: &Path, rank: usize, world: usize) {
        let addrs: Vec<String> = (0..self.hosts).map(addr).collect();
        let stderr = std::fs::File::create(self.dir.join(format!("stderr-{rank}.txt")))
            .expect("stderr file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(rank)])
            .args([
                "unshare",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
            ])
            .args(["sh", "-c", "hostname \"$0\"; \"$@\" & wait"])
            .arg(hostname(rank))
            .arg(python)
            .arg(script)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MH_ADDRS", addrs.join(","))
            .env("MH_PORT", "29500")
            .env("MPHANG_READY", self.dir.join(format!("ready-{rank}.json")))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .expect("start a rank");
        self.ranks.push(Rank {
            host: rank,
            child,
            init: 0,
            ready: Ready {
                fixture: String::new(),
                python: String::new(),
                pids: Default::default(),
                blocked: Vec::new(),
                gone: Vec::new(),
            },
        });
    }

    fn wait_ready(&mut self, i: usize, script: &Path) {
        let rank = self.ranks[i].host;
        let ready_path = self.dir.join(format!("ready-{rank}.json"));
        let err_path = self.dir.join(format!("stderr-{rank}.txt"));
        let r = &mut self.ranks[i];
        let deadline = Instant::now() + Duration::from_secs(60);
        let fail = |why: String| -> ! {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!(
                "rank {rank} of {}: {why}; stderr: {}",
                script.display(),
                err.trim()
            )
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path) {
                r.ready = serde_json::from_str(&text).expect("ready file");
                break;
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                fail(format!("exited ({status}) before it was ready"));
            }
            if Instant::now() > deadline {
                fail("not ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        r.init = children(r.child.id() as i32).first().copied().unwrap_or(0);
        loop {
            let outer = outer_pids(r.init);
            let pending: Vec<String> = r
                .ready
                .blocked
                .iter()
                .filter(|(p, t, nrs)| !blocked_in(&outer, *p, *t, nrs))
                .map(|(p, t, nrs)| format!("{p}/{t} in {nrs:?}"))
                .chain(
                    r.ready
                        .gone
                        .iter()
                        .filter(|p| outer.get(p).is_some_and(|o| !gone(*o)))
                        .map(|p| format!("{p} gone")),
                )
                .collect();
            if pending.is_empty() && settled(&outer, &r.ready) {
                return;
            }
            if Instant::now() > deadline {
                fail(format!("expectations not met: {}", pending.join("; ")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn rank(&self, i: usize) -> &Rank {
        &self.ranks[i]
    }

    /// Runs `mphang report --json` on rank `i`'s tree from inside its host (its network, PID,
    /// mount and UTS namespaces) and writes the report to `<hostname>.json`.
    pub fn report(&self, i: usize) -> PathBuf {
        let r = &self.ranks[i];
        let pid = r.ready.pid("rank").expect("rank pid");
        let out = Command::new("nsenter")
            .args(["-t", &r.init.to_string(), "-p", "-m", "-u", "-n", "--"])
            .arg(env!("CARGO_BIN_EXE_mphang"))
            .args(["report", "--json", &pid.to_string()])
            .output()
            .expect("run mphang in the host");
        assert!(
            out.status.code().is_some_and(|c| c == 0 || c == 1),
            "mphang report on {}: {}",
            hostname(r.host),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.join(format!("{}.json", hostname(r.host)));
        std::fs::write(&path, &out.stdout).expect("write report");
        path
    }

    /// Reports of every rank, taken in parallel (as a launcher fans out).
    pub fn reports(&self) -> Vec<PathBuf> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..self.ranks.len())
                .map(|i| s.spawn(move || self.report(i)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("report thread"))
                .collect()
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.ranks {
            // SAFETY: kill(2) on the rank's own process group; `--kill-child` then ends the
            // host's PID namespace with everything in it.
            unsafe { libc::kill(-(r.child.id() as i32), libc::SIGKILL) };
            let _ = r.child.wait();
        }
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        // MPHANG_KEEP_REPORTS=1 keeps the reports and ready files for a look afterwards.
        if std::env::var_os("MPHANG_KEEP_REPORTS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Inner pid -> outer pid for every process (and thread) of `init`'s PID namespace.
fn outer_pids(init: i32) -> HashMap<i32, i32> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).ok();
    let mut map = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return map;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != ns {
            continue;
        }
        let tasks: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|t| t.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for tid in tasks {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
                .unwrap_or_default();
            if let Some(line) = status.lines().find(|l| l.starts_with("NSpid:")) {
                let v: Vec<i32> = line[6..]
                    .split_whitespace()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if let (Some(outer), Some(inner)) = (v.first(), v.last()) {
                    map.insert(*inner, *outer);
                }
            }
        }
    }
    map
}

fn syscall_line(pid: i32, tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()
}

fn syscall_nr(pid: i32, tid: i32) -> Option<i64> {
    syscall_line(pid, tid)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn blocked_in(outer: &HashMap<i32, i32>, pid: i32, tid: i32, nrs: &[i64]) -> bool {
    let Some(op) = outer.get(&pid) else {
        return false;
    };
    if tid == 0 {
        return std::fs::read_dir(format!("/proc/{op}/task"))
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|s| s.parse::<i32>().ok())
                        .and_then(|t| syscall_nr(*op, t))
                        .is_some_and(|n| nrs.contains(&n))
                })
            })
            .unwrap_or(false);
    }
    outer
        .get(&tid)
        .and_then(|ot| syscall_nr(*op, *ot))
        .is_some_and(|n| nrs.contains(&n))
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|st| st == "Z" || st == "X"),
        Err(_) => true,
    }
}

/// The named threads' syscall lines stay the same over three polls 20 ms apart.
fn settled(outer: &HashMap<i32, i32>, ready: &Ready) -> bool {
    let lines = || -> Vec<Option<String>> {
        ready
            .blocked
            .iter()
            .filter(|(_, t, _)| *t != 0)
            .map(|(p, t, _)| syscall_line(*outer.get(p)?, *outer.get(t)?))
            .collect()
    };
    let first = lines();
    (0..3).all(|_| {
        std::thread::sleep(Duration::from_millis(20));
        lines() == first
    })
}
