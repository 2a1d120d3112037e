//! Memory preflight: before any weight is read, the run's predicted peak — weights in their
//! dtype, plus the largest stage's activations, kernel scratch and KV caches from the
//! executor's own buffer plan — is compared with the memory this process may still use (the
//! cgroup limit, else the kernel's MemAvailable). A run that cannot fit is refused with both
//! figures and what would make it fit.

use prism_core::{Error, Result};
use prism_models::pipelines::{Entry, StudyShape};
use prism_models::source::ModelSource;
use prism_runtime::{plan, KernelChoice, WeightDType};

/// What a run is predicted to hold at its peak, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// Weights still held at the peak stage (earlier stages' weights are freed by then).
    pub weights: u64,
    /// The peak stage's activations + scratch + KV caches (+ with narrow weights, the largest
    /// weight it widens to f32 whole).
    pub activations: u64,
    pub peak_stage: String,
}

impl Prediction {
    pub fn total(&self) -> u64 {
        self.weights + self.activations
    }
}

/// The peak of a generation of `shape`, from configs alone (no weights read).
pub fn predict(
    entry: &Entry,
    src: &ModelSource,
    shape: &StudyShape,
    dtype: WeightDType,
    threads: usize,
    kernels: &KernelChoice,
) -> Result<Prediction> {
    let graphs = (entry.stage_graphs)(src, shape)?;
    // Each stage's parameter table (a decoder's prefill and decode share one), its bytes, and
    // the largest weight it widens to f32 whole (narrow dtypes).
    let tables: Vec<(String, u64, u64)> = graphs
        .iter()
        .map(|s| {
            let key = s.graph.param_table_key();
            // A stage with its own dtype (a preset's bf16 T5) keeps it unless 16-bit was asked for.
            let d = match (s.weight_dtype, dtype) {
                (Some(own), WeightDType::F32) => own,
                _ => dtype,
            };
            let bytes = prism_runtime::stored_weight_bytes(&s.graph, d);
            (key, bytes, prism_runtime::widened_weight_bytes(&s.graph, d))
        })
        .collect();
    let held_from = |i: usize| -> u64 {
        // Pipelines load every component, then free each one's weights once its last stage
        // is done: at stage i the tables of stages i.. are still held.
        let mut seen = std::collections::HashSet::new();
        tables[i..]
            .iter()
            .filter(|(k, _, _)| seen.insert(k.clone()))
            .map(|(_, b, _)| b)
            .sum()
    };
    let (mut weights, mut activations, mut peak_stage) = (0u64, 0u64, String::new());
    for (i, s) in graphs.iter().enumerate() {
        let prepared = kernels.prepare(&s.graph);
        let act = plan(&prepared, threads, kernels).peak_bytes as u64;
        let kv: u64 = s
            .graph
            .cache_slots()
            .iter()
            .map(|(_, sh)| sh.iter().product::<usize>() as u64 * 4)
            .sum();
        let held = held_from(i);
        let act = act + kv + tables[i].2;
        if held + act > weights + activations {
            (weights, activations) = (held, act);
            peak_stage = s.name.to_string();
        }
    }
    Ok(Prediction {
        weights,
        activations,
        peak_stage,
    })
}

fn meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// cgroup v2 room: `memory.max` less `memory.current` (None when unlimited or absent).
fn cgroup_room() -> Option<u64> {
    let rel = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = rel.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max" (unlimited) does not parse
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(cur))
}

/// The memory this process may still take, and where the figure comes from.
pub fn available() -> Option<(u64, &'static str)> {
    let avail = meminfo_kib("MemAvailable:").map(|k| (k * 1024, "MemAvailable"));
    match (avail, cgroup_room()) {
        (Some(a), Some(c)) if c < a.0 => Some((c, "the cgroup's memory.max")),
        (None, Some(c)) => Some((c, "the cgroup's memory.max")),
        (a, _) => a,
    }
}

impl Prediction {
    /// "peak memory about 4.2 GiB (unet)".
    pub fn describe(&self) -> String {
        format!(
            "predicted peak memory {} (stage {})",
            gib(self.total()),
            self.peak_stage
        )
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Refuse a run whose predicted peak exceeds what is available. `hint` names the sizes that
/// would make it fit for this model; narrower weights are suggested first where the weights
/// held are a quarter of the peak or more (int8 keeps about a quarter of f32's bytes, bf16
/// half).
pub fn check(p: &Prediction, hint: &str) -> Result<()> {
    match available() {
        Some((room, source)) => refusal(p, room, source, hint).map_or(Ok(()), Err),
        None => Ok(()),
    }
}

/// [`check`]'s verdict with `room` bytes available (from `source`).
fn refusal(p: &Prediction, room: u64, source: &str, hint: &str) -> Option<Error> {
    if p.total() <= room {
        return None;
    }
    let hint = if p.weights.saturating_mul(4) >= p.total() {
        format!("try --weights-dtype int8 or bf16, or {hint}")
    } else {
        format!("try {hint}")
    };
    Some(Error::invalid(format!(
        "this run needs about {} at its peak (weights held {} + {} in stage {}) but {} are available ({source}): {hint}, or pass --no-preflight to try anyway",
        gib(p.total()),
        gib(p.weights),
        gib(p.activations),
        p.peak_stage,
        gib(room)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrower_weights_are_suggested_where_weights_weigh() {
        const G: u64 = 1 << 30;
        let p = |weights, activations| Prediction {
            weights,
            activations,
            peak_stage: "unet".into(),
        };
        assert!(refusal(&p(3 * G, G), 5 * G, "MemAvailable", "a smaller size").is_none());
        let e = refusal(&p(25 * G, G), 21 * G, "MemAvailable", "a smaller size").unwrap();
        let m = e.to_string();
        assert!(
            m.contains("26.0 GiB") && m.contains("21.0 GiB are available (MemAvailable)"),
            "{m}"
        );
        assert!(
            m.contains("try --weights-dtype int8 or bf16, or a smaller size"),
            "{m}"
        );
        let m = refusal(&p(G, 100 * G), 21 * G, "MemAvailable", "a smaller size")
            .unwrap()
            .to_string();
        assert!(
            m.contains(": try a smaller size, or pass --no-preflight"),
            "{m}"
        );
    }
}
