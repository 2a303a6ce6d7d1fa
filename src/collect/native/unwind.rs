//! CFI unwinding with framehop: registers plus a copy of the stack -> return addresses.
//! Pure once the modules are built: it reads only the stack copy, never the live process.

use super::elf::{ElfFile, SecBytes};
use super::maps::MapEntry;
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

/// The unwinder type used for every process (modules carry shared section bytes).
pub type ProcessUnwinder = UnwinderX86_64<SecBytes>;
/// framehop's rule cache, shared across all unwinds.
pub type UnwindCache = CacheX86_64;

/// Stop unwinding after this many frames (guards against loops in corrupt stacks).
pub const MAX_FRAMES: usize = 256;

/// The registers an unwind starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Bytes copied from the target's stack, starting at address `base` (the stack pointer).
#[derive(Debug, Clone, Default)]
pub struct StackCopy {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl StackCopy {
    /// The 8-byte little-endian word at `addr`, if it lies inside the copy.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Some(u64::from_le_bytes(w))
    }
}

/// A framehop module for one executable mapping of `elf`.
pub fn module_for(elf: &ElfFile, m: &MapEntry) -> Module<SecBytes> {
    let bias = elf.bias(m.start, m.offset);
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: elf.text.as_ref().map(|s| s.svma.clone()),
        text: elf.text.as_ref().and_then(|s| s.data.clone()),
        got_svma: elf.got.clone(),
        eh_frame_svma: elf.eh_frame.as_ref().map(|s| s.svma.clone()),
        eh_frame: elf.eh_frame.as_ref().and_then(|s| s.data.clone()),
        eh_frame_hdr_svma: elf.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
        eh_frame_hdr: elf.eh_frame_hdr.as_ref().and_then(|s| s.data.clone()),
        debug_frame: elf.debug_frame.clone(),
        ..Default::default()
    };
    Module::new(elf.name.clone(), m.start..m.end, bias, info)
}

/// How an unwind ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwindEnd {
    /// framehop found the root frame (or a zero return address).
    Complete,
    /// It stopped early: no CFI for an address, the stack copy was too short, or a loop.
    Truncated(String),
}

/// Unwinds from `regs` using only `stack`. The first address is the instruction pointer,
/// the rest are return addresses (see [`FrameAddress`]).
pub fn unwind(
    unwinder: &ProcessUnwinder,
    cache: &mut UnwindCache,
    regs: StartRegs,
    stack: &StackCopy,
) -> (Vec<FrameAddress>, UnwindEnd) {
    let mut read_stack = |addr: u64| stack.read_u64(addr).ok_or(());
    let mut it = unwinder.iter_frames(
        regs.ip,
        UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
        cache,
        &mut read_stack,
    );
    let mut out = Vec::new();
    loop {
        if out.len() >= MAX_FRAMES {
            return (
                out,
                UnwindEnd::Truncated(format!("more than {MAX_FRAMES} frames")),
            );
        }
        match it.next() {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, UnwindEnd::Complete),
            Err(e) => return (out, UnwindEnd::Truncated(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_copy_bounds() {
        let s = StackCopy {
            base: 0x1000,
            bytes: (0u8..16).collect(),
        };
        assert_eq!(
            s.read_u64(0x1000),
            Some(u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(
            s.read_u64(0x1008),
            Some(u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]))
        );
        assert_eq!(s.read_u64(0x1009), None);
        assert_eq!(s.read_u64(0xfff), None);
    }

    #[test]
    fn empty_unwinder_yields_the_ip_only() {
        let u = ProcessUnwinder::new();
        let mut c = UnwindCache::new();
        let (frames, _end) = unwind(
            &u,
            &mut c,
            StartRegs {
                ip: 0x4000,
                sp: 0x1000,
                bp: 0,
            },
            &StackCopy::default(),
        );
        assert_eq!(frames.first().map(|f| f.address()), Some(0x4000));
    }
}
