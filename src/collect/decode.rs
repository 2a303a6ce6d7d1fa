//! Decodes a raw syscall line into what the thread waits for, reading target memory for poll
//! sets and futex words and `/proc/PID/maps` for where a futex lives (field guide §1.2, §3.8, §4.1).
//! Layouts (futex word, parking-lot entry, where the GIL is) come from [`abi`](super::abi).

use super::abi::{Abi, Gil};
use super::memory;
use super::procfs::{MapEntry, RawSyscall};
use crate::model::{syscall_name, Decoded, Futex, FutexRegion, Pid, SemKey, Syscall, SyscallState};

/// What the decoder needs to know about the process.
pub struct DecodeCtx<'a> {
    pub pid: i32,
    pub maps: &'a [MapEntry],
    pub exe: Option<&'a str>,
    /// The process's layouts (its build as far as file names and headers tell).
    pub abi: &'a Abi,
}

const MAX_POLL_FDS: u64 = 4096;

pub fn decode(ctx: &DecodeCtx<'_>, raw: &RawSyscall, wchan: Option<&str>) -> SyscallState {
    let (nr, args, sp, pc) = match raw {
        RawSyscall::Running => return SyscallState::Running,
        RawSyscall::UserStopped => return SyscallState::UserStopped,
        RawSyscall::Blocked { nr, args, sp, pc } => (*nr, *args, *sp, *pc),
    };
    let decoded = decode_call(ctx, nr, &args, sp, wchan);
    SyscallState::Blocked(Syscall {
        nr,
        name: syscall_name(nr),
        args,
        sp,
        pc,
        decoded,
    })
}

fn decode_call(
    ctx: &DecodeCtx<'_>,
    nr: i64,
    a: &[u64; 6],
    sp: u64,
    wchan: Option<&str>,
) -> Decoded {
    let fd = a[0] as i32;
    match nr {
        0 | 17 | 19 | 45 | 47 => Decoded::Read { fd },
        1 | 20 | 44 | 46 => Decoded::Write {
            fd,
            count: if nr == 1 || nr == 44 { a[2] } else { 0 },
        },
        7 => poll(ctx, a[0], a[1], Some(a[2] as i32 as i64)),
        271 => {
            let t = timespec_ms(ctx.pid, a[2]);
            poll(ctx, a[0], a[1], t.map(Some).unwrap_or(None))
        }
        23 | 270 => select(ctx, a),
        232 | 281 => epoll(ctx, fd, Some(a[3] as i32 as i64)),
        441 => epoll(ctx, fd, timespec_ms(ctx.pid, a[3]).or(Some(-1))),
        202 => futex(ctx, a, sp, false),
        61 => Decoded::WaitChild {
            pid: (a[0] as i32 > 0).then_some(Pid(a[0] as i32)),
        },
        // waitid(P_PID=1, id, ...)
        247 => Decoded::WaitChild {
            pid: (a[0] == 1).then_some(Pid(a[1] as i32)),
        },
        35 | 230 => Decoded::Sleep,
        43 | 288 => Decoded::Accept { fd },
        34 | 128 | 130 => Decoded::Signal,
        219 => match wchan.unwrap_or("") {
            w if w.starts_with("futex") => futex(ctx, a, sp, true),
            w if w.starts_with("poll_schedule_timeout") || w == "do_sys_poll" => {
                poll(ctx, a[0], a[1], Some(a[2] as i32 as i64))
            }
            "hrtimer_nanosleep" => Decoded::Sleep,
            _ => Decoded::Restart,
        },
        _ => Decoded::Other,
    }
}

fn timeout(ms: Option<i64>) -> Option<i64> {
    match ms {
        Some(t) if t >= 0 => Some(t),
        _ => None,
    }
}

/// Reads a `struct timespec*` as milliseconds; None for NULL (forever).
fn timespec_ms(pid: i32, ptr: u64) -> Option<i64> {
    if ptr == 0 {
        return None;
    }
    // An unreadable timeout still means "timed".
    let Ok(b) = memory::read(pid, ptr, 16) else {
        return Some(0);
    };
    let s = memory::u64_at(&b, 0).unwrap_or(0) as i64;
    let ns = memory::u64_at(&b, 8).unwrap_or(0) as i64;
    Some(s.saturating_mul(1000).saturating_add(ns / 1_000_000))
}

fn poll(ctx: &DecodeCtx<'_>, ptr: u64, nfds: u64, timeout_ms: Option<i64>) -> Decoded {
    let n = nfds.min(MAX_POLL_FDS) as usize;
    let fds = memory::read(ctx.pid, ptr, n * 8)
        .map(|b| {
            (0..n)
                .filter_map(|i| memory::i32_at(&b, i * 8))
                .filter(|fd| *fd >= 0)
                .collect()
        })
        .unwrap_or_default();
    Decoded::Poll {
        fds,
        timeout_ms: timeout(timeout_ms),
        sleep_only: false,
    }
}

fn select(ctx: &DecodeCtx<'_>, a: &[u64; 6]) -> Decoded {
    let nfds = a[0].min(MAX_POLL_FDS);
    let t = timespec_ms(ctx.pid, a[4]);
    if nfds == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 {
        return Decoded::Poll {
            fds: Vec::new(),
            timeout_ms: t,
            sleep_only: true,
        };
    }
    let bytes = nfds.div_ceil(64) as usize * 8;
    let mut fds = Vec::new();
    for set in [a[1], a[2]] {
        if set == 0 {
            continue;
        }
        if let Ok(b) = memory::read(ctx.pid, set, bytes) {
            for fd in 0..nfds as usize {
                if b[fd / 8] & (1 << (fd % 8)) != 0 && !fds.contains(&(fd as i32)) {
                    fds.push(fd as i32);
                }
            }
        }
    }
    Decoded::Poll {
        fds,
        timeout_ms: t,
        sleep_only: false,
    }
}

fn epoll(ctx: &DecodeCtx<'_>, epfd: i32, timeout_ms: Option<i64>) -> Decoded {
    let fds = std::fs::read_to_string(format!("/proc/{}/fdinfo/{epfd}", ctx.pid))
        .map(|t| super::procfs::parse_epoll_fdinfo(&t))
        .unwrap_or_default();
    Decoded::EpollWait {
        epfd,
        fds,
        timeout_ms: timeout(timeout_ms),
    }
}

fn futex(ctx: &DecodeCtx<'_>, a: &[u64; 6], sp: u64, restarted: bool) -> Decoded {
    let uaddr = a[0];
    let op = a[1] as u32;
    let cmd = op & 0x7f;
    // WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI, LOCK_PI2
    if !matches!(cmd, 0 | 6 | 9 | 11 | 13) {
        return Decoded::Other;
    }
    let region = futex_region(ctx, uaddr, sp);
    let word = memory::read(ctx.pid, uaddr, 16)
        .ok()
        .and_then(|b| ctx.abi.libc.futex_word(&b));
    Decoded::Futex(Futex {
        uaddr,
        op,
        val: a[2] as u32,
        shared: op & 0x80 == 0,
        timed: restarted || a[3] != 0,
        region,
        word,
        lock: None,
    })
}

fn futex_region(ctx: &DecodeCtx<'_>, uaddr: u64, sp: u64) -> FutexRegion {
    let Some(i) = ctx.maps.iter().position(|m| m.contains(uaddr)) else {
        return FutexRegion::Other { path: None };
    };
    let m = &ctx.maps[i];
    if m.is_semaphore() {
        return FutexRegion::SharedSem {
            key: SemKey(m.file_key()),
        };
    }
    if m.contains(sp) && uaddr >= sp {
        // The parking lot's wait entry: the awaited address just before the semaphore.
        let key = ctx
            .abi
            .parking_lot()
            .and_then(|pl| memory::read(ctx.pid, uaddr.checked_sub(pl.addr_before_sema)?, 8).ok())
            .and_then(|b| memory::u64_at(&b, 0))
            .unwrap_or(0);
        return FutexRegion::OwnStack { key };
    }
    let p = m.path.as_str();
    let interpreter = |path: &str| {
        ctx.abi.gil() == Gil::InRuntime
            && (path.contains("libpython") || ctx.exe.is_some_and(|e| e == path))
    };
    if interpreter(p) {
        return FutexRegion::Interpreter;
    }
    // The anonymous tail right after libpython's (or the executable's) data is its .bss, where
    // 3.8's _PyRuntime (and its GIL) lives.
    if p.is_empty() && i > 0 && ctx.maps[i - 1].end == m.start && interpreter(&ctx.maps[i - 1].path)
    {
        return FutexRegion::Interpreter;
    }
    if p.is_empty() || p == "[heap]" || p == "[stack]" {
        return FutexRegion::Heap;
    }
    FutexRegion::Other {
        path: Some(p.to_string()),
    }
}
