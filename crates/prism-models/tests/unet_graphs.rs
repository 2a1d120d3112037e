//! The UNet graphs of the committed presets and test fixtures, pinned by fingerprint: a
//! refactor of the UNet builders (`diffusion/unet2d.rs`, `unet3d.rs`, `unet_common.rs`) must
//! build the same nodes in the same order, with the same module paths, inputs and output
//! shapes, and the same parameter table.
//!
//! A deliberate change to the graphs (a new op, a renamed path, a fused node) changes these
//! fingerprints; the failure message prints the new table to paste into
//! [`UNET_GRAPH_FINGERPRINTS`] once the change is understood.

use prism_core::Graph;
use prism_models::diffusion::unet2d::{self, UNetConfig};
use prism_models::diffusion::unet3d::{self, UNet3DConfig};
use prism_models::source::{Component, ModelSource};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// A preset name, or a fixture folder under `tests/fixtures`.
fn source(model: &str) -> ModelSource {
    let s = if model.contains('_') {
        fixtures().join(model).display().to_string()
    } else {
        model.to_string()
    };
    ModelSource::parse(&s).unwrap()
}

/// FNV-1a over `bytes`, then a separator byte so adjacent fields cannot run together.
fn mix(h: &mut u64, bytes: &[u8]) {
    for &b in bytes.iter().chain([0xff].iter()) {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Hash of a graph: its inputs (name, shape), every node in order (op as `Debug` prints it,
/// module path, input ids, output id and shape), the parameter table (name, shape) and the
/// outputs.
fn fingerprint(g: &Graph) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    mix(&mut h, g.name.as_bytes());
    for (name, v) in &g.inputs {
        let s = format!("in {name} {v} {:?}", g.value(*v).shape);
        mix(&mut h, s.as_bytes());
    }
    for n in &g.nodes {
        let s = format!(
            "{:?} | {} | {:?} -> {} {:?}",
            n.op,
            n.path,
            n.inputs,
            n.output,
            g.value(n.output).shape
        );
        mix(&mut h, s.as_bytes());
    }
    for p in &g.params {
        mix(&mut h, format!("param {} {:?}", p.name, p.shape).as_bytes());
    }
    for (name, v) in &g.outputs {
        let s = format!("out {name} {v} {:?}", g.value(*v).shape);
        mix(&mut h, s.as_bytes());
    }
    h
}

/// (model, graph label, node count, parameter count, fingerprint) of every graph that
/// [`graphs`] builds, in its order.
const UNET_GRAPH_FINGERPRINTS: &[(&str, &str, usize, usize, u64)] = &[
    ("sd15", "b1 8x8 L1", 699, 686, 0x5cd072ebf777f731),
    ("sd15", "b2 17x24 L77", 699, 686, 0x2df0c6340a3bb532),
    ("sd21", "b1 8x8 L1", 699, 686, 0x4cbafd7487c72df9),
    ("sd21", "b2 17x24 L77", 699, 686, 0xe1709a18f53f2774),
    ("sd1_tiny", "b1 2x2 L1", 310, 304, 0x4820d6ece3d0256b),
    ("sd1_tiny", "b2 5x6 L77", 310, 304, 0x8eac9c197356b8ae),
    ("sd2_tiny", "b1 4x4 L1", 330, 324, 0x0930e75a2aef9ad1),
    ("sd2_tiny", "b2 9x12 L77", 330, 324, 0x5838b8dd6c224f51),
    ("t2v", "b1 f1 8x8 L1", 1587, 1480, 0xb67f35e3da15e4aa),
    ("t2v", "b2 f3 17x24 L77", 1593, 1480, 0x8a2ac48bdd7900fc),
    ("t2v_tiny", "b1 f1 2x2 L1", 728, 678, 0xf621cd44b47b4376),
    ("t2v_tiny", "b2 f3 5x6 L77", 734, 678, 0xb0bbdb52fcb5cb47),
    ("t2v_tiny_b", "b1 f1 4x4 L1", 761, 708, 0x178ae2511d57a3d3),
    ("t2v_tiny_b", "b2 f3 9x12 L77", 767, 708, 0xaea2091f516a815a),
];

/// Every graph the test pins: each UNet at its weight-loading size (one latent pixel per
/// downscale step, batch 1, one token; one frame for the 3D UNet) and at an odd size with
/// classifier-free-guidance batch 2 (the upsamplers take the skips' sizes).
fn graphs() -> Vec<(&'static str, String, Graph)> {
    let mut out = Vec::new();
    for model in ["sd15", "sd21", "sd1_tiny", "sd2_tiny"] {
        let cfg = UNetConfig::from_cfg(&source(model).config(Component::UNET).unwrap()).unwrap();
        let d = cfg.downscale();
        for (batch, h, w, len) in [(1, d, d, 1), (2, 2 * d + 1, 3 * d, 77)] {
            let g = unet2d::build(&cfg, batch, h, w, len).unwrap();
            out.push((model, format!("b{batch} {h}x{w} L{len}"), g));
        }
    }
    for model in ["t2v", "t2v_tiny", "t2v_tiny_b"] {
        let cfg = UNet3DConfig::from_cfg(&source(model).config(Component::UNET).unwrap()).unwrap();
        let d = cfg.downscale();
        for (batch, frames, h, w, len) in [(1, 1, d, d, 1), (2, 3, 2 * d + 1, 3 * d, 77)] {
            let g = unet3d::build(&cfg, batch, frames, h, w, len).unwrap();
            out.push((model, format!("b{batch} f{frames} {h}x{w} L{len}"), g));
        }
    }
    out
}

#[test]
fn unet_graphs_match_their_fingerprints() {
    let got: Vec<_> = graphs()
        .into_iter()
        .map(|(model, label, g)| (model, label, g.nodes.len(), g.params.len(), fingerprint(&g)))
        .collect();
    let want: Vec<_> = UNET_GRAPH_FINGERPRINTS
        .iter()
        .map(|&(m, l, n, p, f)| (m, l.to_string(), n, p, f))
        .collect();
    let table: String = got
        .iter()
        .map(|(m, l, n, p, f)| format!("    ({m:?}, {l:?}, {n}, {p}, {f:#018x}),\n"))
        .collect();
    assert!(
        got == want,
        "UNet graphs changed; if that is intended, the new table is:\n{table}"
    );
}
