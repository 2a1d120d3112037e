//! Reused scratch buffers. Kernels with large temporary buffers (im2col columns, Winograd
//! tiles) take them from here instead of allocating: a fresh multi-megabyte allocation is
//! fresh pages, and faulting them in (the kernel zeroes each one) can cost more than the
//! arithmetic. Contents are stale: callers must write before they read.

use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A scratch buffer of at least `len` floats, returned to the pool on drop.
pub struct Scratch {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

/// Floats to a 64-byte cache line: buffers start on a line, so kernels storing whole 16-float
/// lanes write whole lines (and may stream them, see [`crate::simd::stream_line`]).
const ALIGN: usize = 16;

impl Scratch {
    pub fn take(len: usize) -> Self {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest buffer that fits, else the largest (grown).
        let fit = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len());
        let mut buf = match fit {
            Some(i) => pool.swap_remove(i),
            None => match (0..pool.len()).max_by_key(|&i| pool[i].len()) {
                Some(i) => pool.swap_remove(i),
                None => Vec::new(),
            },
        };
        drop(pool);
        if buf.len() < len + ALIGN {
            buf.resize(len + ALIGN, 0.0);
        }
        let off = buf.as_ptr().align_offset(ALIGN * 4).min(ALIGN);
        Self { buf, off, len }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        POOL.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
    }
}

/// Bytes the pool holds (for memory reports).
pub fn pooled_bytes() -> usize {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|b| b.len() * 4)
        .sum()
}

/// Free every pooled buffer.
pub fn release() {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_cache_lines_and_keep_their_length() {
        for len in [1usize, 17, 1000, 1 << 20, 3] {
            let mut s = Scratch::take(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % 64, 0, "take({len})");
            s.fill(1.0);
        }
    }
}
