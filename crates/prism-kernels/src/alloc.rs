//! A global allocator that starts every large block on a 64-byte cache line.
//!
//! glibc hands out large blocks (weights, activations) 16 bytes past a page boundary, so every
//! 16-float vector load or store of them spans two cache lines: the panel loads of the Linear
//! tile, its output rows, the norms' and element-wise loops. [`LineAligned`] wraps the system
//! allocator and moves blocks of at least [`MIN_SIZE`] bytes to the next line boundary,
//! keeping zeroed allocations lazily zeroed (a fresh mapping is not written, so untouched
//! pages stay out of the resident set). The `prism` binary installs it.

use std::alloc::{GlobalAlloc, Layout, System};

/// Cache-line size (bytes).
pub const LINE: usize = 64;
/// Blocks of at least this many bytes are line-aligned.
pub const MIN_SIZE: usize = 4096;

/// The system allocator, with blocks of [`MIN_SIZE`] bytes or more starting on a cache line.
///
/// A large block is allocated [`LINE`] bytes longer at the system's alignment; the returned
/// pointer is the first line boundary strictly after the system's pointer, and the system's
/// pointer is kept in the 8 bytes before it.
pub struct LineAligned;

/// Whether a layout is served as a shifted block (else passed to the system unchanged).
fn shifted(l: Layout) -> bool {
    l.size() >= MIN_SIZE && l.align() <= 16
}

/// The system layout of a shifted block of `size` bytes.
fn outer(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(LINE)?, 16).ok()
}

/// The line boundary strictly after `base`, with `base` recorded before it.
///
/// # Safety
/// `base` must start a block of at least `size + LINE` bytes, 16-byte aligned.
unsafe fn place(base: *mut u8) -> *mut u8 {
    let p = base.add(LINE - (base as usize % LINE));
    (p as *mut *mut u8).sub(1).write(base);
    p
}

/// The system pointer recorded before a shifted block.
///
/// # Safety
/// `p` must come from [`place`].
unsafe fn base_of(p: *mut u8) -> *mut u8 {
    (p as *mut *mut u8).sub(1).read()
}

/// A shifted block for `l`, inside a system block from `sys` (null where that fails).
///
/// # Safety
/// `sys` must return null or a block of the layout it is given.
unsafe fn shifted_block(l: Layout, sys: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
    match outer(l.size()) {
        Some(o) => {
            let base = sys(o);
            if base.is_null() {
                base
            } else {
                place(base)
            }
        }
        None => std::ptr::null_mut(),
    }
}

// SAFETY: every block is either the system's own (small or over-aligned layouts, passed
// through) or a shifted block inside a system block of `size + LINE` bytes, freed through the
// pointer recorded before it; `shifted` depends only on the layout, which the caller passes
// unchanged to `dealloc` and `realloc`.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !shifted(l) {
            return System.alloc(l);
        }
        shifted_block(l, |o| System.alloc(o))
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !shifted(l) {
            return System.alloc_zeroed(l);
        }
        // calloc: fresh mappings are not written, so they stay lazily zeroed.
        shifted_block(l, |o| System.alloc_zeroed(o))
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if !shifted(l) {
            return System.dealloc(p, l);
        }
        // `outer` succeeded when the block was allocated with this size.
        let o = Layout::from_size_align_unchecked(l.size() + LINE, 16);
        System.dealloc(base_of(p), o);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let nl = Layout::from_size_align_unchecked(new_size, l.align());
        if !shifted(l) && !shifted(nl) {
            return System.realloc(p, l, new_size);
        }
        // Into a fresh block, then free the old one (large blocks are rarely grown).
        let q = self.alloc(nl);
        if !q.is_null() {
            std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
            self.dealloc(p, l);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_lines_and_keep_their_contents() {
        let a = LineAligned;
        for &(size, align) in &[(4096usize, 4usize), (100_000, 8), (1 << 22, 16), (10, 4)] {
            // SAFETY: non-zero sizes; every block is freed or grown with the layout it has.
            unsafe {
                let mut l = Layout::from_size_align(size, align).unwrap();
                let mut p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                assert!(size < MIN_SIZE || p as usize % LINE == 0, "{size}");
                p.write_bytes(7, size);
                // Grow, shrink below the threshold, grow again: contents kept each time.
                for ns in [size * 2, 100, size + 1] {
                    let q = a.realloc(p, l, ns);
                    let kept = l.size().min(ns);
                    assert!(std::slice::from_raw_parts(q, kept).iter().all(|&b| b == 7));
                    assert!(ns < MIN_SIZE || q as usize % LINE == 0, "{size} → {ns}");
                    q.write_bytes(7, ns);
                    (p, l) = (q, Layout::from_size_align(ns, align).unwrap());
                }
                a.dealloc(p, l);
                let p = a.alloc(Layout::from_size_align(size, align).unwrap());
                assert!(size < MIN_SIZE || p as usize % LINE == 0, "{size}");
                a.dealloc(p, Layout::from_size_align(size, align).unwrap());
            }
        }
    }
}
