//! Aligned text tables for people.

use crate::analysis::{Costs, Report};
use crate::profile::ProfileReport;
use std::fmt::Write;

/// 1234567 → "1.23 M"-style with SI prefixes.
pub fn si(v: f64, unit: &str) -> String {
    let (d, p) = if v >= 1e15 {
        (1e15, "P")
    } else if v >= 1e12 {
        (1e12, "T")
    } else if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.2} {p}{unit}", v / d)
}

pub fn bytes(v: u64) -> String {
    let v = v as f64;
    if v >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", v / (1u64 << 30) as f64)
    } else if v >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", v / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", v / 1024.0)
    }
}

pub fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

/// A table with a header row; columns after the first are right-aligned.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn render(&self, indent: &str) -> String {
        let n = self.rows[0].len();
        let w: Vec<usize> = (0..n)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (ri, r) in self.rows.iter().enumerate() {
            out.push_str(indent);
            for (c, cell) in r.iter().enumerate() {
                let pad = w[c] - cell.chars().count();
                if c == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.push('\n');
            if ri == 0 {
                out.push_str(indent);
                out.push_str(&"-".repeat(w.iter().sum::<usize>() + 2 * (n - 1)));
                out.push('\n');
            }
        }
        out
    }
}

fn cost_cells(c: &Costs) -> Vec<String> {
    vec![
        si(c.flops as f64, "FLOP"),
        si(c.elem_ops as f64, "op"),
        bytes(c.bytes),
        format!("{:.1}", c.intensity),
        secs(c.predicted_s),
    ]
}

pub fn analysis(r: &Report, layers: bool) -> String {
    let mut o = String::new();
    let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(o, "prism analyze: {} ({})", r.model, settings.join(", "));
    let _ = writeln!(
        o,
        "hardware: {} — f32 peak {}, bandwidth {}/s ({})\n",
        r.hardware.name,
        si(r.hardware.peak_flops_f32, "FLOP/s"),
        si(r.hardware.mem_bandwidth, "B"),
        r.hardware.source
    );
    let mut t = Table::new(&[
        "stage",
        "runs",
        "params",
        "FLOPs/run",
        "elem ops/run",
        "bytes/run",
        "FLOP/B",
        "roofline/run",
        "weights",
        "kept filters",
        "peak act.",
    ]);
    for s in &r.stages {
        let mut row = vec![s.name.clone(), s.runs.to_string(), si(s.params as f64, "")];
        let c = cost_cells(&s.per_run);
        row.extend(c);
        row.push(bytes(s.memory.weight_bytes));
        row.push(bytes(s.memory.kept_filter_bytes));
        row.push(bytes(s.memory.peak_activation_bytes));
        t.row(row);
    }
    o += &t.render("");
    let _ = writeln!(
        o,
        "\nwhole generation: {} ({} element-wise ops not counted by torch), {} moved, roofline {}; peak memory {} (weights + kept filters + largest activation peak)\n",
        si(r.total.flops as f64, "FLOP"),
        si(r.total.elem_ops as f64, "op"),
        bytes(r.total.bytes),
        secs(r.total.predicted_s),
        bytes(r.peak_memory_bytes)
    );
    let _ = writeln!(o, "by category, whole generation:");
    let mut t = Table::new(&[
        "category", "nodes", "FLOPs", "FLOP %", "elem ops", "bytes", "FLOP/B", "roofline", "time %",
    ]);
    for c in &r.total_categories {
        let cc = cost_cells(&c.costs);
        t.row(vec![
            c.category.clone(),
            c.nodes.to_string(),
            cc[0].clone(),
            format!("{:.1}%", c.flops_share * 100.0),
            cc[1].clone(),
            cc[2].clone(),
            cc[3].clone(),
            cc[4].clone(),
            format!("{:.1}%", c.time_share * 100.0),
        ]);
    }
    o += &t.render("  ");
    let phases: Vec<_> = r.stages.iter().filter(|s| s.key_lens.is_some()).collect();
    if !phases.is_empty() {
        let _ = writeln!(
            o,
            "\ndecoder phases (keys: live length of the first and last run):"
        );
        let mut t = Table::new(&[
            "phase",
            "runs",
            "keys",
            "FLOPs",
            "bytes",
            "FLOP/B",
            "roofline",
            "KV cache",
            "static-cache FLOPs",
        ]);
        for s in &phases {
            let [a, z] = s.key_lens.unwrap_or_default();
            let kv = s.kv_cache.as_ref().map_or(String::new(), |k| {
                format!("{} → {}", bytes(k.first_bytes), bytes(k.last_bytes))
            });
            t.row(vec![
                s.name.clone(),
                s.runs.to_string(),
                format!("{a}..{z}"),
                si(s.total.flops as f64, "FLOP"),
                bytes(s.total.bytes),
                format!("{:.1}", s.total.intensity),
                secs(s.total.predicted_s),
                kv,
                si(s.static_cache_flops.unwrap_or(0) as f64, "FLOP"),
            ]);
        }
        o += &t.render("  ");
    }
    for s in &r.stages {
        let _ = writeln!(o, "\n{} (one run):", s.name);
        let mut t = Table::new(&[
            "category", "nodes", "FLOPs", "FLOP %", "bytes", "FLOP/B", "roofline", "time %",
        ]);
        for c in &s.categories {
            let cc = cost_cells(&c.costs);
            t.row(vec![
                c.category.clone(),
                c.nodes.to_string(),
                cc[0].clone(),
                format!("{:.1}%", c.flops_share * 100.0),
                cc[2].clone(),
                cc[3].clone(),
                cc[4].clone(),
                format!("{:.1}%", c.time_share * 100.0),
            ]);
        }
        o += &t.render("  ");
        let ops: Vec<String> = s
            .torch_ops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "  FLOPs by torch operator: {} (total {})",
            ops.join(", "),
            s.per_run.flops
        );
        if !s.attention_buckets.is_empty() {
            let _ = writeln!(o, "  attention sequence lengths (query x key):");
            let mut t = Table::new(&["kind", "query", "key", "nodes", "FLOPs", "share"]);
            for b in &s.attention_buckets {
                t.row(vec![
                    b.kind.clone(),
                    b.query_len.to_string(),
                    b.key_len.to_string(),
                    b.count.to_string(),
                    si(b.flops as f64, "FLOP"),
                    format!("{:.1}%", b.flops_share * 100.0),
                ]);
            }
            o += &t.render("    ");
            let mut qs: Vec<usize> = s.attention.iter().map(|a| a.query_len).collect();
            qs.sort_unstable_by(|a, b| b.cmp(a));
            qs.dedup();
            if qs.len() > 1 {
                let steps: Vec<String> = qs
                    .windows(2)
                    .map(|w| format!("{:.0}x", w[0] as f64 / w[1] as f64))
                    .collect();
                let list: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
                let _ = writeln!(
                    o,
                    "    query lengths in one pass: {} ({:.0}x range; {} between levels)",
                    list.join(", "),
                    qs[0] as f64 / qs[qs.len() - 1] as f64,
                    steps.join(", ")
                );
            }
        }
        if layers {
            let _ = writeln!(o, "  by layer:");
            let mut t = Table::new(&["layer", "nodes", "FLOPs", "bytes", "roofline"]);
            for l in &s.layers {
                t.row(vec![
                    l.path.clone(),
                    l.nodes.to_string(),
                    si(l.costs.flops as f64, "FLOP"),
                    bytes(l.costs.bytes),
                    secs(l.costs.predicted_s),
                ]);
            }
            o += &t.render("    ");
        }
    }
    o
}

/// Temporal vs spatial attention, from per-class rows: (temporal share of attention time,
/// of attention FLOPs, seconds per GFLOP temporal, seconds per GFLOP spatial self).
pub fn temporal_summary(rows: &[(String, f64, u64)]) -> Option<(f64, f64, f64, f64)> {
    let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| (r.1, r.2));
    let (tt, tf) = get("Attention (temporal)")?;
    let (at, af) = rows
        .iter()
        .filter(|r| r.0.starts_with("Attention"))
        .fold((0.0, 0u64), |(a, b), r| (a + r.1, b + r.2));
    let (st, sf) = get("Attention (self)").unwrap_or((0.0, 0));
    let per = |t: f64, f: u64| {
        if f == 0 {
            f64::NAN
        } else {
            t / (f as f64 / 1e9)
        }
    };
    Some((
        tt / at.max(1e-30),
        tf as f64 / af.max(1) as f64,
        per(tt, tf),
        per(st, sf),
    ))
}

fn temporal_line(rows: &[(String, f64, u64)], what: &str) -> Option<String> {
    let (ts, fs, pt, ps) = temporal_summary(rows)?;
    Some(format!(
        "  temporal attention: {:.1}% of attention {what}, {:.1}% of attention FLOPs; {:.3} s/GFLOP temporal vs {:.3} s/GFLOP spatial self ({:.1}x)",
        ts * 100.0,
        fs * 100.0,
        pt,
        ps,
        pt / ps
    ))
}

pub fn profile(r: &ProfileReport) -> String {
    let mut o = String::new();
    let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        o,
        "prism profile: {} ({}), attention {}, {} threads",
        r.model,
        settings.join(", "),
        r.attention_impl,
        r.threads
    );
    let _ = writeln!(
        o,
        "prediction: roofline on {} ({}, {}/s)\n",
        r.hardware.name,
        si(r.hardware.peak_flops_f32, "FLOP/s"),
        si(r.hardware.mem_bandwidth, "B")
    );
    let mut t = Table::new(&[
        "stage",
        "runs",
        "wall",
        "per run",
        "roofline/run",
        "pred. act.",
        "live act.",
        "RSS growth",
    ]);
    for s in &r.stages {
        t.row(vec![
            s.name.clone(),
            s.runs.to_string(),
            secs(s.wall_s),
            secs(s.wall_s / s.runs.max(1) as f64),
            secs(s.predicted_s / s.runs.max(1) as f64),
            bytes(s.memory.predicted_activation_bytes),
            bytes(s.memory.measured_live_bytes),
            s.memory.rss_growth_bytes.map_or("n/a".into(), bytes),
        ]);
    }
    o += &t.render("");
    for s in &r.stages {
        let _ = writeln!(
            o,
            "\n{} ({} run{}, {} in nodes):",
            s.name,
            s.runs,
            if s.runs == 1 { "" } else { "s" },
            secs(s.nodes_s)
        );
        let mut t = Table::new(&[
            "category",
            "time",
            "share",
            "GFLOP/s",
            "GB/s",
            "roofline",
            "pred. share",
        ]);
        for c in &s.categories {
            t.row(vec![
                c.category.clone(),
                secs(c.time_s),
                format!("{:.1}%", c.share * 100.0),
                format!("{:.1}", c.achieved_gflops),
                format!("{:.1}", c.achieved_gbps),
                secs(c.predicted_s),
                format!("{:.1}%", c.predicted_share * 100.0),
            ]);
        }
        o += &t.render("  ");
        let rows: Vec<(String, f64, u64)> = s
            .classes
            .iter()
            .map(|c| (c.category.clone(), c.time_s, c.flops))
            .collect();
        if let Some(l) = temporal_line(&rows, "time") {
            let _ = writeln!(o, "{l}");
        }
        let _ = writeln!(o, "  top operators:");
        let mut t = Table::new(&["node", "op", "calls", "time", "share", "GFLOP/s"]);
        for op in &s.top_ops {
            t.row(vec![
                op.path.clone(),
                op.op.clone(),
                op.calls.to_string(),
                secs(op.time_s),
                format!("{:.1}%", op.share * 100.0),
                format!("{:.1}", op.achieved_gflops),
            ]);
        }
        o += &t.render("    ");
    }
    if let Some(p) = r.peak_rss_bytes {
        let _ = writeln!(o, "\nprocess peak resident memory: {}", bytes(p));
    }
    o
}

/// The stage a video generation runs once per step: the UNet (diffusion) or the transformer
/// (masked tokens).
fn step_stage(r: &Report) -> Option<&crate::analysis::StageReport> {
    r.stages
        .iter()
        .find(|s| s.name == "unet" || s.name == "transformer")
}

/// A frame-count sweep of a video model: one row per analysis.
pub fn sweep(reports: &[(usize, Report)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "prism analyze sweep: {} over frame counts\n",
        reports.first().map_or("", |r| r.1.model.as_str())
    );
    let mut t = Table::new(&[
        "frames",
        "FLOPs (all)",
        "denoiser FLOPs/step",
        "peak memory",
        "roofline (all)",
        "temporal attn FLOP %",
        "temporal attn time %",
        "temporal s/GFLOP",
        "spatial s/GFLOP",
    ]);
    for (f, r) in reports {
        let unet = step_stage(r);
        let rows: Vec<(String, f64, u64)> = unet
            .map(|u| {
                u.classes
                    .iter()
                    .map(|c| (c.category.clone(), c.costs.predicted_s, c.costs.flops))
                    .collect()
            })
            .unwrap_or_default();
        let ts = temporal_summary(&rows);
        t.row(vec![
            f.to_string(),
            si(r.total.flops as f64, "FLOP"),
            unet.map_or(String::new(), |u| si(u.per_run.flops as f64, "FLOP")),
            bytes(r.peak_memory_bytes),
            secs(r.total.predicted_s),
            ts.map_or("-".into(), |t| format!("{:.1}%", t.1 * 100.0)),
            ts.map_or("-".into(), |t| format!("{:.1}%", t.0 * 100.0)),
            ts.map_or("-".into(), |t| format!("{:.4}", t.2)),
            ts.map_or("-".into(), |t| format!("{:.4}", t.3)),
        ]);
    }
    o += &t.render("");
    for (f, r) in reports {
        if let Some(u) = step_stage(r) {
            let _ = writeln!(o, "\n{f} frames, {} per step:", u.name);
            let mut t = Table::new(&[
                "class", "nodes", "FLOPs", "FLOP %", "bytes", "FLOP/B", "roofline", "time %",
            ]);
            for c in &u.classes {
                t.row(vec![
                    c.category.clone(),
                    c.nodes.to_string(),
                    si(c.costs.flops as f64, "FLOP"),
                    format!("{:.1}%", c.flops_share * 100.0),
                    bytes(c.costs.bytes),
                    format!("{:.1}", c.costs.intensity),
                    secs(c.costs.predicted_s),
                    format!("{:.1}%", c.time_share * 100.0),
                ]);
            }
            o += &t.render("  ");
        }
    }
    o
}

/// Per-layer CSV (every node) of an analysis.
pub fn analysis_csv(r: &Report) -> String {
    let mut o = String::from("stage,layer,nodes,flops,elem_ops,bytes,intensity,roofline_s\n");
    for s in &r.stages {
        for l in &s.layers {
            let _ = writeln!(
                o,
                "{},{},{},{},{},{},{:.3},{:.6e}",
                s.name,
                l.path,
                l.nodes,
                l.costs.flops,
                l.costs.elem_ops,
                l.costs.bytes,
                l.costs.intensity,
                l.costs.predicted_s
            );
        }
    }
    o
}

/// Per-layer CSV of a profile.
pub fn profile_csv(r: &ProfileReport) -> String {
    let mut o = String::from("stage,layer,calls,time_s,share,flops,gflops\n");
    for s in &r.stages {
        for l in &s.layers {
            let _ = writeln!(
                o,
                "{},{},{},{:.6e},{:.5},{},{:.2}",
                s.name, l.path, l.calls, l.time_s, l.share, l.flops, l.achieved_gflops
            );
        }
    }
    o
}
