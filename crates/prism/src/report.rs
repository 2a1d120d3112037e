//! The suite's report: `index.html` (self-contained: inline SVG charts drawn with plotters, no
//! scripts), `suite.json` and CSVs, written into one directory.

use crate::findings::{
    category_shares, flash_speedup, hw, predicted_shares, projected_classes, temporal_share,
};
use crate::suite::{Analysis, Family, SuiteResults, SweepPoint};
use prism_analyze::charts::{self, GroupedBars, Histogram, Lines, Profile, Roofline, StackedBars};
use prism_core::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

fn write_file(dir: &Path, name: &str, text: &str) -> Result<()> {
    crate::write_text_file(&dir.join(name), text, true)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn cpu(r: &crate::suite::ModelResult) -> Option<&Analysis> {
    hw(r, "cpu")
}

/// Write `suite.json`, the CSVs and `index.html` into `dir`.
pub fn write(dir: &Path, r: &SuiteResults) -> Result<()> {
    let json =
        serde_json::to_string_pretty(r).map_err(|e| Error::invalid(format!("suite.json: {e}")))?;
    write_file(dir, "suite.json", &json)?;
    // CSVs
    let mut m = String::from("model,family,kind,params,flops,bytes,peak_memory_bytes,predicted_s_cpu,predicted_s_a100,predicted_s_h100,flash_speedup\n");
    for x in &r.models {
        let p = |h: &str| hw(x, h).map_or(String::new(), |a| format!("{:.4}", a.predicted_s));
        let a = cpu(x);
        let _ = writeln!(
            m,
            "{},{:?},{},{},{},{},{},{},{},{},{}",
            x.model.name,
            x.model.family,
            csv_field(&x.model.kind),
            a.map_or(0, |a| a.params),
            a.map_or(0, |a| a.flops),
            a.map_or(0, |a| a.bytes),
            a.map_or(0, |a| a.peak_memory_bytes),
            p("cpu"),
            p("a100"),
            p("h100"),
            flash_speedup(x).map_or(String::new(), |s| format!("{s:.3}"))
        );
    }
    write_file(dir, "models.csv", &m)?;
    let mut c = String::from("model,source,attention,category,share\n");
    for x in &r.models {
        for (label, meas) in [("flash", &x.flash), ("naive", &x.naive)] {
            if let (Some(meas), Some(a)) = (meas, cpu(x)) {
                for (cat, s) in category_shares(&projected_classes(meas, a)) {
                    let _ = writeln!(c, "{},measured,{label},{cat},{s:.5}", x.model.name);
                }
            }
        }
        for h in ["cpu", "a100", "h100"] {
            if let Some(a) = hw(x, h) {
                for (cat, s) in predicted_shares(a) {
                    let _ = writeln!(c, "{},predicted {h},flash,{cat},{s:.5}", x.model.name);
                }
            }
        }
    }
    write_file(dir, "categories.csv", &c)?;
    // Per stage: its runs, its peak live activations and plan peak, and per class one run's
    // FLOPs and roofline seconds.
    let mut s = String::from(
        "sweep,model,value,hardware,stage,runs,peak_live_bytes,peak_activation_bytes,class,flops_per_run,predicted_s_per_run\n",
    );
    for (name, pts) in [
        ("size", &r.size_sweep),
        ("frames", &r.frame_sweep),
        ("decode", &r.decode_sweep),
    ] {
        for p in pts.iter() {
            for a in [&p.cpu, &p.a100] {
                for st in &a.stages {
                    for (class, f, t) in &st.classes {
                        let _ = writeln!(
                            s,
                            "{name},{},{},{},{},{},{},{},{},{f},{t:.6e}",
                            p.model,
                            p.value,
                            a.key,
                            st.name,
                            st.runs,
                            st.peak_live_bytes,
                            st.peak_activation_bytes,
                            csv_field(class)
                        );
                    }
                }
            }
        }
    }
    write_file(dir, "sweeps.csv", &s)?;
    let mut f = String::from("id,finding,paper,measured_cpu,predicted_a100,verdict,why,source\n");
    for x in &r.findings {
        let _ = writeln!(
            f,
            "{}",
            [
                &x.id,
                &x.finding,
                &x.paper,
                &x.measured_cpu,
                &x.predicted_a100,
                &x.verdict,
                &x.why,
                &x.source
            ]
            .iter()
            .map(|v| csv_field(v))
            .collect::<Vec<_>>()
            .join(",")
        );
    }
    write_file(dir, "findings.csv", &f)?;
    if let Some(t) = &r.memory_trace {
        let mut s =
            String::from("index,node,class,flops,predicted_live_bytes,measured_live_bytes\n");
        for (i, n) in t.nodes.iter().enumerate() {
            let _ = writeln!(
                s,
                "{i},{},{},{},{},{}",
                csv_field(&n.0),
                csv_field(&n.1),
                n.2,
                n.3,
                n.4
            );
        }
        write_file(dir, "memory_trace.csv", &s)?;
    } else {
        // No trace this run: an older one must not sit beside the new suite.json.
        let _ = std::fs::remove_file(dir.join("memory_trace.csv"));
    }
    write_file(dir, "index.html", &html(r))
}

fn section(o: &mut String, title: &str, note: &str, svgs: &[String]) {
    let _ = write!(
        o,
        "<section><h2>{}</h2><p class=\"note\">{}</p>",
        esc(title),
        esc(note)
    );
    for s in svgs {
        let _ = write!(o, "<figure>{s}</figure>");
    }
    o.push_str("</section>\n");
}

fn shares_bars(r: &SuiteResults) -> StackedBars {
    let mut bars = Vec::new();
    for x in &r.models {
        let Some(a) = cpu(x) else { continue };
        for (label, meas) in [("flash", &x.flash), ("naive", &x.naive)] {
            if let Some(meas) = meas {
                bars.push((
                    format!("{} {label}", x.model.name),
                    category_shares(&projected_classes(meas, a)),
                ));
            }
        }
    }
    StackedBars {
        title: "Measured time by category, flash vs naive attention".into(),
        y_label: "share of time".into(),
        bars,
    }
}

fn predicted_bars(r: &SuiteResults, h: &str) -> StackedBars {
    StackedBars {
        title: format!("Predicted time by category on {h} (roofline)"),
        y_label: "share of time".into(),
        bars: r
            .models
            .iter()
            .filter_map(|x| Some((x.model.name.clone(), predicted_shares(hw(x, h)?))))
            .collect(),
    }
}

fn speedups(r: &SuiteResults) -> GroupedBars {
    let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for fam in [Family::Diffusion, Family::Transformer, Family::Llm] {
        let v: Vec<(String, f64)> = r
            .models
            .iter()
            .filter(|x| x.model.family == fam)
            .filter_map(|x| Some((x.model.name.clone(), flash_speedup(x)?)))
            .collect();
        if !v.is_empty() {
            groups.push((format!("{fam:?}"), v));
        }
    }
    GroupedBars {
        title: "FlashAttention speedup of the per-step stage (measured)".into(),
        y_label: "speedup (×)".into(),
        groups,
        reference: Some(("no speedup".into(), 1.0)),
    }
}

fn seq_hist(x: &crate::suite::ModelResult) -> Option<Histogram> {
    let a = cpu(x)?;
    let s = a.stages.iter().find(|s| s.name == x.model.step_stage)?;
    if s.attention.is_empty() {
        return None;
    }
    let mut bins: std::collections::BTreeMap<(usize, String), f64> = Default::default();
    for (kind, q, k, _n, flops) in &s.attention {
        *bins.entry((*q, format!("{kind} {q}×{k}"))).or_default() += *flops as f64;
    }
    Some(Histogram {
        title: format!(
            "{}: attention sequence lengths in one {} run (query × key), by FLOPs",
            x.model.name, s.name
        ),
        x_label: "attention kind, query × key length".into(),
        y_label: "FLOPs".into(),
        bins: bins.into_iter().map(|((_, l), v)| (l, v)).collect(),
    })
}

fn size_lines(pts: &[&SweepPoint], model: &str, flops: bool) -> Lines {
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for p in pts {
        // The categories that do FLOPs (Conv, Linear, Attention), in one order for both
        // charts, so a category keeps its colour.
        for (cat, f, t) in &p.cpu.categories {
            let v = if flops { *f as f64 } else { *t };
            if *f > 0 && v > 0.0 {
                series
                    .entry(cat.clone())
                    .or_default()
                    .push((p.value as f64, v));
            }
        }
    }
    Lines {
        title: format!(
            "{model}: {} vs image size",
            if flops {
                "FLOPs per generation"
            } else {
                "predicted CPU time per generation"
            }
        ),
        x_label: "image side (px)".into(),
        y_label: if flops {
            "FLOPs".into()
        } else {
            "seconds".into()
        },
        log_x: true,
        log_y: true,
        series: series.into_iter().collect(),
    }
}

fn temporal_lines(r: &SuiteResults) -> Lines {
    let mut series = Vec::new();
    for model in ["t2v", "magvit-t2v"] {
        let stage = if model == "t2v" {
            "unet"
        } else {
            "transformer"
        };
        for (h, pick) in [("this CPU", 0usize), ("A100", 1)] {
            let pts: Vec<(f64, f64)> = r
                .frame_sweep
                .iter()
                .filter(|p| p.model == model)
                .filter_map(|p| {
                    let a = if pick == 0 { &p.cpu } else { &p.a100 };
                    let s = a.stages.iter().find(|s| s.name == stage)?;
                    let rows: Vec<(String, f64)> =
                        s.classes.iter().map(|c| (c.0.clone(), c.2)).collect();
                    Some((p.value as f64, temporal_share(&rows)?))
                })
                .collect();
            // A model without temporal attention (magvit-t2v's full attention) has no line.
            if pts.iter().any(|p| p.1 > 0.0) {
                series.push((format!("{model} ({h}, predicted)"), pts));
            }
        }
    }
    Lines {
        title: "Temporal attention's share of attention time vs frames".into(),
        x_label: "frames".into(),
        y_label: "share of attention time".into(),
        log_x: true,
        log_y: false,
        series,
    }
}

fn memory_chart(t: &crate::suite::MemoryTrace) -> (Profile, Lines) {
    let pred: Vec<(f64, f64)> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64, n.3 as f64))
        .collect();
    let meas: Vec<(f64, f64)> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64, n.4 as f64))
        .collect();
    // Marks where the top-level block changes.
    let mut marks = Vec::new();
    let mut last = String::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let block: String = if n.0.starts_with("mid_block") {
            "mid_block".into()
        } else {
            n.0.split('.').take(2).collect::<Vec<_>>().join(".")
        };
        if block != last
            && (block.starts_with("down_blocks")
                || block.starts_with("up_blocks")
                || block == "mid_block")
        {
            marks.push((i as f64, block.clone()));
        }
        last = block;
    }
    let mut cum = 0f64;
    let flops: Vec<(f64, f64)> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            cum += n.2 as f64;
            (i as f64, cum)
        })
        .collect();
    (
        Profile {
            title: format!(
                "{} UNet at {}px: live activation bytes node by node (one step)",
                t.model, t.size
            ),
            x_label: "node (execution order)".into(),
            y_label: "bytes".into(),
            series: vec![
                ("predicted (buffer plan)".into(), pred),
                ("measured (executor)".into(), meas),
            ],
            marks,
        },
        Lines {
            title: format!(
                "{} UNet at {}px: cumulative FLOPs through the forward pass",
                t.model, t.size
            ),
            x_label: "node (execution order)".into(),
            y_label: "FLOPs".into(),
            log_x: false,
            log_y: false,
            series: vec![("FLOPs so far".into(), flops)],
        },
    )
}

fn rooflines(r: &SuiteResults) -> Vec<Roofline> {
    let mut out = Vec::new();
    for (h, label) in [("cpu", "this CPU"), ("a100", "A100")] {
        let Some(roof) = r.hardware.iter().find(|x| x.0 == h) else {
            continue;
        };
        let mut points = Vec::new();
        for x in &r.models {
            let Some(a) = hw(x, h) else { continue };
            for s in &a.stages {
                if s.bytes == 0 || s.predicted_s <= 0.0 {
                    continue;
                }
                let name =
                    if s.name == x.model.step_stage || s.name == "prefill" || s.name == "decode" {
                        format!("{} {}", x.model.name, s.name)
                    } else {
                        continue;
                    };
                points.push((
                    name,
                    s.flops as f64 / s.bytes as f64,
                    s.flops as f64 / s.predicted_s,
                ));
            }
        }
        out.push(Roofline {
            title: format!("Roofline on {label}: each model's per-step stage (prefill and decode apart), predicted"),
            roofs: vec![(label.into(), roof.1, roof.2)],
            points,
        });
    }
    out
}

fn findings_table(r: &SuiteResults) -> String {
    let mut o = String::from("<table><thead><tr><th>finding</th><th>paper</th><th>measured on this CPU</th><th>predicted on an A100</th><th>verdict</th><th>why</th></tr></thead><tbody>");
    for f in &r.findings {
        let _ = write!(
            o,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}<br><small>{}</small></td></tr>",
            esc(&f.verdict.replace(' ', "-")),
            esc(&f.finding),
            esc(&f.paper),
            esc(&f.measured_cpu),
            esc(&f.predicted_a100),
            esc(&f.verdict),
            esc(&f.why),
            esc(&f.source)
        );
    }
    o.push_str("</tbody></table>");
    o
}

fn models_table(r: &SuiteResults) -> String {
    let mut o = String::from("<table><thead><tr><th>model</th><th>family</th><th>parameters</th><th>FLOPs / generation</th><th>peak memory</th><th>roofline: CPU / A100 / H100</th><th>measured at</th><th>flash speedup</th><th>commands</th></tr></thead><tbody>");
    for x in &r.models {
        let a = cpu(x);
        let t = |h: &str| hw(x, h).map_or("—".into(), |a| format!("{:.2} s", a.predicted_s));
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{:?} ({})</td><td>{:.0} M</td><td>{:.2} TFLOP</td><td>{:.2} GiB</td><td>{} / {} / {}</td><td>{}</td><td>{}</td><td><code>{}</code>{}</td></tr>",
            esc(&x.model.name),
            x.model.family,
            esc(&x.model.kind),
            a.map_or(0.0, |a| a.params as f64 / 1e6),
            a.map_or(0.0, |a| a.flops as f64 / 1e12),
            a.map_or(0.0, |a| a.peak_memory_bytes as f64 / (1u64 << 30) as f64),
            t("cpu"),
            t("a100"),
            t("h100"),
            x.flash.as_ref().map_or("not measured".into(), |f| esc(&measured_at(&f.settings))),
            flash_speedup(x).map_or("—".into(), |s| format!("{s:.2}×")),
            esc(&x.analyze_command),
            x.flash.as_ref().map_or(String::new(), |f| format!("<br><code>{}</code>", esc(&f.command)))
        );
    }
    o.push_str("</tbody></table>");
    o
}

/// "256×256, 8 frames, 1 step" from a profile's settings.
fn measured_at(s: &serde_json::Value) -> String {
    let g = |k: &str| {
        s.get(k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|x| x.parse().ok()))
        })
    };
    let mut parts = Vec::new();
    if let (Some(w), Some(h)) = (g("width"), g("height")) {
        parts.push(format!("{w}×{h}"));
    }
    if let Some(f) = g("frames") {
        parts.push(format!("{f} frames"));
    }
    if let Some(p) = g("prompt_tokens") {
        parts.push(format!("prompt {p}"));
    }
    if let Some(n) = g("new_tokens") {
        parts.push(format!("{n} new tokens"));
    }
    if let Some(st) = g("steps") {
        parts.push(format!("{st} step{}", if st == 1 { "" } else { "s" }));
    }
    parts.join(", ")
}

fn html(r: &SuiteResults) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>prism suite</title><style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;font-size:13px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top}}\
th{{background:#f3f3f3}}tr.reproduced td:nth-child(5){{color:#007a3d}}tr.differs td:nth-child(5){{color:#b34700}}\
figure{{margin:1em 0}}.note{{color:#555;font-size:14px}}code{{font-size:11px;word-break:break-all}}</style></head><body>\
<h1>prism suite: Golden et al.'s characterization</h1>\
<p>{} mode, {} threads on {} (SIMD {}); the units of work took {:.0} s in all, {:.0} s of it taken from the cache of earlier runs. Every number below comes from this suite's units: <code>suite.json</code> (schema prism.suite/1, docs/suite-json.md) and the CSVs beside this page hold them; each row names the <code>prism analyze</code> / <code>prism profile</code> command that reproduces it.</p>",
        if r.quick { "Quick" } else { "Full" },
        r.threads,
        esc(&r.cpu),
        esc(&r.simd),
        r.compute_seconds,
        r.cached_seconds
    );
    if !r.skipped.is_empty() {
        o.push_str("<p class=\"note\">Not measured here: ");
        o.push_str(&esc(&r.skipped.join("; ")));
        o.push_str("</p>");
    }
    o.push_str("<h2>Findings</h2>");
    o.push_str(&findings_table(r));
    o.push_str("<h2>Models</h2>");
    o.push_str(&models_table(r));
    section(
        &mut o,
        "Operator time by category",
        "Measured: each stage profiled (two denoising steps or a short token run, at the size the models table gives) and scaled to its run count in a default generation at that size. Predicted: roofline time at the native size from configs alone.",
        &[
            charts::stacked_bars(&shares_bars(r)),
            charts::stacked_bars(&predicted_bars(r, "a100")),
        ],
    );
    section(
        &mut o,
        "FlashAttention speedup by family",
        "The per-step stage (UNet / transformer / decode): its non-attention time plus naive attention's (scores written and read back) over the same plus flash attention's, measured on this CPU.",
        &[charts::grouped_bars(&speedups(r))],
    );
    let hists: Vec<String> = r
        .models
        .iter()
        .filter_map(seq_hist)
        .map(|h| charts::histogram(&h))
        .collect();
    section(
        &mut o,
        "Attention sequence lengths",
        "Every attention node of one per-step run at the native size, grouped by kind and query × key length, weighted by FLOPs.",
        &hists,
    );
    let mut size_svgs = Vec::new();
    for model in ["sd15", "pixart-alpha-512", "amused-256"] {
        let pts: Vec<&SweepPoint> = r.size_sweep.iter().filter(|p| p.model == model).collect();
        if pts.len() >= 2 {
            size_svgs.push(charts::lines(&size_lines(&pts, model, false)));
            size_svgs.push(charts::lines(&size_lines(&pts, model, true)));
        }
    }
    section(
        &mut o,
        "Scaling with image size",
        "Roofline time and FLOPs per category over a default generation at each size (analysis; no weights).",
        &size_svgs,
    );
    section(
        &mut o,
        "Temporal attention vs frames",
        "Temporal attention's share of the per-step stage's attention time, predicted over the frame sweep.",
        &[charts::lines(&temporal_lines(r))],
    );
    let mem_series: Vec<(String, Vec<(f64, f64)>)> = r
        .models
        .iter()
        .filter(|x| !x.memory_profile.is_empty())
        .map(|x| {
            (
                format!("{} {}", x.model.name, x.model.step_stage),
                x.memory_profile
                    .iter()
                    .map(|&(f, b)| (f, b as f64))
                    .collect(),
            )
        })
        .collect();
    if !mem_series.is_empty() {
        let l = Lines {
            title: "Predicted live activations through one step, by model (native size)".into(),
            x_label: "fraction of the pass (execution order)".into(),
            y_label: "bytes".into(),
            log_x: false,
            log_y: true,
            series: mem_series,
        };
        section(
            &mut o,
            "Memory through the forward pass, every model",
            "The executor's buffer plan (configs only): live activation bytes after each node of one run of the per-step stage, the largest of each 1/400 of the pass.",
            &[charts::lines(&l)],
        );
    }
    if let Some(t) = &r.memory_trace {
        let (p, l) = memory_chart(t);
        let note = format!(
            "The paper's analytical framework made visible: the executor's buffer plan predicts, from shapes alone, the live activation bytes right after every node runs (its inputs not yet released); the executor counts them as it runs. Live activations at their peak: {:.1} MiB predicted, {:.1} MiB measured; with the pooled buffers and kernel scratch the plan's peak is {:.1} MiB; the process' peak resident memory grew {} during the pass (weights were already resident).",
            t.predicted_peak_live_bytes as f64 / 1048576.0,
            t.measured_peak_live_bytes as f64 / 1048576.0,
            t.predicted_peak_bytes as f64 / 1048576.0,
            t.rss_growth_bytes.map_or("(unknown)".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
        );
        section(
            &mut o,
            "Memory and FLOPs through one UNet pass",
            &note,
            &[charts::profile(&p), charts::lines(&l)],
        );
    }
    let mut dec = Vec::new();
    for model in ["llama-1b", "llama2-7b"] {
        for (h, pick) in [("this CPU", false), ("A100", true)] {
            let pts: Vec<(f64, f64)> = r
                .decode_sweep
                .iter()
                .filter(|p| p.model == model)
                .filter_map(|p| {
                    let a = if pick { &p.a100 } else { &p.cpu };
                    let s = a.stages.iter().find(|s| s.name == "decode")?;
                    Some((p.value as f64, s.predicted_s * s.runs as f64))
                })
                .collect();
            if !pts.is_empty() {
                dec.push((format!("{model} ({h})"), pts));
            }
        }
    }
    if !dec.is_empty() {
        let l = Lines {
            title: "LLM decode: predicted time of all decode steps vs tokens generated".into(),
            x_label: "new tokens".into(),
            y_label: "seconds".into(),
            log_x: true,
            log_y: true,
            series: dec,
        };
        section(
            &mut o,
            "Decode length (the LLM baseline)",
            "The decode phase's roofline time over a growing KV cache (each step reads every weight once: memory-bound, unlike a diffusion step).",
            &[charts::lines(&l)],
        );
    }
    let roofs: Vec<String> = rooflines(r).iter().map(charts::roofline).collect();
    section(
        &mut o,
        "Rooflines",
        "Arithmetic intensity (FLOPs per minimum byte) against attained FLOP/s (predicted) of each model's per-step stage; LLM and autoregressive prefill and decode apart.",
        &roofs,
    );
    o.push_str("</body></html>\n");
    o
}
