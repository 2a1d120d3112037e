//! [`GraphBuilder`]: one method per operator, each the op's shape rule. Every output shape is
//! inferred and every input shape and dtype checked as the model is built, so shape errors
//! surface at build time with the module path, not inside a kernel.

use crate::graph::{Graph, Node, Param, ValueInfo};
use crate::op::{ActKind, AttentionSpec, Conv2dSpec, Op};
use crate::{DType, Error, ParamId, Result, ValueId};

/// Builds a [`Graph`], inferring every output shape and checking every input shape.
#[derive(Default)]
pub struct GraphBuilder {
    g: Graph,
    /// The first dtype or cache-view rule broken (see [`GraphBuilder::finish`]).
    err: Option<Error>,
    /// Parameters declared ahead of their ops (see [`GraphBuilder::declare`]).
    declared: Vec<bool>,
}

/// The broadcast rule of Add and Mul: b's shape onto a's, trailing alignment, each of b's
/// dims equal to a's or 1 (the builder's check and the reference evaluator's).
pub(crate) fn check_broadcast(path: &str, sa: &[usize], sb: &[usize]) -> Result<()> {
    let ok = sb.len() <= sa.len()
        && sb
            .iter()
            .rev()
            .zip(sa.iter().rev())
            .all(|(&db, &da)| db == da || db == 1);
    if !ok {
        return Err(Error::shape(
            path,
            format!("cannot broadcast {sb:?} onto {sa:?}"),
        ));
    }
    Ok(())
}

fn path_param(path: &str, leaf: &str) -> String {
    if path.is_empty() {
        leaf.to_string()
    } else {
        format!("{path}.{leaf}")
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            g: Graph {
                name: name.to_string(),
                ..Graph::default()
            },
            err: None,
            declared: Vec::new(),
        }
    }

    /// The graph, or the first input rule a node broke: a compute op reading integers or a
    /// cache view (rules checked as nodes are pushed; shape rules fail at the method itself).
    pub fn finish(self) -> Result<Graph> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.g),
        }
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.g.values[v].shape
    }

    pub fn param(&mut self, name: String, shape: Vec<usize>) -> Result<ParamId> {
        if let Some(i) = self.g.params.iter().position(|p| p.name == name) {
            if !self.declared.get(i).copied().unwrap_or(false) {
                return Err(Error::invalid(format!(
                    "graph {}: parameter {name} defined twice",
                    self.g.name
                )));
            }
            if self.g.params[i].shape != shape {
                return Err(Error::shape(
                    &name,
                    format!(
                        "declared as {:?}, used as {shape:?}",
                        self.g.params[i].shape
                    ),
                ));
            }
            self.declared[i] = false;
            return Ok(i);
        }
        self.g.params.push(Param { name, shape });
        self.declared.resize(self.g.params.len(), false);
        Ok(self.g.params.len() - 1)
    }

    /// Declare a parameter before the op that uses it (which then takes this entry), so that
    /// several graphs of one model (a decoder's prefill and decode graphs, each using part of
    /// the weights) share one parameter table and so one set of loaded weights. A declared
    /// parameter no op uses stays in the table.
    pub fn declare(&mut self, name: String, shape: Vec<usize>) -> Result<ParamId> {
        let id = self.param(name, shape)?;
        self.declared[id] = true;
        Ok(id)
    }

    /// Let the parameters already defined under `prefix` be used once more (a module run
    /// twice: DiT's output layer re-embeds the timestep and class with block 0's embedder).
    pub fn reuse_params(&mut self, prefix: &str) {
        for (i, p) in self.g.params.iter().enumerate() {
            if p.name.starts_with(prefix) {
                self.declared[i] = true;
            }
        }
    }

    fn push(
        &mut self,
        path: &str,
        op: Op,
        inputs: Vec<ValueId>,
        shape: Vec<usize>,
        dtype: DType,
    ) -> ValueId {
        if self.err.is_none() {
            self.err = self.check_inputs(path, &op, &inputs).err();
        }
        let out = self.g.values.len();
        self.g.values.push(ValueInfo {
            shape,
            dtype,
            producer: self.g.nodes.len(),
        });
        self.g.nodes.push(Node {
            op,
            inputs,
            output: out,
            path: path.to_string(),
        });
        out
    }

    pub fn input(&mut self, name: &str, shape: &[usize], dtype: DType) -> ValueId {
        let v = self.push(
            name,
            Op::Input {
                name: name.to_string(),
            },
            vec![],
            shape.to_vec(),
            dtype,
        );
        self.g.inputs.push((name.to_string(), v));
        v
    }

    pub fn output(&mut self, name: &str, v: ValueId) {
        self.g.outputs.push((name.to_string(), v));
    }

    /// Conv2d with weight `{path}.weight` (cout, cin, k, k) and optional `{path}.bias`.
    pub fn conv2d(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: usize,
        stride: usize,
        pad: [usize; 4],
        bias: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 4 {
            return Err(Error::shape(
                path,
                format!("conv2d wants NCHW input, got {s:?}"),
            ));
        }
        let (n, cin, h, w) = (s[0], s[1], s[2], s[3]);
        let hp = h + pad[0] + pad[1];
        let wp = w + pad[2] + pad[3];
        if hp < k || wp < k || stride == 0 {
            return Err(Error::shape(
                path,
                format!("kernel {k}x{k} does not fit padded input {hp}x{wp}"),
            ));
        }
        let ho = (hp - k) / stride + 1;
        let wo = (wp - k) / stride + 1;
        let weight = self.param(path_param(path, "weight"), vec![cout, cin, k, k])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![cout])?)
        } else {
            None
        };
        let spec = Conv2dSpec {
            weight,
            bias,
            cin,
            cout,
            kh: k,
            kw: k,
            stride,
            pad,
            temporal: false,
            residual: false,
        };
        Ok(self.push(
            path,
            Op::Conv2d(spec),
            vec![x],
            vec![n, cout, ho, wo],
            DType::F32,
        ))
    }

    /// 3-D convolution of x (N, C, T, H, W) with weight `{path}.weight` (cout, cin, kt, kh, kw),
    /// optional `{path}.bias`, strides (t, h, w), temporal dilation, padding (front, back, top,
    /// bottom, left, right) with zeros or, `replicate`, the edge values.
    #[allow(clippy::too_many_arguments)]
    pub fn conv3d(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: [usize; 3],
        stride: [usize; 3],
        dilation_t: usize,
        padding: impl Into<Pad3d>,
        bias: bool,
    ) -> Result<ValueId> {
        let Pad3d {
            pad,
            replicate,
            front_zeros,
        } = padding.into();
        let s = self.shape(x).to_vec();
        let [n, cin, t, h, w] = *s else {
            return Err(Error::shape(
                path,
                format!("conv3d wants (N, C, T, H, W) input, got {s:?}"),
            ));
        };
        let span_t = dilation_t * k[0].saturating_sub(1) + 1;
        let (tp, hp, wp) = (
            t + pad[0] + pad[1],
            h + pad[2] + pad[3],
            w + pad[4] + pad[5],
        );
        if stride[1] != stride[2] {
            return Err(Error::shape(
                path,
                format!("conv3d strides {stride:?}: the height and width strides must be equal"),
            ));
        }
        if k.contains(&0)
            || stride.contains(&0)
            || dilation_t == 0
            || tp < span_t
            || hp < k[1]
            || wp < k[2]
        {
            return Err(Error::shape(
                path,
                format!(
                    "conv3d kernel {k:?} (stride {stride:?}, dilation {dilation_t}) does not fit padded input {tp}x{hp}x{wp}"
                ),
            ));
        }
        let out = [
            (tp - span_t) / stride[0] + 1,
            (hp - k[1]) / stride[1] + 1,
            (wp - k[2]) / stride[2] + 1,
        ];
        let weight = self.param(
            path_param(path, "weight"),
            vec![cout, cin, k[0], k[1], k[2]],
        )?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![cout])?)
        } else {
            None
        };
        let spec = crate::op::Conv3dSpec {
            weight,
            bias,
            cin,
            cout,
            k,
            stride,
            dilation_t,
            pad,
            replicate,
            front_zeros,
        };
        Ok(self.push(
            path,
            Op::Conv3d(spec),
            vec![x],
            vec![n, cout, out[0], out[1], out[2]],
            DType::F32,
        ))
    }

    /// Temporal convolution over x (B, C, F, P) (P = H·W positions): a Conv3d with kernel
    /// (k, 1, 1) and padding ((k-1)/2, 0, 0), weight `{path}.weight` (cout, cin, k, 1, 1).
    pub fn conv_temporal(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: usize,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 4 || k % 2 == 0 {
            return Err(Error::shape(
                path,
                format!("temporal conv (kernel {k}) wants (B, C, F, H·W), got {s:?}"),
            ));
        }
        let cin = s[1];
        let weight = self.param(path_param(path, "weight"), vec![cout, cin, k, 1, 1])?;
        let bias = Some(self.param(path_param(path, "bias"), vec![cout])?);
        let p = (k - 1) / 2;
        let spec = Conv2dSpec {
            weight,
            bias,
            cin,
            cout,
            kh: k,
            kw: 1,
            stride: 1,
            pad: [p, p, 0, 0],
            temporal: true,
            residual: false,
        };
        let out = vec![s[0], cout, s[2], s[3]];
        Ok(self.push(path, Op::Conv2d(spec), vec![x], out, DType::F32))
    }

    /// Linear over the last axis with weight `{path}.weight` (out, in).
    pub fn linear(&mut self, path: &str, x: ValueId, out: usize, bias: bool) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let inf = *s
            .last()
            .ok_or_else(|| Error::shape(path, "linear on a scalar"))?;
        let weight = self.param(path_param(path, "weight"), vec![out, inf])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![out])?)
        } else {
            None
        };
        *s.last_mut().unwrap() = out;
        let op = Op::Linear {
            weight,
            bias,
            residual: false,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    /// Attention over q (B, Lq, H·D), k and v (B, Lk, Hkv·D) (plain values or cache views)
    /// and, with `spec.bias`, an additive bias (Bb, Hb, Lqb, Lk), Bb ∈ {1, B}, Hb ∈ {1, H},
    /// Lqb ∈ {1, Lq} (a key padding mask is the same for every query).
    pub fn attention(
        &mut self,
        path: &str,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        bias: Option<ValueId>,
        spec: AttentionSpec,
    ) -> Result<ValueId> {
        let (qs, ks, vs) = (
            self.shape(q).to_vec(),
            self.shape(k).to_vec(),
            self.shape(v).to_vec(),
        );
        let hd = spec.heads * spec.head_dim;
        let kvd = spec.kv_heads * spec.head_dim;
        let ok = qs.len() == 3
            && ks.len() == 3
            && vs.len() == 3
            && qs[0] == ks[0]
            && ks == vs
            && qs[2] == hd
            && ks[2] == kvd
            && spec.heads > 0
            && spec.head_dim > 0
            && spec.kv_heads > 0
            && spec.heads % spec.kv_heads == 0
            && spec.scale.is_finite()
            && spec.scale > 0.0;
        if !ok {
            return Err(Error::shape(
                path,
                format!(
                    "attention with {} heads ({} key/value heads) of {}: q {qs:?}, k {ks:?}, v {vs:?}",
                    spec.heads, spec.kv_heads, spec.head_dim
                ),
            ));
        }
        if qs[0] == 0 || qs[1] == 0 || ks[1] == 0 {
            return Err(Error::shape(
                path,
                format!("attention over an empty batch or sequence: q {qs:?}, k {ks:?}"),
            ));
        }
        let views = [k, v].map(|x| self.g.nodes[self.g.values[x].producer].op.is_cache_view());
        if views[0] != views[1] {
            return Err(Error::shape(
                path,
                "attention keys and values must both be cache views or both be values",
            ));
        }
        if spec.causal && qs[1] > ks[1] {
            return Err(Error::shape(
                path,
                format!("causal attention needs Lq ≤ Lk, got q {qs:?}, k {ks:?}"),
            ));
        }
        let mut inputs = vec![q, k, v];
        match (spec.bias, bias) {
            (true, Some(bv)) => {
                let bs = self.shape(bv).to_vec();
                let ok = bs.len() == 4
                    && (bs[0] == 1 || bs[0] == qs[0])
                    && (bs[1] == 1 || bs[1] == spec.heads)
                    && (bs[2] == 1 || bs[2] == qs[1])
                    && bs[3] == ks[1];
                if !ok {
                    return Err(Error::shape(
                        path,
                        format!(
                            "attention bias {bs:?}: expected (1 or {}, 1 or {}, 1 or {}, {})",
                            qs[0], spec.heads, qs[1], ks[1]
                        ),
                    ));
                }
                inputs.push(bv);
            }
            (false, None) => {}
            (want, _) => {
                return Err(Error::shape(
                    path,
                    format!(
                        "attention spec says bias = {want} but a bias input was {}given",
                        if want { "not " } else { "" }
                    ),
                ))
            }
        }
        Ok(self.push(path, Op::Attention(spec), inputs, qs, DType::F32))
    }

    /// Append x (B, L, C) to state cache `slot` of `capacity` rows; the output is a view of
    /// the whole cache (B, capacity, C), which only attention may read.
    pub fn cache_write(
        &mut self,
        path: &str,
        x: ValueId,
        slot: usize,
        capacity: usize,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 3 || s[1] > capacity || capacity == 0 {
            return Err(Error::shape(
                path,
                format!("cache write of {s:?} into a cache of {capacity} rows: expected (B, L ≤ {capacity}, C)"),
            ));
        }
        self.check_slot(path, slot, &[s[0], capacity, s[2]])?;
        Ok(self.push(
            path,
            Op::CacheWrite { slot },
            vec![x],
            vec![s[0], capacity, s[2]],
            DType::F32,
        ))
    }

    /// A view of state cache `slot` (B, capacity, C) as earlier runs filled it.
    pub fn cache_view(&mut self, path: &str, slot: usize, shape: [usize; 3]) -> Result<ValueId> {
        if shape.contains(&0) {
            return Err(Error::shape(path, format!("cache view of shape {shape:?}")));
        }
        self.check_slot(path, slot, &shape)?;
        Ok(self.push(
            path,
            Op::CacheView { slot },
            vec![],
            shape.to_vec(),
            DType::F32,
        ))
    }

    /// Every node of one graph that touches a cache slot sees the same cache shape.
    fn check_slot(&self, path: &str, slot: usize, shape: &[usize]) -> Result<()> {
        for n in &self.g.nodes {
            if let Op::CacheWrite { slot: s } | Op::CacheView { slot: s } = n.op {
                let other = &self.g.values[n.output].shape;
                if s == slot && other.as_slice() != shape {
                    return Err(Error::shape(
                        path,
                        format!(
                            "cache slot {slot} is {other:?} at {}, here {shape:?}",
                            n.path
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The input rules every op shares: integer ids go only to embeddings, gathers and
    /// reshapes; cache views go only to attention's keys and values.
    fn check_inputs(&self, path: &str, op: &Op, inputs: &[ValueId]) -> Result<()> {
        for (k, &x) in inputs.iter().enumerate() {
            let v = &self.g.values[x];
            let producer = &self.g.nodes[v.producer];
            let ids_ok = match op {
                Op::TokenEmbedding { .. } | Op::LfqCodes { .. } | Op::Reshape => true,
                Op::GatherEos { .. } => k == 1,
                _ => false,
            };
            if v.dtype != DType::F32 && !ids_ok {
                return Err(Error::shape(
                    path,
                    format!(
                        "{} reads {} ({}, {:?}); it takes f32",
                        op.name(),
                        producer.path,
                        v.dtype.name(),
                        v.shape
                    ),
                ));
            }
            let view_ok = matches!(op, Op::Attention(_)) && (k == 1 || k == 2);
            if producer.op.is_cache_view() && !view_ok {
                return Err(Error::shape(
                    path,
                    format!(
                        "{} reads the cache view made at {}; only attention keys and values may",
                        op.name(),
                        producer.path
                    ),
                ));
            }
        }
        Ok(())
    }

    fn norm_params(&mut self, path: &str, c: usize) -> Result<(ParamId, ParamId)> {
        Ok((
            self.param(path_param(path, "weight"), vec![c])?,
            self.param(path_param(path, "bias"), vec![c])?,
        ))
    }

    pub fn group_norm(
        &mut self,
        path: &str,
        x: ValueId,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() < 2 || groups == 0 || s[1] % groups != 0 {
            return Err(Error::shape(
                path,
                format!(
                    "group norm with {groups} groups over {s:?}: channels must divide into groups"
                ),
            ));
        }
        let (weight, bias) = self.norm_params(path, s[1])?;
        let op = Op::GroupNorm {
            groups,
            eps,
            weight,
            bias,
            silu,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    pub fn layer_norm(&mut self, path: &str, x: ValueId, eps: f32) -> Result<ValueId> {
        self.layer_norm_affine(path, x, eps, true, true)
    }

    /// Layer norm over the last axis with `{path}.weight` (C) if `weight` and `{path}.bias`
    /// (C) if `bias` (torch's `elementwise_affine`, `bias`).
    pub fn layer_norm_affine(
        &mut self,
        path: &str,
        x: ValueId,
        eps: f32,
        weight: bool,
        bias: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let c = *s
            .last()
            .ok_or_else(|| Error::shape(path, "layer norm on a scalar"))?;
        let weight = if weight {
            Some(self.param(path_param(path, "weight"), vec![c])?)
        } else {
            None
        };
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![c])?)
        } else {
            None
        };
        Ok(self.push(
            path,
            Op::LayerNorm { eps, weight, bias },
            vec![x],
            s,
            DType::F32,
        ))
    }

    /// RMS norm over the last axis with weight `{path}.weight` (C).
    pub fn rms_norm(&mut self, path: &str, x: ValueId, eps: f32) -> Result<ValueId> {
        self.rms_norm_affine(path, x, eps, true)
    }

    /// RMS norm over the last axis, with weight `{path}.weight` (C) if `weight`.
    pub fn rms_norm_affine(
        &mut self,
        path: &str,
        x: ValueId,
        eps: f32,
        weight: bool,
    ) -> Result<ValueId> {
        let name = weight.then(|| path_param(path, "weight"));
        self.rms_norm_named(path, x, eps, name)
    }

    /// RMS norm over the last axis with the weight (C) of parameter name `weight`, if any.
    pub fn rms_norm_named(
        &mut self,
        path: &str,
        x: ValueId,
        eps: f32,
        weight: Option<String>,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let c = *s
            .last()
            .ok_or_else(|| Error::shape(path, "rms norm on a scalar"))?;
        let weight = match weight {
            Some(name) => Some(self.param(name, vec![c])?),
            None => None,
        };
        Ok(self.push(path, Op::RmsNorm { eps, weight }, vec![x], s, DType::F32))
    }

    /// Global response normalization over channels-last x (B, L, C), with `{path}.gamma` and
    /// `{path}.beta` (1, 1, 1, C) as diffusers stores them.
    pub fn global_response_norm(&mut self, path: &str, x: ValueId) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let c = match *s {
            [_, l, c] if l > 0 && c > 0 => c,
            _ => {
                return Err(Error::shape(
                    path,
                    format!("global response norm wants (B, L, C) with L, C > 0, got {s:?}"),
                ))
            }
        };
        let gamma = self.param(path_param(path, "gamma"), vec![1, 1, 1, c])?;
        let beta = self.param(path_param(path, "beta"), vec![1, 1, 1, c])?;
        Ok(self.push(
            path,
            Op::GlobalResponseNorm { gamma, beta },
            vec![x],
            s,
            DType::F32,
        ))
    }

    /// Depthwise convolution (groups = channels) of NCHW x, weight `{path}.weight` (C, 1, k, k),
    /// stride 1, `pad` zeros on every side, optional `{path}.bias` (C).
    pub fn depthwise_conv2d(
        &mut self,
        path: &str,
        x: ValueId,
        k: usize,
        pad: usize,
        bias: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let [n, c, h, w] = match *s {
            [n, c, h, w] if k > 0 && h + 2 * pad >= k && w + 2 * pad >= k => [n, c, h, w],
            _ => {
                return Err(Error::shape(
                    path,
                    format!(
                        "depthwise conv {k}x{k} (pad {pad}) wants NCHW input it fits, got {s:?}"
                    ),
                ))
            }
        };
        let weight = self.param(path_param(path, "weight"), vec![c, 1, k, k])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![c])?)
        } else {
            None
        };
        let out = vec![n, c, h + 2 * pad - k + 1, w + 2 * pad - k + 1];
        Ok(self.push(
            path,
            Op::DepthwiseConv2d {
                weight,
                bias,
                k,
                pad,
            },
            vec![x],
            out,
            DType::F32,
        ))
    }

    /// Transposed convolution with stride = kernel = `k`, no padding, of NCHW x: weight
    /// `{path}.weight` (cin, cout, k, k), optional `{path}.bias` (cout) → (N, cout, k·H, k·W).
    pub fn conv_transpose2d(
        &mut self,
        path: &str,
        x: ValueId,
        cout: usize,
        k: usize,
        bias: bool,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let [n, cin, h, w] = match *s {
            [n, c, h, w] if k > 0 => [n, c, h, w],
            _ => {
                return Err(Error::shape(
                    path,
                    format!("transposed conv {k}x{k} wants NCHW input, got {s:?}"),
                ))
            }
        };
        let weight = self.param(path_param(path, "weight"), vec![cin, cout, k, k])?;
        let bias = if bias {
            Some(self.param(path_param(path, "bias"), vec![cout])?)
        } else {
            None
        };
        let op = Op::ConvTranspose2d {
            weight,
            bias,
            cin,
            cout,
            k,
        };
        Ok(self.push(path, op, vec![x], vec![n, cout, h * k, w * k], DType::F32))
    }

    /// x / max(‖x‖₂, eps) over the last axis (torch's `F.normalize(x, p=2, dim=-1)`).
    pub fn l2_normalize(&mut self, path: &str, x: ValueId, eps: f32) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.last().is_none_or(|&d| d == 0) {
            return Err(Error::shape(path, format!("l2 normalize over {s:?}")));
        }
        Ok(self.push(path, Op::L2Normalize { eps }, vec![x], s, DType::F32))
    }

    /// Rotary position embedding of x (B, L, heads·head_dim) at the run's positions.
    pub fn rope(
        &mut self,
        path: &str,
        x: ValueId,
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 3 || heads == 0 || head_dim % 2 != 0 || s[2] != heads * head_dim {
            return Err(Error::shape(
                path,
                format!("rope over {s:?} with {heads} heads of {head_dim} (an even size): expected (B, L, {})", heads * head_dim),
            ));
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::shape(
                path,
                format!("rope theta {theta}: must be positive"),
            ));
        }
        let op = Op::Rope {
            heads,
            head_dim,
            theta,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    pub fn act(&mut self, path: &str, x: ValueId, kind: ActKind) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Activation(kind), vec![x], s, DType::F32)
    }

    pub fn geglu(&mut self, path: &str, x: ValueId) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let last = s
            .last_mut()
            .ok_or_else(|| Error::shape(path, "geglu on a scalar"))?;
        if *last % 2 != 0 {
            return Err(Error::shape(
                path,
                format!("geglu wants an even last axis, got {s:?}"),
            ));
        }
        *last /= 2;
        Ok(self.push(path, Op::Geglu, vec![x], s, DType::F32))
    }

    fn check_broadcast(&self, path: &str, a: ValueId, b: ValueId) -> Result<Vec<usize>> {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        check_broadcast(path, &sa, &sb)?;
        Ok(sa)
    }

    pub fn add(&mut self, path: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        let s = self.check_broadcast(path, a, b)?;
        Ok(self.push(path, Op::Add, vec![a, b], s, DType::F32))
    }

    pub fn mul(&mut self, path: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        let s = self.check_broadcast(path, a, b)?;
        Ok(self.push(path, Op::Mul, vec![a, b], s, DType::F32))
    }

    pub fn scale(&mut self, path: &str, x: ValueId, factor: f32) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Scale { factor }, vec![x], s, DType::F32)
    }

    pub fn clamp(&mut self, path: &str, x: ValueId, min: f32, max: f32) -> ValueId {
        let s = self.shape(x).to_vec();
        self.push(path, Op::Clamp { min, max }, vec![x], s, DType::F32)
    }

    pub fn concat(&mut self, path: &str, xs: &[ValueId], axis: usize) -> Result<ValueId> {
        if xs.is_empty() {
            return Err(Error::shape(path, "concat of no values"));
        }
        let first = self.shape(xs[0]).to_vec();
        let mut s = first.clone();
        if axis >= s.len() {
            return Err(Error::shape(path, format!("concat axis {axis} of {s:?}")));
        }
        s[axis] = 0;
        for &x in xs {
            let sx = self.shape(x);
            let same = sx.len() == first.len()
                && sx
                    .iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return Err(Error::shape(
                    path,
                    format!("concat along {axis}: {first:?} and {sx:?} differ elsewhere"),
                ));
            }
            s[axis] += sx[axis];
        }
        Ok(self.push(path, Op::Concat { axis }, xs.to_vec(), s, DType::F32))
    }

    pub fn slice(
        &mut self,
        path: &str,
        x: ValueId,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        if axis >= s.len() || start + len > s[axis] {
            return Err(Error::shape(
                path,
                format!("slice {start}..{} of axis {axis} of {s:?}", start + len),
            ));
        }
        s[axis] = len;
        Ok(self.push(path, Op::Slice { axis, start, len }, vec![x], s, DType::F32))
    }

    pub fn permute(&mut self, path: &str, x: ValueId, perm: &[usize]) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let mut seen = vec![false; s.len()];
        if perm.len() != s.len()
            || perm
                .iter()
                .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::shape(path, format!("permutation {perm:?} of {s:?}")));
        }
        let out = perm.iter().map(|&p| s[p]).collect();
        Ok(self.push(
            path,
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
            out,
            DType::F32,
        ))
    }

    pub fn reshape(&mut self, path: &str, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        let s = self.shape(x);
        if s.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(Error::shape(
                path,
                format!("cannot view {s:?} as {shape:?}"),
            ));
        }
        let dt = self.g.values[x].dtype;
        Ok(self.push(path, Op::Reshape, vec![x], shape.to_vec(), dt))
    }

    /// Nearest resize of the last two axes to (h, w).
    pub fn upsample_nearest(
        &mut self,
        path: &str,
        x: ValueId,
        h: usize,
        w: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        let n = s.len();
        if n < 2 || h == 0 || w == 0 {
            return Err(Error::shape(path, format!("upsample of {s:?} to {h}x{w}")));
        }
        s[n - 2] = h;
        s[n - 1] = w;
        Ok(self.push(path, Op::UpsampleNearest { h, w }, vec![x], s, DType::F32))
    }

    pub fn timestep_proj(
        &mut self,
        path: &str,
        t: ValueId,
        dim: usize,
        flip_sin_to_cos: bool,
        downscale_freq_shift: f32,
    ) -> Result<ValueId> {
        let s = self.shape(t).to_vec();
        if s.len() != 1 {
            return Err(Error::shape(
                path,
                format!("timesteps must be (B,), got {s:?}"),
            ));
        }
        let op = Op::TimestepProj {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
        };
        Ok(self.push(path, op, vec![t], vec![s[0], dim], DType::F32))
    }

    pub fn token_embedding(
        &mut self,
        path: &str,
        ids: ValueId,
        vocab: usize,
        dim: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(ids).to_vec();
        if !self.g.values[ids].dtype.is_int() {
            return Err(Error::shape(
                path,
                format!(
                    "token ids {s:?} are {}; they must be integers",
                    self.g.values[ids].dtype.name()
                ),
            ));
        }
        let table = self.param(path_param(path, "weight"), vec![vocab, dim])?;
        s.push(dim);
        Ok(self.push(path, Op::TokenEmbedding { table }, vec![ids], s, DType::F32))
    }

    /// x (B, R, D) + a learned table `name` (R, D) (a `PositionEmbedding` node read at
    /// offset 0 in the stateless graphs that use it: adaLN-single's `scale_shift_table`).
    pub fn add_table(&mut self, path: &str, x: ValueId, name: &str) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let [_, r, d] = *s else {
            return Err(Error::shape(
                path,
                format!("a learned table adds to (B, rows, D), got {s:?}"),
            ));
        };
        let table = self.param(name.to_string(), vec![r, d])?;
        Ok(self.push(
            path,
            Op::PositionEmbedding { table },
            vec![x],
            s,
            DType::F32,
        ))
    }

    /// LFQ codes of ids (..., codebooks) int64: (..., codebooks·bits), bits most significant
    /// first, each ±`scale`.
    pub fn lfq_codes(
        &mut self,
        path: &str,
        ids: ValueId,
        bits: usize,
        scale: f32,
    ) -> Result<ValueId> {
        let mut s = self.shape(ids).to_vec();
        if !self.g.values[ids].dtype.is_int() || s.is_empty() || bits == 0 || bits > 62 {
            return Err(Error::shape(
                path,
                format!("LFQ codes of {bits} bits want integer ids (..., codebooks), got {s:?}"),
            ));
        }
        *s.last_mut().expect("not empty") *= bits;
        Ok(self.push(path, Op::LfqCodes { bits, scale }, vec![ids], s, DType::F32))
    }

    /// MAGVIT-v2's squeeze-excitation of x (N, C, T, H, W) ([`Op::SqueezeExcite`]): params
    /// `{path}.to_k.{weight,bias}` (1, C, 1, 1), (1); `{path}.net.0.*` (hidden, C, 1, 1),
    /// (hidden); `{path}.net.2.*` (C, hidden, 1, 1), (C).
    pub fn squeeze_excite(&mut self, path: &str, x: ValueId, hidden: usize) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let &[_, c, _, h, w] = s.as_slice() else {
            return Err(Error::shape(
                path,
                format!("squeeze-excitation wants (N, C, T, H, W), got {s:?}"),
            ));
        };
        if c == 0 || hidden == 0 || h * w == 0 {
            return Err(Error::shape(
                path,
                format!("squeeze-excitation over {s:?} with {hidden} hidden channels"),
            ));
        }
        let p =
            |b: &mut Self, leaf: &str, shape: Vec<usize>| b.param(format!("{path}.{leaf}"), shape);
        let op = Op::SqueezeExcite {
            to_k: p(self, "to_k.weight", vec![1, c, 1, 1])?,
            to_k_bias: p(self, "to_k.bias", vec![1])?,
            w1: p(self, "net.0.weight", vec![hidden, c, 1, 1])?,
            b1: p(self, "net.0.bias", vec![hidden])?,
            w2: p(self, "net.2.weight", vec![c, hidden, 1, 1])?,
            b2: p(self, "net.2.bias", vec![c])?,
        };
        Ok(self.push(path, op, vec![x], s, DType::F32))
    }

    /// Memory keys and values before k and v (B, L, H·D) ([`Op::MemoryKv`]): one parameter
    /// `name` (2, heads, slots, head_dim) read by both nodes. Returns (k', v'), (B, slots + L,
    /// H·D).
    pub fn memory_kv(
        &mut self,
        path: &str,
        name: String,
        (k, v): (ValueId, ValueId),
        heads: usize,
        slots: usize,
    ) -> Result<(ValueId, ValueId)> {
        let s = self.shape(k).to_vec();
        let ok = s.len() == 3
            && self.shape(v) == s.as_slice()
            && heads > 0
            && slots > 0
            && s[2] % heads == 0;
        if !ok {
            return Err(Error::shape(
                path,
                format!(
                    "memory keys/values for {heads} heads before k {s:?}, v {:?}",
                    self.shape(v)
                ),
            ));
        }
        let table = self.param(name, vec![2, heads, slots, s[2] / heads])?;
        let out = vec![s[0], slots + s[1], s[2]];
        let mk = self.push(
            &format!("{path}.k"),
            Op::MemoryKv { table, index: 0 },
            vec![k],
            out.clone(),
            DType::F32,
        );
        let mv = self.push(
            &format!("{path}.v"),
            Op::MemoryKv { table, index: 1 },
            vec![v],
            out,
            DType::F32,
        );
        Ok((mk, mv))
    }

    /// Taylor linear attention ([`Op::LinearAttention`]) of q, k, v (B, L, H·D).
    pub fn linear_attention(
        &mut self,
        path: &str,
        (q, k, v): (ValueId, ValueId, ValueId),
        heads: usize,
        head_dim: usize,
        scale: f32,
    ) -> Result<ValueId> {
        let s = self.shape(q).to_vec();
        let ok = s.len() == 3
            && self.shape(k) == s.as_slice()
            && self.shape(v) == s.as_slice()
            && heads > 0
            && head_dim > 0
            && s[2] == heads * head_dim
            && s[1] > 0
            && scale.is_finite();
        if !ok {
            return Err(Error::shape(
                path,
                format!(
                    "linear attention with {heads} heads of {head_dim}: q {s:?}, k {:?}, v {:?}",
                    self.shape(k),
                    self.shape(v)
                ),
            ));
        }
        let op = Op::LinearAttention {
            heads,
            head_dim,
            scale,
        };
        Ok(self.push(path, op, vec![q, k, v], s, DType::F32))
    }

    /// GateLoop's recurrence ([`Op::GateLoop`]) over qkva (N, T, 3C) → (N, T, C).
    pub fn gate_loop(&mut self, path: &str, qkva: ValueId) -> Result<ValueId> {
        let mut s = self.shape(qkva).to_vec();
        if s.len() != 3 || s[2] % 3 != 0 || s[2] == 0 {
            return Err(Error::shape(
                path,
                format!("gate loop wants (N, T, 3·C), got {s:?}"),
            ));
        }
        s[2] /= 3;
        Ok(self.push(path, Op::GateLoop, vec![qkva], s, DType::F32))
    }

    /// `before` zeros in front of x along `axis` ([`Op::ZeroPad`]).
    pub fn zero_pad(
        &mut self,
        path: &str,
        x: ValueId,
        axis: usize,
        before: usize,
    ) -> Result<ValueId> {
        let mut s = self.shape(x).to_vec();
        if axis >= s.len() {
            return Err(Error::shape(
                path,
                format!("zero padding along axis {axis} of {s:?}"),
            ));
        }
        s[axis] += before;
        Ok(self.push(path, Op::ZeroPad { axis, before }, vec![x], s, DType::F32))
    }

    /// Token shift ([`Op::TokenShift`]) of x (N, T, C), C even.
    pub fn token_shift(&mut self, path: &str, x: ValueId) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 3 || s[2] % 2 != 0 {
            return Err(Error::shape(
                path,
                format!("token shift wants (N, T, C) with C even, got {s:?}"),
            ));
        }
        Ok(self.push(path, Op::TokenShift, vec![x], s, DType::F32))
    }

    pub fn position_embedding(
        &mut self,
        path: &str,
        x: ValueId,
        max_positions: usize,
    ) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        if s.len() != 3 || s[1] > max_positions {
            return Err(Error::shape(
                path,
                format!("position embedding of {max_positions} positions over {s:?}"),
            ));
        }
        let table = self.param(path_param(path, "weight"), vec![max_positions, s[2]])?;
        Ok(self.push(
            path,
            Op::PositionEmbedding { table },
            vec![x],
            s,
            DType::F32,
        ))
    }

    pub fn gather_eos(
        &mut self,
        path: &str,
        hidden: ValueId,
        ids: ValueId,
        eos_id: Option<u32>,
    ) -> Result<ValueId> {
        let (hs, is) = (self.shape(hidden).to_vec(), self.shape(ids).to_vec());
        if hs.len() != 3 || is.len() != 2 || hs[..2] != is[..] || !self.g.values[ids].dtype.is_int()
        {
            return Err(Error::shape(
                path,
                format!("gather_eos over {hs:?} by ids {is:?}"),
            ));
        }
        Ok(self.push(
            path,
            Op::GatherEos { eos_id },
            vec![hidden, ids],
            vec![hs[0], hs[2]],
            DType::F32,
        ))
    }
}

/// A 3-D convolution's padding ([`GraphBuilder::conv3d`]): (front, back, top, bottom, left,
/// right); zeros, or with `replicate` the edge values; `front_zeros` keeps the front frames
/// zero under `replicate` ([`crate::Conv3dSpec::front_zeros`]). A `([usize; 6], bool)` tuple
/// is (pad, replicate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad3d {
    pub pad: [usize; 6],
    pub replicate: bool,
    pub front_zeros: bool,
}

impl From<([usize; 6], bool)> for Pad3d {
    fn from((pad, replicate): ([usize; 6], bool)) -> Self {
        Self {
            pad,
            replicate,
            front_zeros: false,
        }
    }
}
