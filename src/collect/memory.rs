//! Reading target memory with `process_vm_readv` (needs ptrace-read rights; nothing is stopped).

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
