//! Reading target memory with `process_vm_readv` (needs ptrace-read rights; nothing is stopped),
//! behind the [`Mem`] trait so that decoders can be tested on fake memory.

use super::procfs::MapEntry;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid as NixPid;
use std::io::IoSliceMut;

/// Reads `len` bytes at `addr` in process `pid`. Short reads are errors.
pub fn read(pid: i32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read_into(pid, addr, &mut buf)?;
    if n != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short read at {addr:#x}: {n} of {len} bytes"),
        ));
    }
    Ok(buf)
}

/// Reads as much as possible of `buf.len()` bytes at `addr`; returns the count read.
pub fn read_into(pid: i32, addr: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [IoSliceMut::new(buf)];
    process_vm_readv(NixPid::from_raw(pid), &mut local, &remote).map_err(std::io::Error::from)
}

pub fn u64_at(bytes: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(off..off + 8)?.try_into().ok()?,
    ))
}
pub fn u32_at(bytes: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(off..off + 4)?.try_into().ok()?,
    ))
}
pub fn i32_at(bytes: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_le_bytes(
        bytes.get(off..off + 4)?.try_into().ok()?,
    ))
}

/// Reads the anonymous read-write memory of `pid` (heap and anonymous private mappings, where
/// Python objects live) in 1 MiB chunks, at most `limit` bytes, and calls `hit(addr)` for every
/// 8-aligned word equal to one of `values`. `hit` returns false to stop the scan.
pub fn scan_words(
    pid: i32,
    maps: &[MapEntry],
    values: &[u64],
    limit: u64,
    mut hit: impl FnMut(u64, u64) -> bool,
) {
    const CHUNK: usize = 1 << 20;
    let mut budget = limit;
    let mut buf = vec![0u8; CHUNK];
    for m in maps.iter().filter(|m| m.is_anonymous_rw()) {
        let mut addr = m.start;
        while addr < m.end && budget > 0 {
            let len = ((m.end - addr) as usize).min(CHUNK);
            let n = read_into(pid, addr, &mut buf[..len]).unwrap_or(0);
            if n == 0 {
                break;
            }
            budget = budget.saturating_sub(n as u64);
            let mut off = 0;
            while off + 8 <= n {
                if let Some(v) = u64_at(&buf, off).filter(|v| values.contains(v)) {
                    if !hit(addr + off as u64, v) {
                        return;
                    }
                }
                off += 8;
            }
            addr += n as u64;
        }
    }
}

/// Memory that object decoders read: a live process ([`Remote`]) or, in tests, a fake.
pub trait Mem {
    /// `len` bytes at `addr`; short reads are errors.
    fn read(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

/// The memory of a live process.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub i32);

impl Mem for Remote {
    fn read(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
        read(self.0, addr, len)
    }
}

/// Fake memory for decoder tests: a few regions at chosen addresses.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeMem(pub Vec<(u64, Vec<u8>)>);

#[cfg(test)]
impl FakeMem {
    /// Writes `bytes` at `addr`, creating a region when no existing one covers it.
    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        for (start, data) in &mut self.0 {
            let off = addr.wrapping_sub(*start) as usize;
            if addr >= *start && off + bytes.len() <= data.len() {
                data[off..off + bytes.len()].copy_from_slice(bytes);
                return;
            }
        }
        self.0.push((addr, bytes.to_vec()));
    }
    pub fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }
    /// A zeroed region of `len` bytes at `addr`.
    pub fn zeroed(&mut self, addr: u64, len: usize) {
        self.0.push((addr, vec![0; len]));
    }
}

#[cfg(test)]
impl Mem for FakeMem {
    fn read(&self, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
        for (start, data) in &self.0 {
            let off = addr.wrapping_sub(*start) as usize;
            if addr >= *start && off + len <= data.len() {
                return Ok(data[off..off + len].to_vec());
            }
        }
        Err(std::io::Error::from_raw_os_error(libc::EFAULT))
    }
}
