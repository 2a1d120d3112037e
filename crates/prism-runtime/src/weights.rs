//! Weights bound to a graph's parameter table, stored in f32 or in 16 bits (bf16 / f16).
//!
//! 16-bit storage halves resident memory; kernels still compute in f32: a 16-bit matrix is
//! widened into a reused scratch buffer right before the kernel that reads it (f32
//! accumulation throughout). Vectors (biases, norm scales) always stay f32.

use prism_core::{DType, Error, Graph, Param, ParamId, Result, Tensor};
use prism_kernels::scratch::Scratch;
use rayon::prelude::*;

/// How weights are kept in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightDType {
    #[default]
    F32,
    Bf16,
    F16,
}

impl WeightDType {
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "f16"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "bf16" => Some(Self::Bf16),
            "f16" => Some(Self::F16),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
    /// Bytes per element of a stored matrix.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::F16 => 2,
        }
    }
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

enum Stored {
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
    F16(Vec<half::f16>),
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

/// One tensor per graph parameter, in the graph's parameter order, shapes checked.
pub struct Weights {
    shapes: Vec<Vec<usize>>,
    data: Vec<Stored>,
    dtype: WeightDType,
    /// Where the weights came from, for reports ("random (seed 0)" or a folder).
    pub source: String,
}

fn store(t: Tensor, dtype: WeightDType) -> Stored {
    if t.shape().len() < 2 {
        return Stored::F32(t.into_data());
    }
    match dtype {
        WeightDType::F32 => Stored::F32(t.into_data()),
        WeightDType::Bf16 => {
            Stored::Bf16(t.data().iter().map(|&v| half::bf16::from_f32(v)).collect())
        }
        WeightDType::F16 => Stored::F16(t.data().iter().map(|&v| half::f16::from_f32(v)).collect()),
    }
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
        for (i, p) in graph.params.iter().enumerate() {
            let t = make(i, p)?;
            if p.shape != t.shape() {
                return Err(Error::Weights {
                    component: graph.name.clone(),
                    msg: format!("{}: shape {:?}, expected {:?}", p.name, t.shape(), p.shape),
                });
            }
            shapes.push(p.shape.clone());
            data.push(store(t, dtype));
        }
        Ok(Self {
            shapes,
            data,
            dtype,
            source,
        })
    }

    /// Like [`Weights::from_fn`], making tensors in parallel (`make` must be thread-safe).
    pub fn from_fn_par(
        graph: &Graph,
        dtype: WeightDType,
        source: String,
        make: impl Fn(&Param) -> Result<Tensor> + Sync,
    ) -> Result<Self> {
        let stored: Vec<Stored> = graph
            .params
            .par_iter()
            .map(|p| {
                let t = make(p)?;
                if p.shape != t.shape() {
                    return Err(Error::Weights {
                        component: graph.name.clone(),
                        msg: format!("{}: shape {:?}, expected {:?}", p.name, t.shape(), p.shape),
                    });
                }
                Ok(store(t, dtype))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shapes: graph.params.iter().map(|p| p.shape.clone()).collect(),
            data: stored,
            dtype,
            source,
        })
    }

    /// Free the tensors (a pipeline done with this component). Running a graph on released
    /// weights fails [`Weights::check_fits`].
    pub fn release(&mut self) {
        self.shapes = Vec::new();
        self.data = Vec::new();
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

    /// The weight as f32 (widened from 16 bits into scratch if stored so).
    pub fn f32(&self, id: ParamId) -> WeightRef<'_> {
        match &self.data[id] {
            Stored::F32(v) => WeightRef::Borrowed(v),
            Stored::Bf16(v) => {
                let mut s = Scratch::take(v.len());
                widen(v, &mut s, |x| x.to_f32());
                WeightRef::Widened(s)
            }
            Stored::F16(v) => {
                let mut s = Scratch::take(v.len());
                widen(v, &mut s, |x| x.to_f32());
                WeightRef::Widened(s)
            }
        }
    }

    /// The weight as stored, for kernels that widen 16-bit weights themselves.
    pub fn conv(&self, id: ParamId) -> prism_kernels::conv::ConvWeights<'_> {
        use prism_kernels::conv::ConvWeights;
        match &self.data[id] {
            Stored::F32(v) => ConvWeights::F32(v),
            Stored::Bf16(v) => ConvWeights::Bf16(v),
            Stored::F16(v) => ConvWeights::F16(v),
        }
    }

    /// The weight's bf16 bits, when it is stored in bf16.
    pub fn bf16_bits(&self, id: ParamId) -> Option<&[u16]> {
        match &self.data[id] {
            Stored::Bf16(v) => Some(half::slice::HalfFloatSliceExt::reinterpret_cast(&v[..])),
            _ => None,
        }
    }

    /// How matrices are stored.
    pub fn dtype(&self) -> WeightDType {
        self.dtype
    }

    /// Resident bytes of the stored weights.
    pub fn bytes(&self) -> usize {
        self.data
            .iter()
            .map(|d| match d {
                Stored::F32(v) => v.len() * 4,
                Stored::Bf16(v) => v.len() * 2,
                Stored::F16(v) => v.len() * 2,
            })
            .sum()
    }
}

fn widen<T: Copy + Sync>(src: &[T], dst: &mut [f32], f: impl Fn(T) -> f32 + Sync) {
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| {
            for (o, &v) in d.iter_mut().zip(s) {
                *o = f(v);
            }
        });
}
