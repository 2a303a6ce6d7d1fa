//! Interpreter builds mphang must recognise without a fixture: free-threaded CPython (none is
//! installable here, so fakes stand in: a real 3.14/3.15 whose `.PyRuntime` debug header is
//! patched to say `free_threaded = 1`, and a non-Python binary named `python3.14t`).

use crate::util::{bin, discovery, loud, report_json};
use mphang::model::{DiagKind, Pid};
use object::{Object, ObjectSection};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A started process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir(tag: &str) -> crate::util::TempDir {
    crate::util::tempdir(tag)
}

/// Starts `cmd`, waits for its first line on stdout (its readiness), returns the guard.
fn start_ready(mut cmd: Command) -> Guard {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    // The fake was just written: a child forked meanwhile by another test may still hold the
    // write fd until it execs (close-on-exec), and exec then fails with ETXTBSY.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.expect("start"),
        }
    };
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    assert_eq!(line.trim(), "ready", "the fake did not start");
    Guard(child)
}

/// The free-threaded sentence for `pid`, asserting it is the only kind of note about it.
fn check_sentence(pid: i32, label: &str) {
    let (code, report) = report_json(pid, &[]);
    assert_eq!(code, 0, "no hang in a sleeping process");
    let notes: Vec<&str> = report
        .snapshot
        .diagnostics
        .iter()
        .filter(|d| d.pid == Some(Pid(pid)) && d.kind == DiagKind::NotPython)
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(&format!("is a free-threaded CPython {label}"))
            && notes[0].contains("only what /proc allows"),
        "{}",
        notes[0]
    );
    let p = report.snapshot.process(Pid(pid)).expect("the process");
    assert!(p.python_version.is_none() && !p.threads.is_empty());
    let text = bin()
        .args(["report", &pid.to_string()])
        .output()
        .expect("run mphang");
    assert!(String::from_utf8_lossy(&text.stdout).contains("free-threaded CPython"));
}

#[test]
fn a_free_threaded_build_gets_one_sentence() {
    // By name: any binary called python3.14t.
    let dir = temp_dir("ft-name");
    let fake = dir.join("python3.14t");
    std::fs::copy("/bin/sh", &fake).expect("copy sh");
    let mut cmd = Command::new(&fake);
    // A trailing command keeps the shell from exec'ing sleep: the shell stays the process.
    cmd.args(["-c", "echo ready; sleep 60; echo done"]);
    let g = start_ready(cmd);
    check_sentence(g.0.id() as i32, "3.14t");
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);

    // By the .PyRuntime header of a real interpreter (name says nothing).
    let Some(py) = discovery().found.iter().rev().find(|p| p.minor >= 14) else {
        loud("SKIPPED: free-threaded header fake: no CPython 3.14+ found");
        return;
    };
    let real = std::fs::canonicalize(&py.path).expect("real interpreter");
    let bytes = std::fs::read(&real).expect("read interpreter");
    let Some(off) = runtime_section(&bytes) else {
        loud(&format!(
            "SKIPPED: free-threaded header fake: {} has no .PyRuntime section in the executable",
            real.display()
        ));
        return;
    };
    let mut patched = bytes.clone();
    assert_eq!(&patched[off..off + 8], b"xdebugpy");
    patched[off + 16..off + 24].copy_from_slice(&1u64.to_le_bytes());
    let dir = temp_dir("ft-header");
    let fake = dir.join("python3");
    std::fs::write(&fake, &patched).expect("write fake");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = prefix_of(&py.path);
    let mut cmd = Command::new(&fake);
    cmd.env("PYTHONHOME", &home).args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(60)",
    ]);
    let g = start_ready(cmd);
    check_sentence(g.0.id() as i32, &format!("3.{}t", py.minor));
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

/// File offset of the `.PyRuntime` section.
fn runtime_section(bytes: &[u8]) -> Option<usize> {
    let f = object::File::parse(bytes).ok()?;
    let s = f.section_by_name(".PyRuntime")?;
    Some(s.file_range()?.0 as usize)
}

/// `sys.prefix` of an interpreter.
fn prefix_of(py: &Path) -> String {
    let out = Command::new(py)
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .expect("run python");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
