//! Weights bound to a graph's parameter table, stored in f32, in 16 bits (bf16 / f16), or in
//! 8 bits (int8: symmetric, one f32 scale per output feature, `prism_kernels::quant`).
//!
//! 16-bit storage halves resident memory, 8-bit storage quarters it; kernels still compute in
//! f32: a narrow matrix is widened into a reused scratch buffer right before the kernel that
//! reads it, or in registers by kernels that read it as stored (`linear512`, `gemv`, the
//! Winograd filter transform; f32 accumulation throughout). Vectors (biases, norm scales)
//! always stay f32.
//!
//! Each parameter is stored in the layout the backend asks for
//! ([`Backend::weight_layout`](crate::Backend::weight_layout)), once, as it is bound: on CPUs
//! with AVX-512F the CPU backend puts matrices that the graph reads only as `Linear` /
//! `LinearGeglu` weights in 32-feature panels (`prism_kernels::linear512`): same bytes and
//! dtype, and no per-call packing. [`Weights::f32`] still gives them row-major.
//!
//! For graphs that repeat (a denoiser runs once per step), with `KernelChoice::keep_filters`,
//! f32 weights also keep each 3×3 convolution's Winograd filters once transformed
//! ([`Weights::winograd_filters`]): α² / 9 times the filter's floats (16/9 for F(2×2, 3×3), 4
//! for F(4×4, 3×3)), made on the layer's first run.

use crate::backend::WeightLayout;
use prism_core::{Error, Graph, Param, ParamId, Result, Tensor};
use prism_kernels::conv::{self, Conv2dGeom, ConvImpl};
use prism_kernels::linear512;
use prism_kernels::scratch::Scratch;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How weights are kept in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightDType {
    #[default]
    F32,
    Bf16,
    F16,
    /// 8-bit integers, one f32 scale per output feature (row of the matrix).
    I8,
}

impl WeightDType {
    pub const NAMES: [&'static str; 4] = ["f32", "bf16", "f16", "int8"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "bf16" => Some(Self::Bf16),
            "f16" => Some(Self::F16),
            "int8" => Some(Self::I8),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::I8 => "int8",
        }
    }
    /// Bytes per element of a stored matrix (int8: plus a 4-byte scale per row, see
    /// [`stored_weight_bytes`]).
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::F16 => 2,
            Self::I8 => 1,
        }
    }
}

enum Stored {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
    F16(Vec<half::f16>),
    /// Per-row scales; padded with zeros to whole panels where the matrix is in panels.
    I8 {
        q: Vec<i8>,
        scale: Vec<f32>,
    },
}

/// A weight as f32: borrowed when stored in f32, widened into scratch otherwise.
pub enum WeightRef<'a> {
    Borrowed(&'a [f32]),
    Widened(Scratch),
}

impl std::ops::Deref for WeightRef<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            WeightRef::Borrowed(s) => s,
            WeightRef::Widened(s) => s,
        }
    }
}

/// A layer's transformed Winograd filters, kept between runs.
pub enum KeptFilters {
    /// Anonymous memory mapped with its pages populated up front (one kernel call instead of
    /// a fault per 4 KiB page as the parallel transform first writes them: 0.3 against
    /// 0.5–1.2 s per GiB on the dev VM, as long as the VM's memory is already backed; beyond
    /// that every new GiB costs about 3 s either way).
    Mapped(memmap2::MmapMut),
    /// Where the mapping failed.
    Heap(Vec<f32>),
}

impl KeptFilters {
    fn zeroed(floats: usize) -> Self {
        let map = memmap2::MmapOptions::new()
            .len(floats * 4)
            .populate()
            .map_anon();
        match map {
            Ok(m) if floats > 0 => KeptFilters::Mapped(m),
            _ => KeptFilters::Heap(vec![0.0; floats]),
        }
    }
}

impl std::ops::Deref for KeptFilters {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: the mapping is page-aligned, a whole number of f32s long, zero-filled
            // (a valid f32 pattern) and lives as long as self.
            KeptFilters::Mapped(m) => unsafe {
                std::slice::from_raw_parts(m.as_ptr() as *const f32, m.len() / 4)
            },
            KeptFilters::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for KeptFilters {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            // SAFETY: as for Deref; &mut self gives exclusive access.
            KeptFilters::Mapped(m) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr() as *mut f32, m.len() / 4)
            },
            KeptFilters::Heap(v) => v,
        }
    }
}

/// One tensor per graph parameter, in the graph's parameter order, shapes checked.
pub struct Weights {
    shapes: Vec<Vec<usize>>,
    data: Vec<Stored>,
    /// Per parameter: stored in linear512 panels (see the module docs).
    panels: Vec<bool>,
    /// Winograd filters transformed on first use, by (parameter, kernel).
    kept: Mutex<HashMap<(ParamId, ConvImpl), Arc<KeptFilters>>>,
    dtype: WeightDType,
    /// Where the weights came from, for reports ("random (seed 0)" or a folder).
    pub source: String,
}

fn store(t: Tensor, dtype: WeightDType, panels: bool) -> Stored {
    if t.shape().len() < 2 {
        return Stored::F32(t.into_data());
    }
    let (out, inf) = (t.shape()[0], t.shape()[1..].iter().product());
    fn lay<T: Copy + Default + Send + Sync>(
        v: Vec<T>,
        panels: bool,
        out: usize,
        inf: usize,
    ) -> Vec<T> {
        if panels {
            linear512::pack_panels(&v, out, inf)
        } else {
            v
        }
    }
    match dtype {
        WeightDType::F32 => Stored::F32(lay(t.into_data(), panels, out, inf)),
        WeightDType::Bf16 => {
            let v = t.data().iter().map(|&v| half::bf16::from_f32(v)).collect();
            Stored::Bf16(lay(v, panels, out, inf))
        }
        WeightDType::F16 => {
            let v = t.data().iter().map(|&v| half::f16::from_f32(v)).collect();
            Stored::F16(lay(v, panels, out, inf))
        }
        WeightDType::I8 => {
            let (q, mut scale) = prism_kernels::quant::quantize_i8(t.data(), inf);
            if panels {
                scale.resize(out.div_ceil(linear512::NR) * linear512::NR, 0.0);
            }
            Stored::I8 {
                q: lay(q, panels, out, inf),
                scale,
            }
        }
    }
}

/// Which parameters the CPU backend stores in panels (see `cpu::weight_layout`).
fn panel_params(graph: &Graph, dtype: WeightDType) -> Vec<bool> {
    layout_panels(&crate::cpu::weight_layout(graph, dtype))
}

fn layout_panels(layout: &[WeightLayout]) -> Vec<bool> {
    layout
        .iter()
        .map(|l| match l {
            WeightLayout::LinearPanels => true,
            WeightLayout::RowMajor => false,
        })
        .collect()
}

impl Weights {
    /// f32 weights from tensors in parameter order.
    pub fn new(graph: &Graph, tensors: Vec<Tensor>, source: String) -> Result<Self> {
        if tensors.len() != graph.params.len() {
            return Err(Error::Weights {
                component: graph.name.clone(),
                msg: format!(
                    "{} tensors for {} parameters",
                    tensors.len(),
                    graph.params.len()
                ),
            });
        }
        let mut it = tensors.into_iter().map(Some).collect::<Vec<_>>();
        Self::from_fn(graph, WeightDType::F32, source, |i, _| {
            Ok(it[i].take().expect("each once"))
        })
    }

    /// Weights made one parameter at a time by `make(index, param)` and stored at `dtype` as
    /// they are made (so a 16-bit model never holds all its weights in f32 at once).
    pub fn from_fn(
        graph: &Graph,
        dtype: WeightDType,
        source: String,
        mut make: impl FnMut(usize, &Param) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut shapes = Vec::with_capacity(graph.params.len());
        let mut data = Vec::with_capacity(graph.params.len());
        let panels = panel_params(graph, dtype);
        for (i, p) in graph.params.iter().enumerate() {
            let t = make(i, p)?;
            if p.shape != t.shape() {
                return Err(Error::Weights {
                    component: graph.name.clone(),
                    msg: format!("{}: shape {:?}, expected {:?}", p.name, t.shape(), p.shape),
                });
            }
            shapes.push(p.shape.clone());
            data.push(store(t, dtype, panels[i]));
        }
        Ok(Self {
            shapes,
            data,
            panels,
            kept: Mutex::default(),
            dtype,
            source,
        })
    }

    /// Like [`Weights::from_fn`], making tensors in parallel (`make` must be thread-safe),
    /// laid out for the CPU backend.
    pub fn from_fn_par(
        graph: &Graph,
        dtype: WeightDType,
        source: String,
        make: impl Fn(&Param) -> Result<Tensor> + Sync,
    ) -> Result<Self> {
        Self::from_fn_par_laid(
            graph,
            dtype,
            &crate::cpu::weight_layout(graph, dtype),
            source,
            make,
        )
    }

    /// Like [`Weights::from_fn_par`], each parameter laid out as `layout` says (a backend's
    /// [`Backend::weight_layout`](crate::Backend::weight_layout)).
    pub fn from_fn_par_laid(
        graph: &Graph,
        dtype: WeightDType,
        layout: &[WeightLayout],
        source: String,
        make: impl Fn(&Param) -> Result<Tensor> + Sync,
    ) -> Result<Self> {
        if layout.len() != graph.params.len() {
            return Err(Error::Weights {
                component: graph.name.clone(),
                msg: format!(
                    "{} layouts for {} parameters",
                    layout.len(),
                    graph.params.len()
                ),
            });
        }
        let panels = layout_panels(layout);
        let stored: Vec<Stored> = graph
            .params
            .par_iter()
            .zip(&panels)
            .map(|(p, &lay)| {
                let t = make(p)?;
                if p.shape != t.shape() {
                    return Err(Error::Weights {
                        component: graph.name.clone(),
                        msg: format!("{}: shape {:?}, expected {:?}", p.name, t.shape(), p.shape),
                    });
                }
                Ok(store(t, dtype, lay))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shapes: graph.params.iter().map(|p| p.shape.clone()).collect(),
            data: stored,
            panels,
            kept: Mutex::default(),
            dtype,
            source,
        })
    }

    /// Free the tensors (a pipeline done with this component). Running a graph on released
    /// weights fails [`Weights::check_fits`].
    pub fn release(&mut self) {
        self.shapes = Vec::new();
        self.data = Vec::new();
        self.panels = Vec::new();
        self.kept = Mutex::default();
        self.source = format!("{} (released)", self.source);
    }

    /// Check that these weights (bound to one build of a model) fit `graph`, another build of
    /// the same model at other input sizes: same parameters in the same order.
    pub fn check_fits(&self, graph: &Graph) -> Result<()> {
        let ok = self.shapes.len() == graph.params.len()
            && graph
                .params
                .iter()
                .zip(&self.shapes)
                .all(|(p, s)| &p.shape == s);
        if ok {
            Ok(())
        } else {
            Err(Error::Weights {
                component: graph.name.clone(),
                msg: "weights were bound to a different parameter table".into(),
            })
        }
    }

    pub fn shape(&self, id: ParamId) -> &[usize] {
        &self.shapes[id]
    }

    /// The weight as f32, row-major (widened from 16 or 8 bits, or unpacked from panels, into
    /// scratch if stored so).
    pub fn f32(&self, id: ParamId) -> WeightRef<'_> {
        if self.panels[id] {
            let (out, inf) = (self.shapes[id][0], self.shapes[id][1]);
            let mut s = Scratch::take(out * inf);
            let mut wide = Scratch::take(linear512::panels_len(out, inf));
            self.conv(id).widen_par(&mut wide);
            linear512::unpack_panels(&wide, out, inf, &mut s);
            return WeightRef::Widened(s);
        }
        match &self.data[id] {
            Stored::F32(v) => WeightRef::Borrowed(v),
            Stored::Bf16(_) | Stored::F16(_) | Stored::I8 { .. } => {
                let w = self.conv(id);
                let mut s = Scratch::take(w.len());
                w.widen_par(&mut s);
                WeightRef::Widened(s)
            }
        }
    }

    /// A linear weight stored in linear512 panels, as stored (None: row-major).
    pub fn linear_panels(&self, id: ParamId) -> Option<prism_kernels::conv::ConvWeights<'_>> {
        self.panels[id].then(|| self.conv(id))
    }

    /// The weight as stored, for kernels that widen 16-bit weights themselves (row-major
    /// unless [`Weights::linear_panels`] says otherwise).
    pub fn conv(&self, id: ParamId) -> prism_kernels::conv::ConvWeights<'_> {
        use prism_kernels::conv::ConvWeights;
        match &self.data[id] {
            Stored::F32(v) => ConvWeights::F32(v),
            Stored::Bf16(v) => ConvWeights::Bf16(v),
            Stored::F16(v) => ConvWeights::F16(v),
            Stored::I8 { q, scale } => ConvWeights::I8 {
                q,
                scale,
                inf: self.shapes[id][1..].iter().product(),
                panels: self.panels[id],
            },
        }
    }

    /// Conv weight `id`'s filters transformed for Winograd kernel `imp` (which must run `g`),
    /// made on the first call and kept: f32 weights only (16-bit weights are kept small on
    /// purpose, and their kernels transform per call).
    pub fn winograd_filters(&self, id: ParamId, imp: ConvImpl, g: &Conv2dGeom) -> Arc<KeptFilters> {
        assert_eq!(
            self.dtype,
            WeightDType::F32,
            "kept Winograd filters need f32 weights"
        );
        // The executor runs one node at a time; a poisoned lock only means a panic elsewhere.
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.entry((id, imp))
            .or_insert_with(|| {
                let mut u = KeptFilters::zeroed(conv::winograd_filter_floats(imp, g));
                conv::winograd_filters(imp, g, self.conv(id), &mut u);
                Arc::new(u)
            })
            .clone()
    }

    /// Bytes of the Winograd filters kept so far.
    pub fn kept_filter_bytes(&self) -> usize {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.values().map(|u| u.len() * 4).sum()
    }

    /// The weight's bf16 bits, when it is stored in bf16.
    pub fn bf16_bits(&self, id: ParamId) -> Option<&[u16]> {
        if self.panels[id] {
            return None;
        }
        match &self.data[id] {
            Stored::Bf16(v) => Some(half::slice::HalfFloatSliceExt::reinterpret_cast(&v[..])),
            _ => None,
        }
    }

    /// How matrices are stored.
    pub fn dtype(&self) -> WeightDType {
        self.dtype
    }

    /// Parameters (elements) of the model's tensors (0 after [`Weights::release`]).
    pub fn param_count(&self) -> usize {
        self.shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Resident bytes of the stored weights.
    pub fn bytes(&self) -> usize {
        self.data
            .iter()
            .map(|d| match d {
                Stored::F32(v) => v.len() * 4,
                Stored::Bf16(v) => v.len() * 2,
                Stored::F16(v) => v.len() * 2,
                Stored::I8 { q, scale } => q.len() + scale.len() * 4,
            })
            .sum()
    }
}

/// Bytes of the largest f32 copy a run of `graph` makes of one weight stored as `dtype`
/// (0 for f32): kernels that do not read narrow weights as stored (token tables, convolutions
/// through im2col, 3-D convolutions) widen the whole matrix into pooled scratch first; Linear
/// weights in panels are widened in registers. An upper bound: 3×3 convolutions that run
/// Winograd widen one output channel at a time but are counted whole.
pub fn widened_weight_bytes(graph: &Graph, dtype: WeightDType) -> u64 {
    if dtype == WeightDType::F32 {
        return 0;
    }
    let layout = crate::cpu::weight_layout(graph, dtype);
    graph
        .params
        .iter()
        .zip(&layout)
        .filter(|(p, l)| p.shape.len() >= 2 && **l == WeightLayout::RowMajor)
        .map(|(p, _)| p.shape.iter().product::<usize>() as u64 * 4)
        .max()
        .unwrap_or(0)
}

/// Bytes `graph`'s parameters take stored as `dtype`: matrices and tables at the dtype's size
/// (int8: plus an f32 scale per row), vectors (norm scales, biases) in f32 whatever the dtype,
/// as [`Weights`] keeps them (panel padding aside).
pub fn stored_weight_bytes(graph: &Graph, dtype: WeightDType) -> u64 {
    graph
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product::<usize>() as u64;
            if p.shape.len() < 2 {
                n * 4
            } else if dtype == WeightDType::I8 {
                n + 4 * p.shape[0] as u64
            } else {
                n * dtype.size() as u64
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_core::{DType, GraphBuilder};

    /// A token table (read by an embedding) and two Linear weights, one of them 40 wide (not a
    /// whole number of panels).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("t");
        let ids = b.input("ids", &[1, 3], DType::I64);
        let h = b.token_embedding("emb", ids, 11, 8).unwrap();
        let h = b.linear("a", h, 40, true).unwrap();
        let h = b.linear("b", h, 64, false).unwrap();
        b.output("y", h);
        b.finish().expect("valid graph")
    }

    #[test]
    fn linear_weights_go_to_panels_and_still_read_back_row_major() {
        let g = graph();
        for dtype in [
            WeightDType::F32,
            WeightDType::Bf16,
            WeightDType::F16,
            WeightDType::I8,
        ] {
            let mut k = 0u32;
            let w = Weights::from_fn(&g, dtype, "test".into(), |_, p| {
                let n = p.shape.iter().product::<usize>();
                let v = (0..n)
                    .map(|_| {
                        k += 1;
                        (k % 97) as f32 / 8.0
                    })
                    .collect();
                Ok(Tensor::new(p.shape.clone(), v).unwrap())
            })
            .unwrap();
            let mut k = 0u32;
            for (i, p) in g.params.iter().enumerate() {
                let n = p.shape.iter().product::<usize>();
                // Values k/8 with k < 97 are exact in bf16 and f16.
                let want: Vec<f32> = (0..n)
                    .map(|_| {
                        k += 1;
                        (k % 97) as f32 / 8.0
                    })
                    .collect();
                let got = w.f32(i);
                if dtype == WeightDType::I8 && p.shape.len() >= 2 {
                    // Within half a step (1/254 of the row's largest magnitude) of each value.
                    let inf = n / p.shape[0];
                    for (g, r) in got.chunks(inf).zip(want.chunks(inf)) {
                        let amax = r.iter().fold(0f32, |m, v| m.max(v.abs()));
                        for (a, b) in g.iter().zip(r) {
                            assert!((a - b).abs() <= amax / 254.0 * 1.0001, "{}", p.name);
                        }
                    }
                } else {
                    assert_eq!(&*got, &want[..], "{} ({})", p.name, dtype.name());
                }
                let linear = p.shape.len() == 2 && p.name != "emb.weight";
                assert_eq!(
                    w.linear_panels(i).is_some(),
                    linear && panel_params(&g, dtype)[i],
                    "{}",
                    p.name
                );
                if w.linear_panels(i).is_some() {
                    assert!(w.bf16_bits(i).is_none());
                }
            }
            if linear512::available() {
                let packed = (0..g.params.len()).filter(|&i| w.linear_panels(i).is_some());
                assert_eq!(packed.count(), 2, "both Linear weights in panels");
            }
        }
    }
}
