//! The kernels' tunable sizes and thresholds, in one place, chosen once per process.
//!
//! These are the numbers that were fitted to a machine (tile and chunk sizes, scratch budgets,
//! the crossovers of the automatic kernel choices), as opposed to the architectural constants
//! baked into intrinsics code (register-tile shapes such as `flash512`'s 12-key × 32-row score
//! tile or `linear512`'s 14 × 32 tile, lane counts, array lengths), which stay `const` beside
//! that code. Kernels read [`tuning()`]; the scratch-size functions the memory plan calls
//! (`conv::scratch_requests_for`, `attention::workspace_floats`, …) read the same values, so
//! the plan and the kernels agree.
//!
//! [`tuning()`] is [`Tuning::for_cpu`] of the SIMD level in use ([`crate::simd::level`]) and
//! of the cache sizes Linux reports ([`CacheSizes::detect`]). The values were fitted on a
//! 2-core AVX-512 Intel Xeon (48 KiB L1d, 2 MiB L2); [`Tuning::MEASURED`] holds them, and it is
//! what that Xeon, the AMD EPYC this was reorganized on (48 KiB L1d, 1 MiB L2, 32 MiB L3), any
//! CPU with an L2 of 1 MiB or more, and any CPU whose caches cannot be read get. The history
//! behind each value is in `docs/performance.md`, "Design measurements behind kernel
//! constants".
//!
//! Values derived from cache sizes: only [`Tuning::linear_y_block_bytes`], and only downward
//! (a smaller L2 gives a smaller block; nothing grows past the measured value, for which there
//! is no measurement). Values that fix the order of floating-point sums (the input chunk of the
//! linear tile, the flash key tiles, the norms' statistics runs) are not derived from caches
//! even where they are cache fits: the same SIMD level then gives the same bits on every CPU.
//!
//! Kept `const` although tunable, because `prism-runtime`'s memory plan reads them as public
//! constants to size scratch: [`crate::matmul::GEGLU_ROWS`] and
//! [`crate::linear512::GEGLU_BLOCK`] (with the GEGLU value panels per block behind it).

use crate::simd::Level;
use std::sync::OnceLock;

/// Data-cache sizes (bytes) of one cache instance at each level, as Linux reports them for CPU
/// 0 (`/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}`); `None` where unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1d: Option<usize>,
    pub l2: Option<usize>,
    pub l3: Option<usize>,
}

impl CacheSizes {
    /// Read the sizes from sysfs (all `None` off Linux or where missing). A few small files,
    /// read into stack buffers: nothing is allocated, so the first use of [`tuning()`] leaves
    /// the heap as it found it.
    pub fn detect() -> Self {
        let mut c = CacheSizes::default();
        for i in 0..16 {
            let (mut lb, mut tb, mut sb) = ([0u8; 32], [0u8; 32], [0u8; 32]);
            let Some(level) = read_cache_file(i, "level", &mut lb) else {
                break; // no index i: no more caches
            };
            let (Some(kind), Some(size)) = (
                read_cache_file(i, "type", &mut tb),
                read_cache_file(i, "size", &mut sb),
            ) else {
                continue;
            };
            let Some(size) = parse_size(size) else {
                continue;
            };
            match (level.trim(), kind.trim()) {
                ("1", "Data" | "Unified") => c.l1d = Some(size),
                ("2", "Data" | "Unified") => c.l2 = Some(size),
                ("3", "Data" | "Unified") => c.l3 = Some(size),
                _ => {}
            }
        }
        c
    }
}

/// The text of `/sys/devices/system/cpu/cpu0/cache/index{i}/{file}` (at most `buf`'s length),
/// read without allocating.
fn read_cache_file<'a>(i: usize, file: &str, buf: &'a mut [u8; 32]) -> Option<&'a str> {
    use std::io::{Read, Write};
    let mut path = [0u8; 96];
    let len = {
        let mut w = &mut path[..];
        write!(w, "/sys/devices/system/cpu/cpu0/cache/index{i}/{file}").ok()?;
        96 - w.len()
    };
    let path = std::str::from_utf8(&path[..len]).ok()?;
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// A sysfs cache size ("48K", "1024K", "32M", "512") in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.trim().parse().ok()?;
    n.checked_mul(mul).filter(|&b| b > 0)
}

/// The kernels' tunable sizes and thresholds (see the module docs). Sizes are in elements
/// (f32) unless a name says bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    // ---- element-wise and norms ----
    /// Minimum elements per parallel task of the memory-bound element-wise loops, norms and
    /// copies (`lib.rs`, `elementwise.rs`, `norm.rs`): large enough that a task's work
    /// outweighs rayon's per-task cost, small enough that every thread gets a share.
    pub par_chunk: usize,
    /// Elements per statistics run of the norms (`norm.rs`): each run is summed twice in f32
    /// lanes while it sits in L1 (16 KiB). It also fixes the order of the f32 partial sums,
    /// so it is not derived from the L1 size.
    pub norm_stat_chunk: usize,

    // ---- matrix products ----
    /// A `Par::Pool` product runs on the `gemm` crate's threads only where m · n · k exceeds
    /// this (`matmul.rs`); smaller ones run on the calling thread, where splitting them costs
    /// more than it saves.
    pub gemm_pool_threshold: usize,
    /// Largest chunk of the input axis per pass of the AVX-512 linear tile (`linear512.rs`):
    /// a panel chunk (this × 32 floats, 32 KiB) stays in L1 while every row of the task
    /// passes over it. It fixes the order of the sums, so it is not derived from the L1 size.
    pub linear_kc: usize,
    /// Rows per task of the AVX-512 linear tile above [`Tuning::linear_one_block_rows`]
    /// (`linear512.rs`; a multiple of its 14-row tile): a task's chunk of x rows (this ×
    /// [`Tuning::linear_kc`] floats, 224 KiB) stays in L2 for all its panels.
    pub linear_task_rows: usize,
    /// Products of at most this many rows run as one row block (`linear512.rs`; a multiple of
    /// 14, at most `linear512::ONE_BLOCK_MAX`, which sizes the GEGLU scratch block), so their
    /// large weights stream from memory once instead of once per block of
    /// [`Tuning::linear_task_rows`] rows.
    pub linear_one_block_rows: usize,
    /// Bytes of y one task of the AVX-512 linear tile keeps between input chunks
    /// (`linear512.rs`): runs of panels are split narrow enough that a task's block of y
    /// stays in L2 beside its chunk of x rows. From the L2 size: 3/8 of one L2 instance,
    /// capped at 384 KiB (the measured value: the cap on the 2 MiB-L2 Xeon it was fitted on,
    /// exactly 3/8 of this EPYC's 1 MiB L2; only an L2 under 1 MiB changes it); 384 KiB if
    /// unreadable.
    pub linear_y_block_bytes: usize,
    /// Rows of x per task of the AVX-512 BF16 linear kernel (`bf16dot.rs`; a multiple of its
    /// 14-row tile): each task converts its rows to bf16 pairs once and runs them over every
    /// W panel.
    pub bf16_task_rows: usize,
    /// bf16 Linear weights (kept in `linear512` panels) go through the BF16 dot-product
    /// kernel (`bf16dot.rs`, repacked into bf16 pairs per call) from this many rows; fewer
    /// rows run the panel tile, which widens them in registers: below it the repacking costs
    /// more than the dot products save (measured on the UNet; docs/performance.md).
    pub bf16_dot_min_rows: usize,

    // ---- attention ----
    /// [`crate::attention::AttentionImpl::auto`] picks flash from this many keys (with
    /// [`Tuning::attn_flash_min_queries`]); below, naive: too few keys to tile.
    pub attn_flash_min_keys: usize,
    /// [`crate::attention::AttentionImpl::auto`] picks flash from this many queries (with
    /// [`Tuning::attn_flash_min_keys`]); below, naive.
    pub attn_flash_min_queries: usize,
    /// Query rows per task of the AVX-512 / AVX2 flash kernel (`flash512.rs`; a multiple of its
    /// 32-row groups): bounds each thread's tiles (transposed queries and output, this × D
    /// floats each) and sets the task count (batch · heads · ⌈Lq / this⌉).
    pub flash512_bq: usize,
    /// Keys per tile of the AVX-512 / AVX2 flash kernel (`flash512.rs`; a multiple of its 12-key
    /// register tile): a group's scores (this × 32 floats, 15 KiB) stay in L1 beside the keys
    /// they are made from. It fixes where the online softmax rescales, so it is not derived
    /// from the L1 size.
    pub flash512_bk: usize,
    /// Query rows per task of the GEMM-tiled flash kernel (`attention.rs`, any CPU, and every
    /// biased flash call): with [`Tuning::flash_gemm_bk`], the scores tile (256 KiB) fits L2.
    pub flash_gemm_bq: usize,
    /// Keys per tile of the GEMM-tiled flash kernel (`attention.rs`); see
    /// [`Tuning::flash_gemm_bq`].
    pub flash_gemm_bk: usize,
    /// Query rows of scores one fused-softmax task holds (`attention.rs`): bounds the
    /// per-thread scores (this × Lk floats).
    pub fused_softmax_rows: usize,
    /// Rows of probabilities per product tile of the fused-softmax kernel (`attention.rs`):
    /// the normalized tile (this × Lk floats) stays in cache until V multiplies it.
    pub fused_softmax_tile: usize,

    // ---- convolution ----
    /// Column-buffer budget (floats) of im2col (`conv/im2col.rs`): output rows are taken in
    /// bands whose columns fit it, and the whole-batch columns of small planes must fit it.
    /// A memory bound (64 MiB), not a cache fit.
    pub conv_col_budget: usize,
    /// Output planes below this many pixels run im2col as one product over the whole batch
    /// (`conv/im2col.rs`): the GEMM runs one wide product far better than n narrow ones.
    pub conv_batched_plane: usize,
    /// Scratch budget (floats) of Winograd's transformed input and output tiles per chunk of
    /// tiles (`conv/winograd.rs`). A memory bound (64 MiB), not a cache fit.
    pub conv_wino_budget: usize,
    /// Winograd layers whose transformed filters take at most this many bytes run fused
    /// (`conv/winograd.rs`, `winograd_fused`): every thread reads all of them once per group
    /// of 32 tiles, so they must stay in the shared cache (a third of the 32 MiB L3 of the
    /// Zen 5 EPYC it was measured on; not derived from the detected L3, since the choice
    /// fixes the order of the products' sums: see the module docs). 10 MiB with AVX-512 (the
    /// 256-channel layers' 9.4 MB in, the 320-channel ones' 14.7 MB, no faster fused, out),
    /// 4 MiB with AVX2 (128 channels: 14% faster fused; with 256 the layer ran 6% faster but
    /// the VAE decode not measurably), 0 (never) for portable code, whose products have no
    /// register tiles.
    pub conv_wino_fused_bytes: usize,
    /// [`crate::conv::ConvImpl::auto_for`] considers Winograd only with at least this many
    /// input and output channels: below, the transforms cost more than the products save.
    pub conv_wino_min_channels: usize,
    /// [`crate::conv::ConvImpl::auto_for`] picks F(4×4, 3×3) from this many 4×4 output tiles
    /// (batch included): enough to amortize the per-call filter transform.
    pub conv_wino4_min_tiles: usize,
    /// [`crate::conv::ConvImpl::auto_for`] picks F(2×2, 3×3) from this many 2×2 output tiles
    /// when the filters are transformed on every call.
    pub conv_wino2_min_tiles: usize,
    /// [`crate::conv::ConvImpl::auto_for`] picks F(2×2, 3×3) from this many 2×2 output tiles
    /// when the filters are transformed once and kept: no per-call transform to amortize.
    pub conv_wino2_min_tiles_kept: usize,
}

impl Tuning {
    /// The measured values (see the module docs): what every level gets before any value is
    /// derived from cache sizes.
    pub const MEASURED: Tuning = Tuning {
        par_chunk: 1 << 14,
        norm_stat_chunk: 4096,
        gemm_pool_threshold: 48 * 48 * 48,
        linear_kc: 256,
        linear_task_rows: 16 * 14,
        linear_one_block_rows: 40 * 14,
        linear_y_block_bytes: 384 << 10,
        bf16_task_rows: 8 * 14,
        bf16_dot_min_rows: 4096,
        attn_flash_min_keys: 128,
        attn_flash_min_queries: 32,
        flash512_bq: 256,
        flash512_bk: 120,
        flash_gemm_bq: 256,
        flash_gemm_bk: 256,
        fused_softmax_rows: 256,
        fused_softmax_tile: 16,
        conv_col_budget: 16 << 20,
        conv_batched_plane: 256,
        conv_wino_budget: 16 << 20,
        conv_wino_fused_bytes: 10 << 20,
        conv_wino_min_channels: 32,
        conv_wino4_min_tiles: 64,
        conv_wino2_min_tiles: 128,
        conv_wino2_min_tiles_kept: 32,
    };

    /// The tuning for a CPU running at `level` with caches `caches`. Every level starts from
    /// [`Tuning::MEASURED`]: most values were measured on AVX-512 CPUs only, and those that
    /// matter at the other levels (the element-wise and norm chunks, the GEMM-tiled flash
    /// and fused softmax tiles, the im2col and Winograd choices) have no other measurement.
    /// The one value of its own per level is [`Tuning::conv_wino_fused_bytes`] (measured with
    /// AVX2 forced; portable code never fuses).
    pub fn for_cpu(level: Level, caches: CacheSizes) -> Tuning {
        let mut t = Tuning::MEASURED;
        match level {
            Level::Avx512 => {}
            Level::Avx2 => t.conv_wino_fused_bytes = 4 << 20,
            Level::Portable => t.conv_wino_fused_bytes = 0,
        }
        if let Some(l2) = caches.l2 {
            t.linear_y_block_bytes = (3 * l2 / 8).clamp(1, Tuning::MEASURED.linear_y_block_bytes);
        }
        t.check();
        t
    }

    /// Panic unless the values meet the kernels' constraints (multiples of register tiles,
    /// bounds of scratch sized by public constants).
    pub fn check(&self) {
        let positive = [
            self.par_chunk,
            self.norm_stat_chunk,
            self.linear_kc,
            self.linear_task_rows,
            self.linear_one_block_rows,
            self.linear_y_block_bytes,
            self.bf16_task_rows,
            self.bf16_dot_min_rows,
            self.flash512_bq,
            self.flash512_bk,
            self.flash_gemm_bq,
            self.flash_gemm_bk,
            self.fused_softmax_rows,
            self.fused_softmax_tile,
            self.conv_col_budget,
            self.conv_wino_budget,
        ];
        assert!(
            positive.iter().all(|&v| v > 0),
            "tuning: zero size {self:?}"
        );
        let mr = crate::linear512::MR;
        assert!(
            self.linear_task_rows % mr == 0 && self.linear_one_block_rows % mr == 0,
            "tuning: linear row blocks must be multiples of {mr}"
        );
        let max = crate::linear512::ONE_BLOCK_MAX;
        assert!(
            self.linear_task_rows <= max && self.linear_one_block_rows <= max,
            "tuning: linear row blocks above {max} rows overflow the GEGLU scratch block"
        );
        assert!(
            self.bf16_task_rows % crate::bf16dot::MR == 0,
            "tuning: bf16 task rows must be a multiple of {}",
            crate::bf16dot::MR
        );
        assert!(
            self.flash512_bk % crate::flash512::KB == 0,
            "tuning: flash512 key tile must be a multiple of {}",
            crate::flash512::KB
        );
        assert!(
            self.flash512_bq % crate::flash512::G == 0,
            "tuning: flash512 query rows must be a multiple of {}",
            crate::flash512::G
        );
    }
}

static TUNING: OnceLock<Tuning> = OnceLock::new();

/// The tuning of this process: [`Tuning::for_cpu`] of [`crate::simd::level`] and the detected
/// [`CacheSizes`], chosen at first use.
pub fn tuning() -> &'static Tuning {
    TUNING.get_or_init(|| Tuning::for_cpu(crate::simd::level(), CacheSizes::detect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: usize = 1 << 10;
    const MI: usize = 1 << 20;

    fn caches(l1d: usize, l2: usize, l3: usize) -> CacheSizes {
        CacheSizes {
            l1d: Some(l1d),
            l2: Some(l2),
            l3: Some(l3),
        }
    }

    #[test]
    fn measured_values_are_the_kernels_former_constants() {
        let t = &Tuning::MEASURED;
        assert_eq!(t.par_chunk, 16_384);
        assert_eq!(t.norm_stat_chunk, 4096);
        assert_eq!(t.gemm_pool_threshold, 110_592);
        assert_eq!(t.linear_kc, 256);
        assert_eq!(t.linear_task_rows, 224);
        assert_eq!(t.linear_one_block_rows, 560);
        assert_eq!(t.linear_y_block_bytes, 393_216);
        assert_eq!(t.bf16_task_rows, 112);
        assert_eq!((t.attn_flash_min_keys, t.attn_flash_min_queries), (128, 32));
        assert_eq!((t.flash512_bq, t.flash512_bk), (256, 120));
        assert_eq!((t.flash_gemm_bq, t.flash_gemm_bk), (256, 256));
        assert_eq!((t.fused_softmax_rows, t.fused_softmax_tile), (256, 16));
        assert_eq!(t.conv_col_budget, 16 * MI);
        assert_eq!(t.conv_batched_plane, 256);
        assert_eq!(t.conv_wino_budget, 16 * MI);
        assert_eq!(t.conv_wino_fused_bytes, 10 * MI);
        assert_eq!(t.conv_wino_min_channels, 32);
        assert_eq!(t.conv_wino4_min_tiles, 64);
        assert_eq!(t.conv_wino2_min_tiles, 128);
        assert_eq!(t.conv_wino2_min_tiles_kept, 32);
        t.check();
    }

    #[test]
    fn measuring_machines_and_unreadable_caches_get_the_measured_values() {
        let machines = [
            caches(48 * KI, MI, 32 * MI),      // this AMD EPYC
            caches(48 * KI, 2 * MI, 105 * MI), // the Xeon of docs/performance.md
            CacheSizes::default(),             // unreadable
        ];
        for c in machines {
            for (lvl, fused) in [
                (Level::Avx512, 10 * MI),
                (Level::Avx2, 4 * MI),
                (Level::Portable, 0),
            ] {
                let want = Tuning {
                    conv_wino_fused_bytes: fused,
                    ..Tuning::MEASURED
                };
                assert_eq!(Tuning::for_cpu(lvl, c), want, "{lvl:?} {c:?}");
            }
        }
    }

    #[test]
    fn a_smaller_l2_shrinks_only_the_linear_y_block() {
        let t = Tuning::for_cpu(Level::Avx512, caches(32 * KI, 512 * KI, 16 * MI));
        assert_eq!(t.linear_y_block_bytes, 192 * KI);
        let back = Tuning {
            linear_y_block_bytes: Tuning::MEASURED.linear_y_block_bytes,
            ..t
        };
        assert_eq!(back, Tuning::MEASURED);
    }

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_size("48K\n"), Some(48 * KI));
        assert_eq!(parse_size("1024K"), Some(MI));
        assert_eq!(parse_size("32M"), Some(32 * MI));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn this_process_tuning_is_valid() {
        let (t, c) = (tuning(), CacheSizes::detect());
        t.check();
        eprintln!("{:?} {c:?}\n{t:#?}", crate::simd::level());
        // Where the L2 is 1 MiB or more (or unreadable), nothing differs from the measured
        // values: this EPYC and the Xeon of docs/performance.md included.
        if c.l2.is_none_or(|l2| l2 >= MI) {
            assert_eq!(*t, Tuning::MEASURED);
        }
    }
}
