//! Pure parsers for `/proc` text (`stat`, `status`, `syscall`, `maps`, `limits`, `wchan`), the
//! only ones in mphang. They take `&str` and never touch the OS, so they are tested on captured
//! text; [`read_stat`] is the one reader of a `stat` file.

/// The fields of `/proc/PID/stat` (or `task/TID/stat`) that mphang uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// Kernel task flags (field 9); `PF_KTHREAD` marks kernel threads.
    pub flags: u64,
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u32,
    pub start_ticks: u64,
    /// Field 52: the wait status of a zombie (0 while alive, or when not permitted; absent on
    /// kernels before 3.5).
    pub exit_code: Option<i32>,
}

impl Stat {
    /// User plus system time, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// `PF_KTHREAD` from include/linux/sched.h.
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads and parses `/proc/PID/stat` (or `/proc/TID/stat`); None once it is gone.
pub fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a stat line. The comm may contain spaces and parentheses, so split on the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state).
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        num_threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        exit_code: field(52).and_then(|f| f.parse().ok()),
    })
}

/// The raw content of `/proc/PID/task/TID/syscall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSyscall {
    Running,
    /// `-1 SP PC`
    UserStopped,
    Blocked {
        nr: i64,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parses the syscall file (three forms: `running`, `-1 SP PC`, `NR a1..a6 SP PC`).
pub fn parse_syscall(text: &str) -> Option<RawSyscall> {
    let text = text.trim();
    if text == "running" {
        return Some(RawSyscall::Running);
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    let nr: i64 = parts.first()?.parse().ok()?;
    if nr < 0 {
        return Some(RawSyscall::UserStopped);
    }
    if parts.len() < 9 {
        return None;
    }
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = hex(parts[1 + i])?;
    }
    Some(RawSyscall::Blocked {
        nr,
        args,
        sp: hex(parts[7])?,
        pc: hex(parts[8])?,
    })
}

/// Strips compiler suffixes (`.constprop.0`, `.isra.0`, `.part.1`) from a wchan name; `0` means none.
pub fn clean_wchan(text: &str) -> Option<String> {
    let w = text.trim();
    if w.is_empty() || w == "0" {
        return None;
    }
    Some(w.split('.').next().unwrap_or(w).to_string())
}

/// The fields of `/proc/PID/status` that mphang uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub uid: Option<u32>,
    /// `NSpid` values, outermost first; the last is the pid in the innermost namespace.
    pub nspid: Vec<i32>,
}

pub fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            st.uid = v.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            st.nspid = v
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
        }
    }
    st
}

/// The soft limit of `Max open files` from `/proc/PID/limits`.
pub fn parse_nofile_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    /// `major:minor` as printed (hex).
    pub dev: String,
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`), may end with ` (deleted)`; empty for anonymous.
    pub path: String,
}

impl MapEntry {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// A POSIX semaphore mapping (`/dev/shm/sem.*`, possibly deleted).
    pub fn is_semaphore(&self) -> bool {
        self.path.starts_with("/dev/shm/sem.")
    }
    /// The dev:inode key used to match one file across processes.
    pub fn file_key(&self) -> String {
        format!("{}:{}", self.dev, self.inode)
    }
    pub fn is_anonymous_rw(&self) -> bool {
        self.perms.starts_with("rw")
            && (self.path.is_empty() || self.path == "[heap]")
            && self.perms.ends_with('p')
    }
    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }
    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
    /// The file was unlinked (or replaced) after it was mapped.
    pub fn deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }
    /// The path without the ` (deleted)` suffix; `[stack]`, `[vdso]`, … for special mappings;
    /// None for an anonymous mapping.
    pub fn file_path(&self) -> Option<&str> {
        match self.path.as_str() {
            "" => None,
            p => Some(p.strip_suffix(" (deleted)").unwrap_or(p)),
        }
    }
    /// True when this mapping comes from a regular file (not anonymous, not `[vdso]`).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.file_path().is_some_and(|p| p.starts_with('/'))
    }
    /// True for the kernel's `[vdso]`, an ELF image with its own unwind tables and symbols.
    pub fn is_vdso(&self) -> bool {
        self.path == "[vdso]"
    }
    /// True when this mapping holds code the unwinder and symbolizer can describe.
    pub fn is_code_object(&self) -> bool {
        self.is_file() || self.is_vdso()
    }
    /// Paths that open the mapped file from outside the target's mount namespace, best first:
    /// `/proc/PID/root/<path>` (works across containers) then `/proc/PID/map_files/<range>`
    /// (works for deleted files, needs root).
    pub fn open_candidates(&self, pid: i32) -> Vec<std::path::PathBuf> {
        let mut v = Vec::new();
        if let (Some(p), false) = (self.file_path(), self.deleted()) {
            v.push(format!("/proc/{pid}/root{p}").into());
        }
        v.push(format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end).into());
        v
    }
}

pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_map_line).collect()
}

fn parse_map_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = hex(it.next()?)?;
    let dev = it.next()?.to_string();
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim().to_string();
    let (s, e) = range.split_once('-')?;
    Some(MapEntry {
        start: hex(s)?,
        end: hex(e)?,
        perms,
        offset,
        dev,
        inode,
        path,
    })
}

/// The `tfd:` entries of an epoll fd's fdinfo: the fds it watches.
pub fn parse_epoll_fdinfo(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tfd:"))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parens_in_comm() {
        let s = "3736 (py (x) 3) S 3694 3694 3600 34816 3694 4194368 300 0 0 0 12 3 0 0 20 0 2 0 98765 20000000 3000 18446744073709551615 1 1 0 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(s).expect("parses");
        assert_eq!(st.comm, "py (x) 3");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 3694);
        assert_eq!(st.utime, 12);
        assert_eq!(st.stime, 3);
        assert_eq!(st.num_threads, 2);
        assert_eq!(st.start_ticks, 98765);
        assert_eq!(st.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn syscall_forms() {
        assert_eq!(parse_syscall("running\n"), Some(RawSyscall::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffd 0x7f00"),
            Some(RawSyscall::UserStopped)
        );
        let b = parse_syscall("61 0xe98 0x7ffc8a 0x0 0x0 0x0 0x0 0x7ffc80 0x7f1234\n");
        assert_eq!(
            b,
            Some(RawSyscall::Blocked {
                nr: 61,
                args: [0xe98, 0x7ffc8a, 0, 0, 0, 0],
                sp: 0x7ffc80,
                pc: 0x7f1234
            })
        );
        assert_eq!(parse_syscall("garbage"), None);
    }

    #[test]
    fn wchan_suffixes() {
        assert_eq!(
            clean_wchan("poll_schedule_timeout.constprop.0"),
            Some("poll_schedule_timeout".into())
        );
        assert_eq!(clean_wchan("0"), None);
        assert_eq!(clean_wchan("do_wait"), Some("do_wait".into()));
    }

    #[test]
    fn maps_and_status() {
        let m = parse_maps("7fc7f07fb000-7fc7f07fc000 rw-s 00000000 00:1b 11                         /dev/shm/sem.ieaFdq (deleted)\n55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n");
        assert_eq!(m.len(), 2);
        assert!(m[0].is_semaphore());
        assert_eq!(m[0].file_key(), "00:1b:11");
        assert_eq!(m[0].path, "/dev/shm/sem.ieaFdq (deleted)");
        assert!(m[1].is_anonymous_rw());
        let st = parse_status("Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t2361\t3\n");
        assert_eq!(st.uid, Some(1000));
        assert_eq!(st.nspid, vec![2361, 3]);
        assert_eq!(
            parse_nofile_limit(
                "Max open files            1024                 524288               files     \n"
            ),
            Some(1024)
        );
        assert_eq!(parse_epoll_fdinfo("pos:\t0\ntfd:        5 events:       19 data: 5  pos:0 ino:1f sdev:d\ntfd:       7 events: 19\n"), vec![5, 7]);
    }
}
