//! Matrix products through the `gemm` crate, with a safe strided interface.

use gemm::Parallelism;

/// A strided read-only matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major contiguous (rows × cols).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major (cols × rows) matrix, seen as (rows × cols).
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }
    fn check(&self, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
        assert!(
            last < self.data.len(),
            "{what}: view {}x{} (rs {}, cs {}) exceeds buffer of {}",
            self.rows,
            self.cols,
            self.rs,
            self.cs,
            self.data.len()
        );
    }
}

/// Whether a product runs on the whole thread pool or on the calling thread only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    Seq,
    Pool,
}

/// dst (m × n, row stride `dst_rs`, column stride 1) = [dst +] a (m × k) · b (k × n).
///
/// With `accumulate`, the product is added to what dst holds (used to start from a bias).
pub fn matmul(dst: &mut [f32], dst_rs: usize, a: MatRef, b: MatRef, accumulate: bool, par: Par) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions {k} and {}", b.rows);
    a.check("matmul lhs");
    b.check("matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "matmul: dst {m}x{n} (rs {dst_rs}) exceeds buffer of {}",
        dst.len()
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the bounds of all three views were checked above; dst is borrowed mutably and
    // cannot alias a or b.
    unsafe { matmul_ptr(dst.as_mut_ptr(), dst_rs, a, b, accumulate, par) }
}

/// [`matmul`] into a raw destination, for callers that hand disjoint strided blocks of one
/// buffer to parallel tasks.
///
/// # Safety
/// `dst` must be valid for writes of rows 0..m (stride `dst_rs`), columns 0..n, and no other
/// thread may access that region during the call. The views must be in bounds.
pub unsafe fn matmul_ptr(
    dst: *mut f32,
    dst_rs: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
    par: Par,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert_eq!(b.rows, k);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let parallelism = match par {
        Par::Seq => Parallelism::None,
        Par::Pool => {
            let t = rayon::current_num_threads();
            if t > 1 && m * n * k > crate::tuning::tuning().gemm_pool_threshold {
                Parallelism::Rayon(t)
            } else {
                Parallelism::None
            }
        }
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// y (rows × out) = x (rows × in) · Wᵀ + bias, W row-major (out × in).
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    linear_res(x, w, bias, None, rows, inf, out, y)
}

/// Rows of the GEGLU projection computed per block (the block's 2n-wide product stays in
/// cache-sized scratch). A tunable kept `const` (not in [`crate::tuning::Tuning`]):
/// `prism-runtime`'s memory plan reads it to size this scratch.
pub const GEGLU_ROWS: usize = 512;

/// Fused GEGLU projection: y (rows × n) = h[:, :n] · gelu(h[:, n:]), h = x · Wᵀ + b with W
/// (2n × in), a block of rows at a time.
pub fn linear_geglu(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    rows: usize,
    inf: usize,
    n: usize,
    y: &mut [f32],
) {
    assert_eq!(w.len(), 2 * n * inf);
    linear_geglu_with(x, rows, inf, n, y, |xb, r, hb| {
        linear_res(xb, w, Some(b), None, r, inf, 2 * n, hb)
    })
}

/// [`linear_geglu`] with the projection h = x · Wᵀ + b of a row block done by `proj(x_block,
/// rows, h_block)` (the bf16 path passes its own).
pub fn linear_geglu_with(
    x: &[f32],
    rows: usize,
    inf: usize,
    n: usize,
    y: &mut [f32],
    proj: impl Fn(&[f32], usize, &mut [f32]),
) {
    assert_eq!(x.len(), rows * inf);
    assert_eq!(y.len(), rows * n);
    let mut h = crate::scratch::Scratch::take(GEGLU_ROWS * 2 * n);
    let mut r0 = 0;
    while r0 < rows {
        let r = GEGLU_ROWS.min(rows - r0);
        let hb = &mut h[..r * 2 * n];
        proj(&x[r0 * inf..(r0 + r) * inf], r, hb);
        crate::elementwise::geglu(hb, n, &mut y[r0 * n..(r0 + r) * n]);
        r0 += r;
    }
}

/// Fill y (rows × out) with the bias and residual a linear layer adds to its product; returns
/// whether anything was written (else the product overwrites y).
fn init_output(y: &mut [f32], out: usize, bias: Option<&[f32]>, residual: Option<&[f32]>) -> bool {
    match (residual, bias) {
        (Some(res), _) => {
            assert_eq!(res.len(), y.len(), "linear residual length");
            y.copy_from_slice(res);
            if let Some(b) = bias {
                for r in y.chunks_exact_mut(out) {
                    for (v, bb) in r.iter_mut().zip(b) {
                        *v += bb;
                    }
                }
            }
            true
        }
        (None, Some(b)) => {
            for r in y.chunks_exact_mut(out) {
                r.copy_from_slice(b);
            }
            true
        }
        (None, None) => false,
    }
}

/// [`linear`] plus a residual of y's shape (a fused residual add).
#[allow(clippy::too_many_arguments)]
pub fn linear_res(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), rows * inf);
    assert_eq!(w.len(), out * inf);
    assert_eq!(y.len(), rows * out);
    let acc = init_output(y, out, bias, residual);
    matmul(
        y,
        out,
        MatRef::row_major(x, rows, inf),
        MatRef::transposed(w, inf, out),
        acc,
        Par::Pool,
    );
}

/// [`linear_geglu`] on weights stored in [`crate::linear512`] panels: fused in the register
/// tile where n is a whole number of panels, else a row block at a time through scratch.
pub fn linear_geglu_panels(
    x: &[f32],
    w: &crate::conv::ConvWeights,
    b: &[f32],
    rows: usize,
    inf: usize,
    n: usize,
    y: &mut [f32],
) {
    if crate::linear512::geglu_fits(n) {
        crate::linear512::linear_geglu(x, w, b, rows, inf, n, y);
    } else {
        linear_geglu_with(x, rows, inf, n, y, |xb, r, hb| {
            crate::linear512::linear(xb, w, Some(b), None, r, inf, 2 * n, hb)
        });
    }
}

/// [`linear_res`] on bf16 weight bits with AVX-512 BF16 dot products ([`crate::bf16dot`]; the
/// CPU must have them).
#[allow(clippy::too_many_arguments)]
pub fn linear_res_bf16(
    x: &[f32],
    w: &[u16],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    let packed = crate::bf16dot::pack_weights(w, out, inf);
    linear_res_bf16_packed(x, &packed, bias, residual, rows, out, y)
}

/// [`linear_res_bf16`] with the weights already packed (the GEGLU projection packs once for
/// all its row blocks).
pub fn linear_res_bf16_packed(
    x: &[f32],
    w: &crate::bf16dot::PackedWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    out: usize,
    y: &mut [f32],
) {
    if !init_output(y, out, bias, residual) {
        y.fill(0.0);
    }
    crate::bf16dot::linear_acc_packed(x, w, rows, y);
}
