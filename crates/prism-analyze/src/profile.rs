//! Measured time per node, aggregated the way the analyzer aggregates predictions, plus a
//! Chrome / Perfetto trace.

use crate::analysis::{layer_key, node_time};
use crate::hardware::Hardware;
use prism_core::cost::{graph_costs, NodeCost};
use prism_core::{Category, Graph, Op};
use prism_runtime::{mem, plan, KernelChoice, NodeEvent, Observer, RunStats};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

struct NodeAgg {
    class: String,
    path: String,
    op: &'static str,
    variant: &'static str,
    category: Category,
    time_s: f64,
    calls: usize,
    cost: NodeCost,
}

#[derive(Default)]
struct StageAgg {
    order: usize,
    runs: usize,
    wall_s: f64,
    node_sum_s: f64,
    nodes: BTreeMap<usize, NodeAgg>,
    predicted_s: f64,
    predicted_by_cat: BTreeMap<Category, f64>,
    predicted_by_class: BTreeMap<String, f64>,
    predicted_activation: usize,
    measured_live_peak: usize,
    rss_before: Option<usize>,
    rss_peak: Option<usize>,
    /// Shape of the graph's first input: a stage name run on graphs of two shapes (a video
    /// decoder's remainder chunk) is kept as two stages.
    input_shape: Vec<usize>,
}

/// Collects every node event of a pipeline run.
pub struct Profiler {
    t0: Instant,
    hw: Hardware,
    threads: usize,
    stages: BTreeMap<String, StageAgg>,
    trace: Vec<serde_json::Value>,
    keep_trace: bool,
    kernels: KernelChoice,
    /// Highest resident memory seen (per-stage measurements reset the kernel's counter).
    max_rss: usize,
    current_rss_before: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileCategory {
    pub category: String,
    pub time_s: f64,
    pub share: f64,
    pub flops: u64,
    pub bytes: u64,
    pub achieved_gflops: f64,
    pub achieved_gbps: f64,
    pub predicted_s: f64,
    pub predicted_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileOp {
    pub path: String,
    pub op: String,
    pub category: String,
    pub calls: usize,
    pub time_s: f64,
    pub share: f64,
    pub flops: u64,
    pub achieved_gflops: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileMemory {
    /// The buffer plan's peak (activations + scratch) for one run.
    pub predicted_activation_bytes: u64,
    /// The executor's own count of live activations at its peak.
    pub measured_live_bytes: u64,
    /// Process resident memory before the first run and its peak during it.
    pub rss_before_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub rss_growth_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileStage {
    pub name: String,
    /// Categories with attention split by kind and convolution into spatial / temporal.
    pub classes: Vec<ProfileCategory>,
    /// Kernel variants that ran, with how many node executions used each.
    pub variants: BTreeMap<String, usize>,
    pub runs: usize,
    pub wall_s: f64,
    /// Sum of node times (the rest of wall_s is executor overhead).
    pub nodes_s: f64,
    pub predicted_s: f64,
    pub categories: Vec<ProfileCategory>,
    pub top_ops: Vec<ProfileOp>,
    pub layers: Vec<ProfileOp>,
    pub memory: ProfileMemory,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub schema: &'static str,
    pub model: String,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub attention_impl: String,
    pub threads: usize,
    pub hardware: Hardware,
    pub wall_s: f64,
    pub stages: Vec<ProfileStage>,
    pub peak_rss_bytes: Option<u64>,
}

pub const PROFILE_SCHEMA: &str = "prism.profile/1";

impl Profiler {
    pub fn new(hw: Hardware, threads: usize, kernels: KernelChoice, keep_trace: bool) -> Self {
        Self {
            kernels,
            max_rss: 0,
            current_rss_before: None,
            t0: Instant::now(),
            hw,
            threads,
            stages: BTreeMap::new(),
            trace: Vec::new(),
            keep_trace,
        }
    }

    fn tid(&self, stage: &str) -> usize {
        self.stages.get(stage).map_or(0, |s| s.order + 1)
    }

    /// The Chrome / Perfetto trace (JSON object format).
    pub fn trace_json(&self) -> serde_json::Value {
        let mut events =
            vec![json!({"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "prism"}})];
        for (name, s) in &self.stages {
            events.push(json!({"ph": "M", "pid": 1, "tid": s.order + 1, "name": "thread_name", "args": {"name": name}}));
        }
        events.extend(self.trace.iter().cloned());
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }

    pub fn report(
        &self,
        model: &str,
        settings: BTreeMap<String, serde_json::Value>,
        attention_impl: &str,
        top: usize,
        layer_depth: usize,
    ) -> ProfileReport {
        let mut stages: Vec<(&String, &StageAgg)> = self.stages.iter().collect();
        stages.sort_by_key(|(_, s)| s.order);
        let stages = stages
            .into_iter()
            .map(|(name, s)| {
                let total = s.node_sum_s.max(f64::MIN_POSITIVE);
                let mut by_cat: BTreeMap<Category, (f64, NodeCost)> = BTreeMap::new();
                for n in s.nodes.values() {
                    let e = by_cat.entry(n.category).or_default();
                    e.0 += n.time_s;
                    e.1 += n.cost.scaled(n.calls as u64);
                }
                let categories = by_cat
                    .into_iter()
                    .map(|(c, (t, cost))| {
                        let p = s.predicted_by_cat.get(&c).copied().unwrap_or(0.0) * s.runs as f64;
                        ProfileCategory {
                            category: c.name().into(),
                            time_s: t,
                            share: t / total,
                            flops: cost.flops,
                            bytes: cost.bytes,
                            achieved_gflops: cost.flops as f64 / t.max(1e-12) / 1e9,
                            achieved_gbps: cost.bytes as f64 / t.max(1e-12) / 1e9,
                            predicted_s: p,
                            predicted_share: p
                                / (s.predicted_s * s.runs as f64).max(f64::MIN_POSITIVE),
                        }
                    })
                    .collect();
                let op_row = |path: String,
                              op: String,
                              category: Category,
                              calls: usize,
                              t: f64,
                              flops: u64| ProfileOp {
                    path,
                    op,
                    category: category.name().into(),
                    calls,
                    time_s: t,
                    share: t / total,
                    flops,
                    achieved_gflops: flops as f64 / t.max(1e-12) / 1e9,
                };
                let mut ops: Vec<ProfileOp> = s
                    .nodes
                    .values()
                    .map(|n| {
                        op_row(
                            n.path.clone(),
                            n.op.into(),
                            n.category,
                            n.calls,
                            n.time_s,
                            n.cost.flops * n.calls as u64,
                        )
                    })
                    .collect();
                ops.sort_by(|a, b| b.time_s.partial_cmp(&a.time_s).unwrap());
                ops.truncate(top);
                let mut layers: BTreeMap<String, (usize, f64, u64, usize)> = BTreeMap::new();
                for (&i, n) in &s.nodes {
                    let e = layers
                        .entry(layer_key(&n.path, layer_depth))
                        .or_insert((i, 0.0, 0, 0));
                    e.1 += n.time_s;
                    e.2 += n.cost.flops * n.calls as u64;
                    e.3 += n.calls;
                }
                let mut layers: Vec<(usize, ProfileOp)> = layers
                    .into_iter()
                    .map(|(p, (first, t, f, calls))| {
                        (
                            first,
                            op_row(p, "layer".into(), Category::Other, calls, t, f),
                        )
                    })
                    .collect();
                layers.sort_by_key(|(f, _)| *f);
                let mut variants = BTreeMap::new();
                for n in s.nodes.values().filter(|n| !n.variant.is_empty()) {
                    *variants
                        .entry(format!("{} {}", n.op, n.variant))
                        .or_insert(0) += n.calls;
                }
                let mut by_class: BTreeMap<String, (f64, NodeCost)> = BTreeMap::new();
                for n in s.nodes.values() {
                    let e = by_class.entry(n.class.clone()).or_default();
                    e.0 += n.time_s;
                    e.1 += n.cost.scaled(n.calls as u64);
                }
                let classes = by_class
                    .into_iter()
                    .map(|(c, (t, cost))| {
                        let p =
                            s.predicted_by_class.get(&c).copied().unwrap_or(0.0) * s.runs as f64;
                        ProfileCategory {
                            category: c,
                            time_s: t,
                            share: t / total,
                            flops: cost.flops,
                            bytes: cost.bytes,
                            achieved_gflops: cost.flops as f64 / t.max(1e-12) / 1e9,
                            achieved_gbps: cost.bytes as f64 / t.max(1e-12) / 1e9,
                            predicted_s: p,
                            predicted_share: p
                                / (s.predicted_s * s.runs as f64).max(f64::MIN_POSITIVE),
                        }
                    })
                    .collect();
                ProfileStage {
                    name: name.clone(),
                    classes,
                    variants,
                    runs: s.runs,
                    wall_s: s.wall_s,
                    nodes_s: s.node_sum_s,
                    predicted_s: s.predicted_s * s.runs as f64,
                    categories,
                    top_ops: ops,
                    layers: layers.into_iter().map(|(_, l)| l).collect(),
                    memory: ProfileMemory {
                        predicted_activation_bytes: s.predicted_activation as u64,
                        measured_live_bytes: s.measured_live_peak as u64,
                        rss_before_bytes: s.rss_before.map(|v| v as u64),
                        rss_peak_bytes: s.rss_peak.map(|v| v as u64),
                        rss_growth_bytes: match (s.rss_before, s.rss_peak) {
                            (Some(a), Some(b)) => Some(b.saturating_sub(a) as u64),
                            _ => None,
                        },
                    },
                }
            })
            .collect();
        ProfileReport {
            schema: PROFILE_SCHEMA,
            model: model.into(),
            settings,
            attention_impl: attention_impl.into(),
            threads: self.threads,
            hardware: self.hw.clone(),
            wall_s: self.t0.elapsed().as_secs_f64(),
            stages,
            peak_rss_bytes: mem::peak_rss_bytes().map(|v| v.max(self.max_rss) as u64),
        }
    }
}

impl Observer for Profiler {
    fn before_run(&mut self, _stage: &str, _run: usize) {
        // Resident growth is measured over every run; a stage keeps its first run's.
        self.max_rss = self.max_rss.max(mem::peak_rss_bytes().unwrap_or(0));
        mem::reset_peak();
        self.current_rss_before = mem::rss_bytes();
    }

    fn after_run(
        &mut self,
        stage: &str,
        run: usize,
        graph: &Graph,
        started: Instant,
        events: &[NodeEvent],
        stats: &RunStats,
    ) {
        let costs = graph_costs(graph, 4);
        let shape = graph
            .inputs
            .first()
            .map(|(_, v)| graph.values[*v].shape.clone())
            .unwrap_or_default();
        let key = match self.stages.get(stage) {
            Some(s) if s.input_shape != shape => format!("{stage} {shape:?}"),
            _ => stage.to_string(),
        };
        let stage = key.as_str();
        let order = self.stages.len();
        let rss_before = self.current_rss_before;
        self.stages.entry(key.clone()).or_insert_with(|| StageAgg {
            order,
            input_shape: shape.clone(),
            rss_before,
            ..Default::default()
        });
        let tid = self.tid(stage);
        let base_us = (started - self.t0).as_secs_f64() * 1e6;
        let hw = self.hw.clone();
        let first = self.stages.get(stage).is_some_and(|s| s.runs == 0);
        let s = self.stages.get_mut(stage).expect("registered above");
        if first {
            s.rss_peak = mem::peak_rss_bytes();
            let mp = plan(graph, self.threads, &self.kernels);
            s.predicted_activation = mp.peak_bytes;
            for (i, n) in graph.nodes.iter().enumerate() {
                if matches!(n.op, Op::Input { .. }) {
                    continue;
                }
                let t = node_time(&costs[i], &hw);
                s.predicted_s += t;
                *s.predicted_by_cat.entry(n.op.category()).or_default() += t;
                *s.predicted_by_class
                    .entry(crate::analysis::node_class(n))
                    .or_default() += t;
            }
        }
        s.runs += 1;
        s.wall_s += stats.wall.as_secs_f64();
        s.measured_live_peak = s.measured_live_peak.max(stats.peak_live_bytes);
        for e in events {
            let n = &graph.nodes[e.node];
            let t = e.duration.as_secs_f64();
            s.node_sum_s += t;
            let agg = s.nodes.entry(e.node).or_insert_with(|| NodeAgg {
                class: crate::analysis::node_class(n),
                path: n.path.clone(),
                op: n.op.name(),
                variant: e.variant,
                category: n.op.category(),
                cost: costs[e.node],
                time_s: 0.0,
                calls: 0,
            });
            agg.time_s += t;
            agg.calls += 1;
        }
        if self.keep_trace {
            for e in events {
                let n = &graph.nodes[e.node];
                let shapes: Vec<String> = n
                    .inputs
                    .iter()
                    .map(|&v| format!("{:?}", graph.values[v].shape))
                    .collect();
                self.trace.push(json!({
                    "name": n.path,
                    "cat": n.op.category().name(),
                    "ph": "X",
                    "pid": 1,
                    "tid": tid,
                    "ts": base_us + e.start.as_secs_f64() * 1e6,
                    "dur": e.duration.as_secs_f64() * 1e6,
                    "args": {
                        "op": n.op.name(),
                        "variant": e.variant,
                        "node": e.node,
                        "stage": stage,
                        "run": run,
                        "inputs": shapes,
                        "output": format!("{:?}", graph.values[n.output].shape),
                        "flops": costs[e.node].flops,
                        "bytes": costs[e.node].bytes,
                    }
                }));
            }
        }
    }
}
