//! Verdicts that hold on real programs: mphang's own stop never hides a fresh hang (messages
//! of 1 KiB to 1 MiB, first report), a pipe's other end outside the tree is external (never
//! stuck), and a target in its own PID namespace is diagnosed from the host.

use crate::util::{self, pythons, report_json};
use mphang::analysis::{BlockedOn, Progress};
use mphang::model::Pid;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command started in its own process group; dropping it kills the group and reaps it.
struct Group {
    child: Child,
}

impl Group {
    fn start(cmd: &mut Command) -> Group {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start command");
        Group { child }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal to the group this test started.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|s| {
                    s.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect::<Vec<i32>>()
                })
                .collect()
        })
        .unwrap_or_default()
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

/// The first report on a freshly hung join-before-drain whose feeder is blocked mid-way
/// through a message (mphang's own ptrace stop cuts that write short, and Python writes the
/// rest from a new buffer up to 16 KiB, from the same one beyond) names the hang.
///
/// Every size on the oldest and newest Python; 4 KiB (one write, new buffer) and 1 MiB (header
/// and payload apart, same buffer) on the others.
#[test]
fn first_report_names_the_hang_whatever_the_message_size() {
    let all = pythons();
    for (i, p) in all.iter().enumerate() {
        let (ver, py) = (p.label(), &p.path);
        let edge = i == 0 || i + 1 == all.len();
        let sizes: &[usize] = if edge {
            &[1024, 4096, 16 * 1024, 64 * 1024, 1024 * 1024]
        } else {
            &[4096, 1024 * 1024]
        };
        for &size in sizes {
            let s = size.to_string();
            let fx = util::start_with(py, "join_before_drain_msg", &[("MPHANG_MSG_SIZE", &s)]);
            let (code, r) = report_json(fx.root(), &[]);
            let ctx = format!("{size} B messages on {ver}");
            let ids: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
            assert_eq!(ids, ["join_before_drain"], "{ctx}");
            assert_eq!(code, 1, "{ctx}");
            let child = Pid(fx.ready.pid("child").unwrap_or(0));
            assert!(r.findings[0].pids.contains(&child), "{ctx}");
            assert!(
                r.snapshot.max_stop_us.is_some(),
                "{ctx}: threads were stopped"
            );
        }
    }
}

/// `(sleep 30; echo hi) | python -c 'sys.stdin.read()'`: the writer of the Python reader's
/// pipe is outside the reported tree. It is external, named, and the reader is never stuck.
#[test]
fn a_pipe_writer_outside_the_tree_is_external_not_dead() {
    let all = pythons();
    let p = all.last().expect("a Python");
    let (ver, py) = (p.label(), &p.path);
    let script = format!(
        "(sleep 30; echo hi) | {} -c 'import sys; sys.stdin.read()'",
        py.display()
    );
    let g = Group::start(Command::new("sh").arg("-c").arg(&script));
    // The Python reader: a child of the shell, blocked in read(0).
    let reader = wait_for("the reader", || {
        children(g.pid()).into_iter().find(|c| {
            std::fs::read_link(format!("/proc/{c}/exe"))
                .is_ok_and(|e| e.to_string_lossy().contains("python"))
                && syscall_nr(*c, *c) == Some(0)
        })
    });
    let (code, r) = report_json(reader, &[]);
    let ctx = format!("shell pipeline on {ver}");
    assert!(r.findings.is_empty(), "{ctx}: {:#?}", r.findings);
    assert_eq!(code, 0, "{ctx}");
    let v = r
        .threads
        .iter()
        .find(|v| v.thread.tid.0 == reader)
        .expect("reader verdict");
    let BlockedOn::PipeRead { inode } = v.blocked_on else {
        panic!("{ctx}: {:?}", v.blocked_on);
    };
    assert_eq!(v.progress, Progress::CanProgress, "{ctx}");
    let pipe = r.snapshot.pipe(inode).expect("pipe");
    let outside = pipe.outside.as_ref().expect("looked up outside the tree");
    // The subshell and `sleep` hold the write end; they are not in the tree.
    assert!(
        outside.iter().any(|h| h.access.can_write()) && !outside.is_empty(),
        "{ctx}: {outside:?}"
    );
    for h in outside {
        assert!(r.snapshot.process(h.pid).is_none(), "{ctx}: {h:?}");
    }
    assert!(
        v.because
            .as_deref()
            .is_some_and(|b| b.contains("outside the tree")),
        "{ctx}: {:?}",
        v.because
    );
}

/// A fixture run in its own PID namespace (`unshare --pid --fork --mount-proc`): its ready file
/// names namespace pids, translated here through `NSpid`.
struct NsFixture {
    _group: Group,
    /// Namespace pid -> host pid, for every process of the fixture.
    map: std::collections::HashMap<i32, i32>,
    ready: mphang::cmd::fixture::Ready,
    /// The ready file and the fixture's `TMPDIR`; dropped after the group is gone.
    _dir: util::TempDir,
}

fn nspid(pid: i32, tid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let c = children(out[i]);
        out.extend(c);
        i += 1;
    }
    out
}

impl NsFixture {
    fn start(py: &Path, name: &str) -> NsFixture {
        let dir = util::tempdir("ns");
        let ready_path = dir.join("ready.json");
        let group = Group::start(
            Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc"])
                .arg(py)
                .arg(util::fixture_path(name))
                .env("MPHANG_READY", &ready_path)
                .env("TMPDIR", &*dir),
        );
        let ready: mphang::cmd::fixture::Ready = wait_for("the ready file", || {
            serde_json::from_str(&std::fs::read_to_string(&ready_path).ok()?).ok()
        });
        let map_now = |g: &Group| -> std::collections::HashMap<i32, i32> {
            descendants(g.pid())
                .into_iter()
                .flat_map(|p| {
                    std::fs::read_dir(format!("/proc/{p}/task"))
                        .map(|rd| {
                            rd.flatten()
                                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                                .filter_map(|t| Some((nspid(p, t)?, t)))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .collect()
        };
        // Every expectation of the ready file, in host ids.
        let map = wait_for("the hang", || {
            let map = map_now(&group);
            let met = ready.blocked.iter().all(|(p, t, nrs)| {
                let Some(hp) = map.get(p).copied() else {
                    return false;
                };
                if *t == 0 {
                    return std::fs::read_dir(format!("/proc/{hp}/task")).is_ok_and(|rd| {
                        rd.flatten().any(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|s| s.parse().ok())
                                .and_then(|tid| syscall_nr(hp, tid))
                                .is_some_and(|n| nrs.contains(&n))
                        })
                    });
                }
                map.get(t)
                    .and_then(|ht| syscall_nr(hp, *ht))
                    .is_some_and(|n| nrs.contains(&n))
            });
            met.then_some(map)
        });
        // Settled: the named threads' syscall lines stay put.
        let lines = || -> Vec<Option<String>> {
            ready
                .blocked
                .iter()
                .filter(|(_, t, _)| *t != 0)
                .map(|(p, t, _)| syscall_line(map[p], map[t]))
                .collect()
        };
        wait_for("settled", || {
            let a = lines();
            std::thread::sleep(Duration::from_millis(60));
            (lines() == a).then_some(())
        });
        NsFixture {
            _group: group,
            map,
            ready,
            _dir: dir,
        }
    }

    fn host(&self, name: &str) -> Pid {
        Pid(self
            .ready
            .pid(name)
            .and_then(|p| self.map.get(&p).copied())
            .unwrap_or(0))
    }
}

/// From the host, a target in its own PID namespace: Python threads, pthread TIDs, SemLock
/// holders and wait4's child are namespace ids, translated through NSpid. join-before-drain and
/// a cross-process AB-BA cycle get their exact ids and host pids.
#[test]
fn a_target_in_its_own_pid_namespace_is_diagnosed_from_the_host() {
    if Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipping: unshare --pid --fork --mount-proc is not allowed here");
        return;
    }
    let all = pythons();
    let edges: Vec<_> = all
        .first()
        .into_iter()
        .chain(all.last().filter(|_| all.len() > 1))
        .collect();
    for p in edges {
        let (ver, py) = (p.label(), &p.path);
        for (fixture, id, names) in [
            (
                "join_before_drain",
                "join_before_drain",
                &["parent", "child"][..],
            ),
            (
                "lock_order_cycle",
                "lock_order_cycle",
                &["parent", "child"][..],
            ),
        ] {
            let fx = NsFixture::start(py, fixture);
            let root = fx.host("parent");
            let (code, r) = report_json(root.0, &[]);
            let ctx = format!("{fixture} in a PID namespace on {ver}");
            let ids: Vec<&str> = r.findings.iter().map(|f| f.pattern.as_str()).collect();
            assert_eq!(ids, [id], "{ctx}");
            assert_eq!(code, 1, "{ctx}");
            for n in names {
                assert!(
                    r.findings[0].pids.contains(&fx.host(n)),
                    "{ctx}: {n} = {} not in {:?}",
                    fx.host(n),
                    r.findings[0].pids
                );
            }
            let p = r.snapshot.process(root).expect("root");
            assert_eq!(p.ns_pid, Some(1), "{ctx}");
            assert!(
                r.snapshot
                    .processes
                    .iter()
                    .flat_map(|p| &p.threads)
                    .any(|t| t.py.is_some()),
                "{ctx}: Python threads matched to OS threads"
            );
        }
    }
}
