//! Host tensors. prism computes in f32 (16-bit weights are widened on load or in registers);
//! token ids stay integers (i64) from the tokenizer to the embedding lookup.

use crate::{Error, Result};

/// Element type of a value as the model sees it (graph metadata and file I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::U8 => 1,
        }
    }
    /// An integer type (token ids).
    pub fn is_int(self) -> bool {
        match self {
            DType::I64 | DType::I32 | DType::U8 => true,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => false,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }
}

/// A tensor's elements: f32 (activations, weights) or i64 (token ids, kept as integers end
/// to end).
#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense, row-major tensor on the host, f32 or integer ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::shape(
            "tensor",
            format!("shape {shape:?} needs {n} elements, got {len}"),
        ));
    }
    Ok(())
}

impl Tensor {
    /// An f32 tensor.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(Self {
            shape,
            data: Data::F32(data),
        })
    }
    /// An integer tensor (token ids).
    pub fn from_ids(shape: Vec<usize>, ids: Vec<i64>) -> Result<Self> {
        check_len(&shape, ids.len())?;
        Ok(Self {
            shape,
            data: Data::I64(ids),
        })
    }
    /// A tensor of `dtype` from little-endian bytes: integer types become i64 ids, float types
    /// f32.
    pub fn from_le_bytes(shape: Vec<usize>, bytes: &[u8], dtype: DType) -> Result<Self> {
        if dtype.is_int() {
            let sz = dtype.size();
            if bytes.len() % sz != 0 {
                return Err(Error::invalid(format!(
                    "{} bytes is not a whole number of {} elements",
                    bytes.len(),
                    dtype.name()
                )));
            }
            let ids = bytes
                .chunks_exact(sz)
                .map(|c| match dtype {
                    DType::I64 => i64::from_le_bytes(c.try_into().expect("8 bytes")),
                    DType::I32 => i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))),
                    DType::U8 => i64::from(c[0]),
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
                        unreachable!("integer dtypes only")
                    }
                })
                .collect();
            Self::from_ids(shape, ids)
        } else {
            Self::new(shape, decode_to_f32(bytes, dtype)?)
        }
    }
    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Self {
            shape: shape.to_vec(),
            data: Data::F32(vec![0.0; n]),
        }
    }
    pub fn scalar(v: f32) -> Self {
        Self {
            shape: vec![],
            data: Data::F32(vec![v]),
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// F32 or I64.
    pub fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::I64(_) => DType::I64,
        }
    }
    pub fn numel(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }
    /// Bytes of the elements.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }
    /// The f32 elements. Panics on an id tensor: the executor checks every input's dtype
    /// against the graph before a kernel reads it, so this is an internal invariant.
    pub fn data(&self) -> &[f32] {
        match &self.data {
            Data::F32(v) => v,
            Data::I64(_) => panic!("tensor {:?} holds i64 ids, not f32", self.shape),
        }
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.data {
            Data::F32(v) => v,
            Data::I64(_) => panic!("tensor {:?} holds i64 ids, not f32", self.shape),
        }
    }
    /// The integer elements (None for an f32 tensor).
    pub fn ids(&self) -> Option<&[i64]> {
        match &self.data {
            Data::F32(_) => None,
            Data::I64(v) => Some(v),
        }
    }
    /// The f32 elements, moved out (panics on ids, as [`Tensor::data`]).
    pub fn into_data(self) -> Vec<f32> {
        match self.data {
            Data::F32(v) => v,
            Data::I64(_) => panic!("tensor {:?} holds i64 ids, not f32", self.shape),
        }
    }
    /// The f32 buffer for reuse (None for ids).
    pub fn into_buffer(self) -> Option<Vec<f32>> {
        match self.data {
            Data::F32(v) => Some(v),
            Data::I64(_) => None,
        }
    }
    /// The elements as f64 (either dtype), for comparisons and references.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// The tensor as f32 (ids converted: exact below 2^24).
    pub fn into_f32(self) -> Tensor {
        match self.data {
            Data::F32(_) => self,
            Data::I64(v) => Tensor {
                shape: self.shape,
                data: Data::F32(v.into_iter().map(|x| x as f32).collect()),
            },
        }
    }
    /// The tensor as integer ids: ids as they are; f32 values that are all whole numbers
    /// converted; anything else (a fraction, a negative, NaN) is an error naming `name`.
    pub fn into_ids(self, name: &str) -> Result<Tensor> {
        match self.data {
            Data::I64(_) => Ok(self),
            Data::F32(v) => {
                if let Some(bad) = v
                    .iter()
                    .position(|x| !(x.fract() == 0.0 && *x >= 0.0 && *x < 16_777_216.0))
                {
                    return Err(Error::input(
                        name,
                        format!(
                            "element {bad} is {}; token ids are whole numbers from 0",
                            v[bad]
                        ),
                    ));
                }
                Tensor::from_ids(self.shape, v.into_iter().map(|x| x as i64).collect())
            }
        }
    }
    /// An error naming the tensor if any f32 element is NaN or infinite (ids always pass).
    pub fn check_finite(&self, name: &str) -> Result<()> {
        match self.first_non_finite() {
            Some((i, v)) => Err(Error::input(
                name,
                format!("element {i} is {v}; inputs must be finite numbers"),
            )),
            None => Ok(()),
        }
    }
    /// The first NaN or infinite f32 element, with its index (None for ids).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match &self.data {
            Data::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
            Data::I64(_) => None,
        }
    }
    /// Same data, new shape (a view change: no copy).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
    /// Largest absolute value (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.to_f64()
            .iter()
            .fold(0f32, |m, v| m.max(v.abs() as f32))
    }
    /// Largest absolute element-wise difference; shapes must match.
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::shape(
                "compare",
                format!("{:?} vs {:?}", self.shape, other.shape),
            ));
        }
        Ok(self
            .to_f64()
            .iter()
            .zip(&other.to_f64())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs() as f32)))
    }
}

/// Decode little-endian bytes of `dtype` into f32 values.
pub fn decode_to_f32(bytes: &[u8], dtype: DType) -> Result<Vec<f32>> {
    let sz = dtype.size();
    if bytes.len() % sz != 0 {
        return Err(Error::invalid(format!(
            "{} bytes is not a whole number of {} elements",
            bytes.len(),
            dtype.name()
        )));
    }
    let out = match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::U8 => bytes.iter().map(|&b| b as f32).collect(),
    };
    Ok(out)
}
