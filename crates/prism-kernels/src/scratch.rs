//! Reused scratch buffers. Kernels with large temporary buffers (im2col columns, Winograd
//! tiles) take them from here instead of allocating: a fresh multi-megabyte allocation is
//! fresh pages, and faulting them in (the kernel zeroes each one) can cost more than the
//! arithmetic. Contents are stale: callers must write before they read.

use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A scratch buffer of at least `len` floats, returned to the pool on drop.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

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
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Self { buf, len }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
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
