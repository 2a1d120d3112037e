//! Kernel dispatch: one arm per op, no wildcard (an op the CPU backend cannot run does not
//! compile).

use super::{take_buffer, BufferPool, Slot};
use crate::{attn_geom, conv3d_geom, conv_geom, Plan, State, Weights};
use prism_core::{Error, NodeId, Op, Result, Tensor};
use prism_kernels::attention::AttnBias;
use prism_kernels::{
    attention, bf16dot, conv, elementwise as ew, gemv, linear512, matmul, mixers, norm,
};

/// Run node `i` of the plan: its output slot and the kernel variant that ran ("" where there
/// is one).
pub(crate) fn run_node(
    plan: &Plan,
    i: NodeId,
    w: &Weights,
    slots: &mut [Slot],
    state: &mut State,
    buffers: &mut BufferPool,
) -> Result<(Slot, &'static str)> {
    let graph = &plan.graph;
    let kernels = &plan.kernels;
    let last_use = &plan.last_use;
    let mut variant = "";
    let node = &graph.nodes[i];
    let out_shape = graph.values[node.output].shape.clone();
    let n_out: usize = out_shape.iter().product();
    let offset = state.len();
    // Cache ops and reshapes make no buffer.
    let mut y = if node.op.moves_no_data() || node.op.is_cache_view() {
        Vec::new()
    } else {
        take_buffer(buffers, n_out)
    };
    let arg = |k: usize| -> &Tensor {
        match &slots[node.inputs[k]] {
            Slot::Tensor(t) => t,
            Slot::View { .. } | Slot::Empty => {
                unreachable!("executor invariant: tensor inputs are computed before use")
            }
        }
    };
    match &node.op {
        Op::Input { .. } => unreachable!("inputs are bound before the walk"),
        Op::Conv2d(c) => {
            let x = arg(0);
            let g = conv_geom(graph, i, c);
            let bias = c.bias.map(|b| w.f32(b));
            let residual = c.residual.then(|| arg(1).data());
            let kept = plan.keeps_filters && w.dtype() == crate::WeightDType::F32;
            let imp = kernels.conv_for(&g, kept);
            if kept && imp.is_winograd(&g) {
                let u = w.winograd_filters(c.weight, imp, &g);
                conv::conv2d_winograd_kept(
                    imp,
                    &g,
                    x.data(),
                    &u,
                    bias.as_deref(),
                    residual,
                    &mut y,
                );
                variant = imp.name();
            } else {
                let wt = w.conv(c.weight);
                variant =
                    conv::conv2d_stored(imp, &g, x.data(), wt, bias.as_deref(), residual, &mut y)
                        .name();
            }
        }
        Op::Conv3d(c) => {
            let g = conv3d_geom(graph, i, c);
            let imp = kernels.conv_for(&g.frame_geom(), false);
            let b = c.bias.map(|b| w.f32(b));
            let wt = w.f32(c.weight);
            variant =
                conv::conv3d::conv3d(imp, &g, arg(0).data(), &wt, b.as_deref(), &mut y).name();
        }
        Op::Linear {
            weight,
            bias,
            residual,
        } => {
            let x = arg(0);
            let (out, inf) = (w.shape(*weight)[0], w.shape(*weight)[1]);
            let rows = x.numel() / inf;
            let b = bias.map(|b| w.f32(b));
            let r = residual.then(|| arg(1).data());
            if rows <= gemv::MAX_ROWS {
                // A decode step's few rows: stream the weights once, as stored.
                let (wt, layout) = match w.linear_panels(*weight) {
                    Some(p) => (p, gemv::Layout::Panels),
                    None => (w.conv(*weight), gemv::Layout::RowMajor),
                };
                gemv::gemv(
                    x.data(),
                    &wt,
                    layout,
                    b.as_deref(),
                    r,
                    rows,
                    inf,
                    out,
                    &mut y,
                );
                variant = "gemv";
            } else if let Some(p) = w.linear_panels(*weight) {
                match p {
                    conv::ConvWeights::Bf16(v) if bf16dot::chosen(rows) => {
                        let packed = bf16dot::pack_panels(v, out, inf);
                        matmul::linear_res_bf16_packed(
                            x.data(),
                            &packed,
                            b.as_deref(),
                            r,
                            rows,
                            out,
                            &mut y,
                        );
                        variant = "bf16-dot";
                    }
                    _ => {
                        linear512::linear(x.data(), &p, b.as_deref(), r, rows, inf, out, &mut y);
                        variant = "panels";
                    }
                }
            } else if let Some(bits) = w.bf16_bits(*weight).filter(|_| bf16dot::pays()) {
                matmul::linear_res_bf16(x.data(), bits, b.as_deref(), r, rows, inf, out, &mut y);
                variant = "bf16-dot";
            } else {
                let wt = w.f32(*weight);
                matmul::linear_res(x.data(), &wt, b.as_deref(), r, rows, inf, out, &mut y);
            }
        }
        Op::LinearGeglu { weight, bias } => {
            let x = arg(0);
            let (out2, inf) = (w.shape(*weight)[0], w.shape(*weight)[1]);
            let rows = x.numel() / inf;
            let b = w.f32(*bias);
            if let Some(p) = w.linear_panels(*weight) {
                match p {
                    conv::ConvWeights::Bf16(v) if bf16dot::chosen(rows) => {
                        let packed = bf16dot::pack_panels(v, out2, inf);
                        matmul::linear_geglu_with(
                            x.data(),
                            rows,
                            inf,
                            out2 / 2,
                            &mut y,
                            |xb, r, hb| {
                                matmul::linear_res_bf16_packed(
                                    xb,
                                    &packed,
                                    Some(&b),
                                    None,
                                    r,
                                    out2,
                                    hb,
                                )
                            },
                        );
                        variant = "bf16-dot";
                    }
                    _ => {
                        matmul::linear_geglu_panels(x.data(), &p, &b, rows, inf, out2 / 2, &mut y);
                        variant = "panels";
                    }
                }
            } else if let Some(bits) = w.bf16_bits(*weight).filter(|_| bf16dot::pays()) {
                let packed = bf16dot::pack_weights(bits, out2, inf);
                matmul::linear_geglu_with(x.data(), rows, inf, out2 / 2, &mut y, |xb, r, hb| {
                    matmul::linear_res_bf16_packed(xb, &packed, Some(&b), None, r, out2, hb)
                });
                variant = "bf16-dot";
            } else {
                let wt = w.f32(*weight);
                matmul::linear_geglu(x.data(), &wt, &b, rows, inf, out2 / 2, &mut y);
            }
        }
        Op::Attention(a) => {
            // Keys and values: tensors, or cache views read in place up to their length.
            let kv = |k: usize| -> (&[f32], Option<usize>) {
                match &slots[node.inputs[k]] {
                    Slot::Tensor(t) => (t.data(), None),
                    Slot::View { slot, len } => (
                        &state.cache(*slot).expect("a view names a made cache").data[..],
                        Some(*len),
                    ),
                    Slot::Empty => unreachable!("executor invariant: inputs computed"),
                }
            };
            let ((kd, lk), (vd, _)) = (kv(1), kv(2));
            let g = attn_geom(graph, i, lk);
            let bias = a.bias.then(|| {
                let b = arg(3);
                let s = b.shape();
                AttnBias {
                    data: b.data(),
                    b_stride: if s[0] == 1 { 0 } else { s[1] * s[2] * s[3] },
                    h_stride: if s[1] == 1 { 0 } else { s[2] * s[3] },
                    row_stride: if s[2] == 1 { 0 } else { s[3] },
                }
            });
            let imp = kernels.attention_for(&g);
            attention::attention_biased(imp, &g, arg(0).data(), kd, vd, bias, &mut y);
            variant = if bias.is_some() && imp == attention::AttentionImpl::Flash {
                "flash-gemm"
            } else {
                imp.name()
            };
        }
        Op::GroupNorm {
            groups,
            eps,
            weight,
            bias,
            silu,
        } => {
            let x = arg(0);
            let s = x.shape();
            let spatial: usize = s[2..].iter().product();
            norm::group_norm(
                x.data(),
                s[0],
                s[1],
                spatial,
                *groups,
                *eps,
                &w.f32(*weight),
                &w.f32(*bias),
                *silu,
                &mut y,
            );
        }
        Op::LayerNorm { eps, weight, bias } => {
            let x = arg(0);
            let d = *x.shape().last().expect("norms have an axis");
            let (g, b) = (weight.map(|p| w.f32(p)), bias.map(|p| w.f32(p)));
            let (ones, zeros) = (vec![1.0; d], vec![0.0; d]);
            let g = g.as_deref().unwrap_or(&ones);
            let b = b.as_deref().unwrap_or(&zeros);
            norm::layer_norm(x.data(), d, *eps, g, b, &mut y);
        }
        Op::RmsNorm { eps, weight } => {
            let x = arg(0);
            let d = *x.shape().last().expect("norms have an axis");
            let g = weight.map(|p| w.f32(p));
            let ones = vec![1.0; d];
            norm::rms_norm(x.data(), d, *eps, g.as_deref().unwrap_or(&ones), &mut y);
        }
        Op::GlobalResponseNorm { gamma, beta } => {
            let x = arg(0);
            let &[b, l, c] = x.shape() else {
                unreachable!("the builder gives global response norm (B, L, C)")
            };
            let (g, be) = (w.f32(*gamma), w.f32(*beta));
            norm::global_response_norm(x.data(), [b, l, c], &g, &be, &mut y);
        }
        Op::DepthwiseConv2d {
            weight,
            bias,
            k,
            pad,
        } => {
            let x = arg(0);
            let &[n, c, h, wd] = x.shape() else {
                unreachable!("the builder gives depthwise convolution NCHW input")
            };
            let b = bias.map(|p| w.f32(p));
            let wt = w.f32(*weight);
            conv::depthwise::depthwise_conv2d(
                x.data(),
                [n, c, h, wd],
                &wt,
                b.as_deref(),
                *k,
                *pad,
                &mut y,
            );
        }
        Op::ConvTranspose2d {
            weight,
            bias,
            cout,
            k,
            ..
        } => {
            let x = arg(0);
            let &[n, c, h, wd] = x.shape() else {
                unreachable!("the builder gives transposed convolution NCHW input")
            };
            let b = bias.map(|p| w.f32(p));
            let wt = w.f32(*weight);
            conv::depthwise::conv_transpose2d(
                x.data(),
                [n, c, h, wd],
                &wt,
                b.as_deref(),
                *cout,
                *k,
                &mut y,
            );
        }
        Op::L2Normalize { eps } => {
            let x = arg(0);
            let d = *x.shape().last().expect("norms have an axis");
            norm::l2_normalize(x.data(), d, *eps, &mut y);
        }
        Op::Activation(kind) => ew::activation(*kind, arg(0).data(), &mut y),
        Op::Geglu => ew::geglu(arg(0).data(), *out_shape.last().unwrap(), &mut y),
        Op::Add | Op::Mul => {
            let (a, b) = (arg(0), arg(1));
            if matches!(node.op, Op::Add) {
                ew::broadcast_binary(a.data(), a.shape(), b.data(), b.shape(), &mut y, |x, z| {
                    x + z
                });
            } else {
                ew::broadcast_binary(a.data(), a.shape(), b.data(), b.shape(), &mut y, |x, z| {
                    x * z
                });
            }
        }
        Op::Scale { factor } => {
            let f = *factor;
            ew::map(arg(0).data(), &mut y, move |v| v * f);
        }
        Op::Clamp { min, max } => {
            let (lo, hi) = (*min, *max);
            ew::map(arg(0).data(), &mut y, move |v| v.clamp(lo, hi));
        }
        Op::Concat { axis } => {
            let xs: Vec<&Tensor> = (0..node.inputs.len()).map(arg).collect();
            let datas: Vec<&[f32]> = xs.iter().map(|t| t.data()).collect();
            let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
            ew::concat(&datas, &shapes, *axis, &mut y);
        }
        Op::Slice { axis, start, len } => {
            let x = arg(0);
            ew::slice(x.data(), x.shape(), *axis, *start, *len, &mut y);
        }
        Op::Permute { perm } => {
            let x = arg(0);
            ew::permute(x.data(), x.shape(), perm, &mut y);
        }
        Op::Reshape => {
            let src = node.inputs[0];
            // Last reader: take the buffer (no copy); otherwise copy it.
            let t = if last_use[src] == Some(i) {
                match slots[src].take() {
                    Slot::Tensor(t) => t,
                    Slot::View { .. } | Slot::Empty => unreachable!("reshape of a tensor"),
                }
            } else {
                arg(0).clone()
            };
            return Ok((Slot::Tensor(t.reshape(&out_shape)?), variant));
        }
        Op::UpsampleNearest { h, w } => {
            let x = arg(0);
            let s = x.shape();
            let nd = s.len();
            let planes: usize = s[..nd - 2].iter().product();
            ew::upsample_nearest(x.data(), planes, s[nd - 2], s[nd - 1], *h, *w, &mut y);
        }
        Op::TimestepProj {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
        } => ew::timestep_embedding(
            arg(0).data(),
            *dim,
            *flip_sin_to_cos,
            *downscale_freq_shift,
            &mut y,
        ),
        Op::LfqCodes { bits, scale } => {
            let ids = arg(0).ids().expect("the builder gives LFQ integer ids");
            let (bits, s) = (*bits, *scale);
            for (row, &id) in y.chunks_exact_mut(bits).zip(ids) {
                if id < 0 || (id as u64) >> bits != 0 {
                    return Err(Error::input(
                        &node.path,
                        format!("token id {id} is not a {bits}-bit LFQ code"),
                    ));
                }
                for (k, v) in row.iter_mut().enumerate() {
                    *v = if (id as u64 >> (bits - 1 - k)) & 1 == 1 {
                        s
                    } else {
                        -s
                    };
                }
            }
        }
        Op::TokenEmbedding { table } => {
            let ids = arg(0)
                .ids()
                .expect("the builder gives embeddings integer ids");
            let (vocab, d) = (w.shape(*table)[0], w.shape(*table)[1]);
            let tab = w.f32(*table);
            for (r, &id) in ids.iter().enumerate() {
                if id < 0 || id as usize >= vocab {
                    return Err(Error::input(
                        &node.path,
                        format!("token id {id} is outside the vocabulary of {vocab}"),
                    ));
                }
                let id = id as usize;
                y[r * d..(r + 1) * d].copy_from_slice(&tab[id * d..(id + 1) * d]);
            }
        }
        Op::PositionEmbedding { table } => {
            let x = arg(0);
            let (l, d) = (x.shape()[1], x.shape()[2]);
            let positions = w.shape(*table)[0];
            if offset + l > positions {
                return Err(Error::input(
                    &node.path,
                    format!(
                        "positions {offset}..{} past the table's {positions}",
                        offset + l
                    ),
                ));
            }
            let table = w.f32(*table);
            let pos = &table[offset * d..(offset + l) * d];
            ew::broadcast_binary(x.data(), x.shape(), pos, &[l, d], &mut y, |a, b| a + b);
        }
        Op::Rope {
            heads,
            head_dim,
            theta,
        } => {
            let x = arg(0);
            let s = x.shape();
            ew::rope(
                x.data(),
                (s[0], s[1], *heads, *head_dim),
                *theta,
                offset,
                &mut y,
            );
        }
        Op::CacheWrite { slot } => {
            let x = arg(0);
            let [b, cap, c] = [out_shape[0], out_shape[1], out_shape[2]];
            let l = x.shape()[1];
            let cache = state.cache_mut(*slot, [b, cap, c])?;
            for bi in 0..b {
                let dst = &mut cache.data[(bi * cap + offset) * c..][..l * c];
                dst.copy_from_slice(&x.data()[bi * l * c..][..l * c]);
            }
            return Ok((
                Slot::View {
                    slot: *slot,
                    len: offset + l,
                },
                variant,
            ));
        }
        Op::CacheView { slot } => {
            let shape = [out_shape[0], out_shape[1], out_shape[2]];
            match state.cache(*slot) {
                Some(c) if c.shape == shape => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "{}: reads cache {slot}, which no run of this state filled as {shape:?}",
                        node.path
                    )))
                }
            }
            // Rows this run wrote to the slot before this node count too.
            let len = offset
                + if plan.view_after_write[i] {
                    plan.cache_step.unwrap_or(0)
                } else {
                    0
                };
            if len == 0 {
                return Err(Error::invalid(format!(
                    "{}: reads cache {slot}, which holds no positions yet",
                    node.path
                )));
            }
            return Ok((Slot::View { slot: *slot, len }, variant));
        }
        Op::SqueezeExcite {
            to_k,
            to_k_bias,
            w1,
            b1,
            w2,
            b2,
        } => {
            let x = arg(0);
            let &[n, c, t, h, wd] = x.shape() else {
                unreachable!("the builder gives squeeze-excitation (N, C, T, H, W)")
            };
            let (wk, bk, w1, b1, w2, b2) = (
                w.f32(*to_k),
                w.f32(*to_k_bias),
                w.f32(*w1),
                w.f32(*b1),
                w.f32(*w2),
                w.f32(*b2),
            );
            let p = mixers::SqueezeExciteWeights {
                to_k: &wk,
                to_k_bias: bk[0],
                w1: &w1,
                b1: &b1,
                w2: &w2,
                b2: &b2,
            };
            mixers::squeeze_excite(x.data(), [n, c, t, h, wd], &p, &mut y);
        }
        Op::MemoryKv { table, index } => {
            let x = arg(0);
            let &[b, l, hd] = x.shape() else {
                unreachable!("the builder gives memory kv (B, L, H·D)")
            };
            let ts = w.shape(*table).to_vec();
            let tab = w.f32(*table);
            mixers::memory_kv(
                x.data(),
                [b, l, hd],
                &tab,
                [ts[1], ts[2], ts[3]],
                *index,
                &mut y,
            );
        }
        Op::LinearAttention {
            heads,
            head_dim,
            scale,
        } => {
            let q = arg(0);
            let &[b, l, _] = q.shape() else {
                unreachable!("the builder gives linear attention (B, L, H·D)")
            };
            mixers::linear_attention(
                q.data(),
                arg(1).data(),
                arg(2).data(),
                [b, l, *heads, *head_dim],
                *scale,
                &mut y,
            );
        }
        Op::GateLoop => {
            let x = arg(0);
            let &[n, t, c3] = x.shape() else {
                unreachable!("the builder gives gate loop (N, T, 3C)")
            };
            mixers::gate_loop(x.data(), [n, t, c3 / 3], &mut y);
        }
        Op::TokenShift => {
            let x = arg(0);
            let &[n, t, c] = x.shape() else {
                unreachable!("the builder gives token shift (N, T, C)")
            };
            mixers::token_shift(x.data(), [n, t, c], &mut y);
        }
        Op::ZeroPad { axis, before } => {
            let x = arg(0);
            let s = x.shape();
            let inner: usize = s[axis + 1..].iter().product();
            let (src, dst) = (s[*axis] * inner, (s[*axis] + before) * inner);
            for (yc, xc) in y.chunks_exact_mut(dst).zip(x.data().chunks_exact(src)) {
                yc[..before * inner].fill(0.0);
                yc[before * inner..].copy_from_slice(xc);
            }
        }
        Op::GatherEos { eos_id } => {
            let (h, ids) = (arg(0), arg(1));
            let ids = ids.ids().expect("the builder gives gathers integer ids");
            let (b, l, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
            for bi in 0..b {
                let row = &ids[bi * l..(bi + 1) * l];
                let pos = match eos_id {
                    // torch.argmax: first index of the maximum.
                    None => {
                        row.iter()
                            .enumerate()
                            .fold(
                                (0, i64::MIN),
                                |(bi_, bv), (j, &v)| {
                                    if v > bv {
                                        (j, v)
                                    } else {
                                        (bi_, bv)
                                    }
                                },
                            )
                            .0
                    }
                    Some(e) => row.iter().position(|&v| v == i64::from(*e)).unwrap_or(0),
                };
                y[bi * d..(bi + 1) * d]
                    .copy_from_slice(&h.data()[(bi * l + pos) * d..(bi * l + pos + 1) * d]);
            }
        }
    }
    Ok((Slot::Tensor(Tensor::new(out_shape, y)?), variant))
}
