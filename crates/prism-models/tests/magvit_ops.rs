//! MAGVIT-v2's causal 3-D convolution against the reference package (`magvit2-pytorch` 0.5.1,
//! `tools/make_magvit_fixtures.py`): `CausalConv3d` with zero and replicate padding (and the
//! package's fall-back to zeros when the time padding is not shorter than the clip), time
//! strides and dilation, through prism's `Conv3d` op and the executor.

use prism_core::{DType, GraphBuilder};
use prism_models::io::read_tensors_as_stored;
use prism_runtime::Weights;

mod common;
use common::*;

#[test]
fn causal_conv3d_matches_magvit2_pytorch() {
    let dir = fixtures().join("magvit");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("causal_conv3d.json")).unwrap())
            .unwrap();
    let t = read_tensors_as_stored(&dir.join("causal_conv3d.safetensors")).unwrap();
    let exec = exec();
    let mut seen = 0;
    for case in meta["cases"].as_array().unwrap() {
        if case["cls"] != "CausalConv3d" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let kw = &case["kwargs"];
        let k: Vec<usize> = match &kw["kernel_size"] {
            serde_json::Value::Array(a) => a.iter().map(|v| v.as_u64().unwrap() as usize).collect(),
            v => vec![v.as_u64().unwrap() as usize; 3],
        };
        let stride = kw["stride"].as_u64().unwrap_or(1) as usize;
        let dil = kw["dilation"].as_u64().unwrap_or(1) as usize;
        // The package's rule: dilation·(kt − 1) + 1 − stride frames in front, k // 2 around.
        let front = dil * (k[0] - 1) + 1 - stride;
        let pad = [front, 0, k[1] / 2, k[1] / 2, k[2] / 2, k[2] / 2];
        let replicate = case["effective_pad_mode"] == "replicate";
        let x = &t[&format!("{name}.x")];
        let w = &t[&format!("{name}.weight")];
        let bias = t.get(&format!("{name}.bias"));
        let cout = w.shape()[0];
        let mut b = GraphBuilder::new(name);
        let xin = b.input("x", x.shape(), DType::F32);
        let y = b
            .conv3d(
                "conv",
                xin,
                cout,
                [k[0], k[1], k[2]],
                [stride, 1, 1],
                dil,
                (pad, replicate),
                bias.is_some(),
            )
            .unwrap();
        b.output("y", y);
        let g = b.finish().unwrap();
        let mut params = vec![w.clone()];
        params.extend(bias.cloned());
        let weights = Weights::new(&g, params, name.into()).unwrap();
        let out = exec
            .run(&g, &weights, vec![("x".into(), x.clone())])
            .unwrap()
            .remove("y")
            .unwrap();
        assert_close(name, &out, &t[&format!("{name}.out")]);
        // FlopCounterMode's convolution count: 2 · N · |W| · (output positions).
        let flops: u64 = (0..g.nodes.len())
            .map(|i| prism_core::cost::node_cost(&g, i, 4).flops)
            .sum();
        let positions: usize = out.shape()[2..].iter().product();
        assert_eq!(
            flops,
            2 * (x.shape()[0] * w.numel() * positions) as u64,
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 6, "every CausalConv3d case ran");
}

/// LFQ's `indices_to_codes` (`vector-quantize-pytorch` 1.32.0, without `project_out`): video
/// ids → ±scale codes, most significant bit first, one and two codebooks, spherical scale.
#[test]
fn lfq_codes_match_vector_quantize_pytorch() {
    let dir = fixtures().join("magvit");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lfq.json")).unwrap()).unwrap();
    let t = read_tensors_as_stored(&dir.join("lfq.safetensors")).unwrap();
    let exec = exec();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let bits = case["codebook_dim"].as_u64().unwrap() as usize;
        let books = case["kwargs"]["num_codebooks"].as_u64().unwrap() as usize;
        let spherical = case["kwargs"]["spherical"].as_bool().unwrap_or(false);
        let scale = if spherical {
            1.0 / (bits as f32).sqrt()
        } else {
            1.0
        };
        let ids = &t[&format!("{name}.ids_video")];
        // (B, T, H, W[, books]) → (B, T·H·W, books)
        let s = ids.shape();
        let n: usize = s[1..4].iter().product();
        let mut b = GraphBuilder::new(name);
        let x = b.input("ids", s, DType::I64);
        let x = b.reshape("ids", x, &[s[0], n, books]).unwrap();
        let c = b.lfq_codes("lfq", x, bits, scale).unwrap();
        let c = b
            .reshape("codes", c, &[s[0], s[1], s[2], s[3], books * bits])
            .unwrap();
        let c = b.permute("channels_first", c, &[0, 4, 1, 2, 3]).unwrap();
        b.output("codes", c);
        let g = b.finish().unwrap();
        let w = Weights::new(&g, vec![], name.into()).unwrap();
        let got = exec
            .run(&g, &w, vec![("ids".into(), ids.clone())])
            .unwrap()
            .remove("codes")
            .unwrap();
        let want = &t[&format!("{name}.codes_video_no_project_out")];
        assert_eq!(got.shape(), want.shape(), "{name}");
        assert_eq!(got.data(), want.data(), "{name}: codes");
    }
}

/// LFQ ids from the values the sign is taken of (after `project_in` and the soft clamp, which
/// keeps signs): identical to the package's indices, zeros included.
#[test]
fn lfq_ids_match_vector_quantize_pytorch() {
    let dir = fixtures().join("magvit");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lfq.json")).unwrap()).unwrap();
    let t = read_tensors_as_stored(&dir.join("lfq.safetensors")).unwrap();
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let bits = case["codebook_dim"].as_u64().unwrap() as usize;
        let books = case["kwargs"]["num_codebooks"].as_u64().unwrap() as usize;
        let pre = &t[&format!("{name}.pre_quant")];
        let ids = prism_models::magvit::lfq_ids(pre.data(), bits, books);
        let want = t[&format!("{name}.indices")].ids().unwrap();
        assert_eq!(ids, want, "{name}: ids");
    }
}
