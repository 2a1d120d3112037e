//! Static analysis of the graphs a generation runs: no weights, no computation.

use crate::hardware::Hardware;
use prism_core::cost::{node_cost_at, torch_op, NodeCost};
use prism_core::{Category, Graph, Op};
use prism_runtime::{plan, KernelChoice};
use serde::Serialize;
use std::collections::BTreeMap;

/// One graph of a pipeline and how many times it runs.
pub struct Stage<'a> {
    pub name: &'a str,
    pub graph: &'a Graph,
    pub runs: usize,
    /// A decoder phase: the live key length of its first and last run (one more per run).
    /// Attention and cache reads follow it, not the cache capacity the graph is built for.
    pub key_lens: Option<(usize, usize)>,
    /// The dtype the stage's weights are stored in (memory; the roofline's bytes assume f32).
    pub weight_dtype: prism_runtime::WeightDType,
}

/// Each node's cost summed over a stage's runs (each at its live key length), and its
/// roofline time summed likewise.
fn stage_totals(g: &Graph, s: &Stage, hw: &Hardware) -> (Vec<NodeCost>, Vec<f64>) {
    let mut costs = Vec::with_capacity(g.nodes.len());
    let mut times = Vec::with_capacity(g.nodes.len());
    for i in 0..g.nodes.len() {
        let (mut c, mut t) = (NodeCost::default(), 0.0);
        match s.key_lens {
            Some((first, last)) if first <= last => {
                let (a, z) = (
                    node_cost_at(g, i, 4, Some(first)),
                    node_cost_at(g, i, 4, Some(last)),
                );
                if a == z {
                    let n = (last - first + 1) as u64;
                    c = a.scaled(n);
                    t = node_time(&a, hw) * n as f64;
                } else {
                    for lk in first..=last {
                        let x = node_cost_at(g, i, 4, Some(lk));
                        c += x;
                        t += node_time(&x, hw);
                    }
                }
            }
            _ => {
                let x = node_cost_at(g, i, 4, None);
                c = x.scaled(s.runs as u64);
                t = node_time(&x, hw) * s.runs as f64;
            }
        }
        costs.push(c);
        times.push(t);
    }
    (costs, times)
}

/// KV-cache bytes of a decoder phase: live at its first run (before that run's rows are
/// written), at its last run (after), and the capacity the caches are allocated for.
#[derive(Clone, Debug, Serialize)]
pub struct KvCacheReport {
    pub first_bytes: u64,
    pub last_bytes: u64,
    pub capacity_bytes: u64,
    /// Bytes per cached position (all layers, keys and values, every row of the batch).
    pub bytes_per_position: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Costs {
    pub flops: u64,
    pub elem_ops: u64,
    pub bytes: u64,
    /// FLOPs per byte.
    pub intensity: f64,
    /// Roofline time, seconds: Σ over nodes of max(flops / peak, bytes / bandwidth).
    pub predicted_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CategoryRow {
    pub category: String,
    pub nodes: usize,
    #[serde(flatten)]
    pub costs: Costs,
    /// Share of the stage's FLOPs and of its predicted time.
    pub flops_share: f64,
    pub time_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub path: String,
    pub nodes: usize,
    #[serde(flatten)]
    pub costs: Costs,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttentionRow {
    pub path: String,
    pub kind: String,
    pub batch: usize,
    pub heads: usize,
    pub query_len: usize,
    pub key_len: usize,
    pub head_dim: usize,
    pub flops: u64,
}

/// Attention nodes grouped by (kind, query length, key length).
#[derive(Clone, Debug, Serialize)]
pub struct AttentionBucket {
    pub kind: String,
    pub query_len: usize,
    pub key_len: usize,
    pub count: usize,
    pub flops: u64,
    pub flops_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub weight_bytes: u64,
    /// Winograd filters kept once transformed (the UNet with `--keep-filters`; see
    /// `prism_runtime::kept_filter_bytes`).
    pub kept_filter_bytes: u64,
    /// Peak of activations + kernel scratch from the executor's buffer plan.
    pub peak_activation_bytes: u64,
    /// The largest set of live activations alone (no scratch, no pooled buffers).
    pub peak_live_bytes: u64,
    pub peak_node: String,
    /// KV caches at their capacity (decoder phases; 0 otherwise).
    pub kv_cache_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub name: String,
    pub runs: usize,
    pub params: u64,
    /// Decoder phases: the live key length of the first and last run.
    pub key_lens: Option<[usize; 2]>,
    /// Decoder phases: KV-cache bytes as the sequence grows.
    pub kv_cache: Option<KvCacheReport>,
    /// Decoder phases: FLOPs of all runs if every attention read the whole cache capacity,
    /// as transformers' static cache (Janus' `generate`) computes them; `total.flops` follows
    /// the live length (transformers' dynamic cache).
    pub static_cache_flops: Option<u64>,
    /// Costs of one run (the mean over runs for a decoder phase).
    pub per_run: Costs,
    /// Costs of all runs.
    pub total: Costs,
    /// Per-run FLOPs by the kind of torch operator FlopCounterMode files them under:
    /// `convolution`, `linear` (aten.addmm / mm / bmm) and `attention` (see `cost::torch_op`).
    pub torch_ops: BTreeMap<String, u64>,
    pub categories: Vec<CategoryRow>,
    /// The categories with attention split by kind and convolution into spatial / temporal.
    pub classes: Vec<CategoryRow>,
    pub layers: Vec<LayerRow>,
    pub attention: Vec<AttentionRow>,
    pub attention_buckets: Vec<AttentionBucket>,
    pub memory: MemoryReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Schema identifier of this JSON (see docs/analyze-json.md).
    pub schema: &'static str,
    pub model: String,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub hardware: Hardware,
    pub threads: usize,
    pub stages: Vec<StageReport>,
    /// Whole generation: every stage × its runs.
    pub total: Costs,
    pub total_categories: Vec<CategoryRow>,
    /// Weights (and kept filters) of every stage + the largest stage activation peak.
    pub peak_memory_bytes: u64,
    /// Parameters of the generation, each shared table (a decoder's prefill and decode)
    /// counted once.
    pub params: u64,
}

pub const SCHEMA: &str = "prism.analyze/1";

/// Roofline time of one node on `hw` (f32 math).
/// A finer class than the category, for the rows the video findings need: attention by kind
/// (self, cross, temporal, causal) and convolution split into spatial and temporal.
pub fn node_class(n: &prism_core::Node) -> String {
    n.op.class().into_owned()
}

pub fn node_time(c: &NodeCost, hw: &Hardware) -> f64 {
    (c.flops as f64 / hw.peak_flops_f32).max(c.bytes as f64 / hw.mem_bandwidth)
}

fn costs(c: &NodeCost, t: f64) -> Costs {
    Costs {
        flops: c.flops,
        elem_ops: c.elem_ops,
        bytes: c.bytes,
        intensity: c.intensity(),
        predicted_s: t,
    }
}

/// Module path cut to `depth` named components (indices ride along with their container):
/// `down_blocks.0.attentions.0.proj_in` at depth 2 → `down_blocks.0.attentions.0`.
pub fn layer_key(path: &str, depth: usize) -> String {
    let mut named = 0;
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('.') {
        let is_index = part.chars().all(|c| c.is_ascii_digit());
        if !is_index {
            if named == depth {
                break;
            }
            named += 1;
        }
        out.push(part);
    }
    out.join(".")
}

fn category_rows(g: &Graph, nc: &[NodeCost], times: &[f64], k: u64) -> Vec<CategoryRow> {
    let tf: u64 = nc.iter().map(|c| c.flops).sum::<u64>().max(1);
    let tt: f64 = times.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    Category::ALL
        .iter()
        .filter_map(|&cat| {
            let mut c = NodeCost::default();
            let mut t = 0.0;
            let mut nodes = 0;
            for (i, n) in g.nodes.iter().enumerate() {
                if n.op.category() == cat && !matches!(n.op, Op::Input { .. }) {
                    c += nc[i];
                    t += times[i];
                    nodes += 1;
                }
            }
            (nodes > 0).then(|| CategoryRow {
                category: cat.name().into(),
                nodes,
                flops_share: c.flops as f64 / tf as f64,
                time_share: t / tt,
                costs: costs(&c.scaled(k), t * k as f64),
            })
        })
        .collect()
}

fn class_rows(g: &Graph, nc: &[NodeCost], times: &[f64]) -> Vec<CategoryRow> {
    let tf: u64 = nc.iter().map(|c| c.flops).sum::<u64>().max(1);
    let tt: f64 = times.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut m: BTreeMap<String, (usize, NodeCost, f64)> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. }) {
            continue;
        }
        let e = m
            .entry(node_class(n))
            .or_insert((0, NodeCost::default(), 0.0));
        e.0 += 1;
        e.1 += nc[i];
        e.2 += times[i];
    }
    m.into_iter()
        .map(|(class, (nodes, c, t))| CategoryRow {
            category: class,
            nodes,
            flops_share: c.flops as f64 / tf as f64,
            time_share: t / tt,
            costs: costs(&c, t),
        })
        .collect()
}

pub fn analyze_stage(
    stage: &Stage,
    hw: &Hardware,
    threads: usize,
    kernels: &KernelChoice,
    layer_depth: usize,
) -> StageReport {
    let prepared = kernels.prepare(stage.graph);
    let g: &Graph = &prepared;
    let (tot, tot_t) = stage_totals(g, stage, hw);
    let runs = stage.runs.max(1) as u64;
    // Per run: the mean over runs (exact for stages whose runs all cost the same).
    let nc: Vec<NodeCost> = tot
        .iter()
        .map(|c| NodeCost {
            flops: c.flops / runs,
            elem_ops: c.elem_ops / runs,
            bytes: c.bytes / runs,
            weight_bytes: c.weight_bytes / runs,
        })
        .collect();
    let times: Vec<f64> = tot_t.iter().map(|t| t / runs as f64).collect();
    let mut run = NodeCost::default();
    for c in &nc {
        run += *c;
    }
    let t_run: f64 = times.iter().sum();
    let mut all = NodeCost::default();
    for c in &tot {
        all += *c;
    }
    let t_all: f64 = tot_t.iter().sum();
    let kv_cache = stage.key_lens.map(|(first, last)| {
        let per_pos: u64 = g
            .cache_slots()
            .iter()
            .map(|(_, s)| (s[0] * s[2] * 4) as u64)
            .sum();
        let cap = g.cache_slots().first().map_or(0, |(_, s)| s[1]) as u64;
        let new_rows = g
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::CacheWrite { .. }))
            .map_or(0, |n| g.values[n.inputs[0]].shape[1]) as u64;
        KvCacheReport {
            first_bytes: per_pos * (first as u64).saturating_sub(new_rows),
            last_bytes: per_pos * last as u64,
            capacity_bytes: per_pos * cap,
            bytes_per_position: per_pos,
        }
    });
    // transformers' static cache: a prefill (nothing cached before it) attends over its own
    // keys only; a decode step attends over every slot of the cache (masked).
    let static_cache_flops = stage.key_lens.map(|(first, _)| {
        let prefill = kv_cache.as_ref().is_some_and(|k| k.first_bytes == 0) || first == 0;
        if prefill {
            all.flops
        } else {
            (0..g.nodes.len())
                .map(|i| node_cost_at(g, i, 4, None).flops)
                .sum::<u64>()
                * stage.runs as u64
        }
    });
    let mut torch_ops = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(op) = torch_op(n) {
            *torch_ops.entry(op.to_string()).or_insert(0) += nc[i].flops;
        }
    }
    let mut layers: BTreeMap<String, (usize, NodeCost, f64, usize)> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. }) {
            continue;
        }
        let e = layers.entry(layer_key(&n.path, layer_depth)).or_insert((
            0,
            NodeCost::default(),
            0.0,
            i,
        ));
        e.0 += 1;
        e.1 += nc[i];
        e.2 += times[i];
    }
    let mut layers: Vec<(usize, LayerRow)> = layers
        .into_iter()
        .map(|(path, (nodes, c, t, first))| {
            (
                first,
                LayerRow {
                    path,
                    nodes,
                    costs: costs(&c, t),
                },
            )
        })
        .collect();
    layers.sort_by_key(|(first, _)| *first);
    let attention: Vec<AttentionRow> = g
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Attention(a) => {
                let q = &g.values[n.inputs[0]].shape;
                let k = &g.values[n.inputs[1]].shape;
                Some(AttentionRow {
                    path: n.path.clone(),
                    kind: a.kind.name().into(),
                    batch: q[0],
                    heads: a.heads,
                    query_len: q[1],
                    // A decoder phase: the live length of its last run.
                    key_len: stage.key_lens.map_or(k[1], |(_, last)| last),
                    head_dim: a.head_dim,
                    flops: nc[i].flops,
                })
            }
            _ => None,
        })
        .collect();
    let attn_total: u64 = attention.iter().map(|a| a.flops).sum::<u64>().max(1);
    let mut buckets: BTreeMap<(String, usize, usize), (usize, u64)> = BTreeMap::new();
    for a in &attention {
        let e = buckets
            .entry((a.kind.clone(), a.query_len, a.key_len))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += a.flops;
    }
    let mut attention_buckets: Vec<AttentionBucket> = buckets
        .into_iter()
        .map(|((kind, q, k), (count, flops))| AttentionBucket {
            kind,
            query_len: q,
            key_len: k,
            count,
            flops,
            flops_share: flops as f64 / attn_total as f64,
        })
        .collect();
    attention_buckets.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.query_len.cmp(&a.query_len)));
    let mp = plan(g, threads, kernels);
    StageReport {
        name: stage.name.into(),
        runs: stage.runs,
        params: g.param_count() as u64,
        per_run: costs(&run, t_run),
        key_lens: stage.key_lens.map(|(a, z)| [a, z]),
        kv_cache: kv_cache.clone(),
        static_cache_flops,
        total: costs(&all, t_all),
        torch_ops,
        categories: category_rows(g, &nc, &times, 1),
        classes: class_rows(g, &nc, &times),
        layers: layers.into_iter().map(|(_, l)| l).collect(),
        attention,
        attention_buckets,
        memory: MemoryReport {
            weight_bytes: prism_runtime::stored_weight_bytes(g, stage.weight_dtype),
            kept_filter_bytes: prism_runtime::kept_filter_bytes(g, kernels) as u64,
            peak_activation_bytes: mp.peak_bytes as u64,
            peak_live_bytes: mp.peak_live_bytes as u64,
            peak_node: g.nodes[mp.peak_node].path.clone(),
            kv_cache_bytes: kv_cache.as_ref().map_or(0, |k| k.capacity_bytes),
        },
    }
}

pub fn analyze(
    model: &str,
    settings: BTreeMap<String, serde_json::Value>,
    stages: &[Stage],
    hw: &Hardware,
    threads: usize,
    kernels: &KernelChoice,
    layer_depth: usize,
) -> Report {
    let reports: Vec<StageReport> = stages
        .iter()
        .map(|s| analyze_stage(s, hw, threads, kernels, layer_depth))
        .collect();
    let mut total = NodeCost::default();
    let mut t = 0.0;
    // Whole-generation categories: per-category sums over stages × runs.
    let mut cats: BTreeMap<String, (usize, NodeCost, f64)> = BTreeMap::new();
    for (s, r) in stages.iter().zip(&reports) {
        let prepared = kernels.prepare(s.graph);
        let g: &Graph = &prepared;
        let (tot, tot_t) = stage_totals(g, s, hw);
        for (i, n) in g.nodes.iter().enumerate() {
            if matches!(n.op, Op::Input { .. }) {
                continue;
            }
            let e =
                cats.entry(n.op.category().name().into())
                    .or_insert((0, NodeCost::default(), 0.0));
            e.0 += 1;
            e.1 += tot[i];
            e.2 += tot_t[i];
        }
        total += NodeCost {
            flops: r.total.flops,
            elem_ops: r.total.elem_ops,
            bytes: r.total.bytes,
            weight_bytes: 0,
        };
        t += r.total.predicted_s;
    }
    let tf = total.flops.max(1) as f64;
    let mut total_categories: Vec<CategoryRow> = Category::ALL
        .iter()
        .filter_map(|c| cats.get(c.name()).map(|v| (c, v)))
        .map(|(c, (nodes, nc, tt))| CategoryRow {
            category: c.name().into(),
            nodes: *nodes,
            flops_share: nc.flops as f64 / tf,
            time_share: tt / t.max(f64::MIN_POSITIVE),
            costs: costs(nc, *tt),
        })
        .collect();
    total_categories.retain(|r| r.nodes > 0);
    // Stages over one parameter table (a decoder's prefill and decode) share their weights.
    let mut seen = std::collections::HashSet::new();
    let (weights, params) = stages
        .iter()
        .zip(&reports)
        .filter(|(s, _)| seen.insert(s.graph.param_table_key()))
        .fold((0u64, 0u64), |(w, p), (_, r)| {
            (
                w + r.memory.weight_bytes + r.memory.kept_filter_bytes,
                p + r.params,
            )
        });
    let act = reports
        .iter()
        .map(|r| r.memory.peak_activation_bytes + r.memory.kv_cache_bytes)
        .max()
        .unwrap_or(0);
    Report {
        schema: SCHEMA,
        model: model.into(),
        settings,
        hardware: hw.clone(),
        threads,
        total: costs(&total, t),
        total_categories,
        peak_memory_bytes: weights + act,
        params,
        stages: reports,
    }
}
