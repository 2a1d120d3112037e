//! The executor's pool of released activation buffers, written once over a buffer type so the
//! buffer plan (`plan.rs`) simulates exactly the policy the executor runs.
//!
//! A fresh multi-megabyte allocation is fresh pages, and the kernel's page faults (it zeroes
//! each page) can cost more than the operator. The pool keeps the most recently released
//! buffers, up to [`POOL_SLACK`] times the largest live set seen so far (`cap`), evicting the
//! oldest. With one live set's worth, the SD 1.5 UNet's many tensor sizes kept missing (0.4 to
//! 1.2 GB of fresh pages per 512² step); with two, under 40 MB miss.

/// Buffers smaller than this (floats) are left to the allocator.
pub const POOL_MIN: usize = 1 << 14;
/// Most bytes the pool keeps.
pub const POOL_MAX_BYTES: usize = 1 << 30;
/// The pool keeps up to this many times the largest live set in released buffers.
pub const POOL_SLACK: usize = 2;

/// What the pool needs to know of a buffer: how many floats it holds.
pub trait PoolBuf {
    fn capacity_floats(&self) -> usize;
}

impl PoolBuf for Vec<f32> {
    fn capacity_floats(&self) -> usize {
        self.capacity()
    }
}

/// The plan's stand-in for a buffer: its capacity.
impl PoolBuf for usize {
    fn capacity_floats(&self) -> usize {
        *self
    }
}

#[derive(Debug)]
pub struct BufferPool<B> {
    /// The graph whose run the pool serves (see [`BufferPool::enter`]).
    graph: String,
    free: Vec<B>,
    /// Bytes held in `free`.
    pub bytes: usize,
    /// The largest live set (bytes) seen so far; the caller raises it.
    pub cap: usize,
}

impl<B> Default for BufferPool<B> {
    fn default() -> Self {
        Self {
            graph: String::new(),
            free: Vec::new(),
            bytes: 0,
            cap: 0,
        }
    }
}

impl<B: PoolBuf> BufferPool<B> {
    /// Start a run of the graph named `key`. Another graph than the last one starts from an
    /// empty pool and a zero live-set mark, as the plan simulates a graph's first run;
    /// repeated runs of one graph (denoising steps) keep the pool.
    pub fn enter(&mut self, key: &str) {
        if self.graph != key {
            self.free.clear();
            self.bytes = 0;
            self.cap = 0;
            self.graph = key.to_string();
        }
    }

    /// A pooled buffer of at least `n` floats and at most `2n` (the smallest such), or `None`
    /// (the caller allocates exactly `n`).
    pub fn take(&mut self, n: usize) -> Option<B> {
        if n < POOL_MIN {
            return None;
        }
        let best = (0..self.free.len())
            .filter(|&i| {
                let c = self.free[i].capacity_floats();
                c >= n && c <= 2 * n
            })
            .min_by_key(|&i| self.free[i].capacity_floats())?;
        let b = self.free.swap_remove(best);
        self.bytes -= b.capacity_floats() * 4;
        Some(b)
    }

    /// Keep a released buffer, evicting the oldest kept ones past the budget.
    pub fn give(&mut self, b: B) {
        let bytes = b.capacity_floats() * 4;
        let budget = (POOL_SLACK * self.cap).min(POOL_MAX_BYTES);
        if b.capacity_floats() < POOL_MIN || bytes > budget {
            return;
        }
        self.bytes += bytes;
        self.free.push(b);
        while self.bytes > budget {
            let old = self.free.remove(0);
            self.bytes -= old.capacity_floats() * 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_smallest_fit_within_twice_and_evicts_the_oldest() {
        let mut p = BufferPool::<usize> {
            cap: 4 * POOL_MIN * 4,
            ..Default::default()
        };
        // Budget: 2 × cap = 8 POOL_MIN floats.
        p.give(POOL_MIN);
        p.give(3 * POOL_MIN);
        p.give(2 * POOL_MIN);
        assert_eq!(p.bytes, 6 * POOL_MIN * 4);
        assert_eq!(p.take(POOL_MIN + 1), Some(2 * POOL_MIN));
        assert_eq!(p.take(POOL_MIN / 2), None, "below POOL_MIN: allocator");
        assert_eq!(p.take(4 * POOL_MIN), None, "nothing large enough");
        // 1 + 3 + 5 = 9 > 8: the oldest (1) goes.
        p.give(5 * POOL_MIN);
        assert_eq!(p.bytes, 8 * POOL_MIN * 4);
        assert_eq!(p.take(POOL_MIN), None, "evicted");
        assert_eq!(p.take(3 * POOL_MIN), Some(3 * POOL_MIN));
        // Larger than the whole budget: not kept.
        p.give(9 * POOL_MIN);
        assert_eq!(p.bytes, 5 * POOL_MIN * 4);
    }
}
