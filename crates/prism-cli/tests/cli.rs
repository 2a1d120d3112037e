//! The `prism` binary as a user meets it: bad input gives one clear line, a non-zero exit,
//! no panic and no output file; good input writes what it says.

use prism_models::io::{read_tensors, write_tensors};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prism-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn prism(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(args)
        .output()
        .expect("run prism")
}

/// Runs prism expecting failure: one `error:` line mentioning every `needles`, no output file.
fn fails(args: &[&str], out: &Path, needles: &[&str]) {
    let existed = out.exists();
    let o = prism(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure for {args:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one error line for {args:?}, got: {err}"
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error for {args:?} should mention {n:?}: {}",
            lines[0]
        );
    }
    if !existed {
        assert!(!out.exists(), "{args:?} left an output file behind");
    }
}

fn tiny_copy(name: &str) -> PathBuf {
    let d = scratch(name).join("model");
    copy_dir(&fixtures().join("sd1_tiny"), &d);
    d
}

fn generate_args<'a>(model: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "generate", "--model", model, "--prompt", "a cat", "--steps", "1", "--width", "32",
        "--height", "32", "-o", out,
    ]
}

#[test]
fn tiny_folder_generates_a_png_with_parameters() {
    let d = scratch("ok");
    let out = d.join("cat.png");
    let model = fixtures().join("sd1_tiny");
    let o = prism(&generate_args(
        model.to_str().unwrap(),
        out.to_str().unwrap(),
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = dec.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (32, 32));
    let params = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .expect("parameters text chunk");
    assert!(
        params.text.contains("a cat") && params.text.contains("Steps: 1"),
        "{}",
        params.text
    );
    // Existing output without --force: refused, file untouched.
    fails(
        &generate_args(model.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["already exists", "--force"],
    );
    let mut args = generate_args(model.to_str().unwrap(), out.to_str().unwrap());
    args.push("--force");
    assert!(prism(&args).status.success());
}

/// Pixels of a PNG.
fn png_pixels(path: &Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let n = reader.next_frame(&mut buf).unwrap().buffer_size();
    buf.truncate(n);
    buf
}

#[test]
fn narrow_weights_generate_close_to_f32() {
    let d = scratch("dtypes");
    let model = fixtures().join("sd1_tiny");
    let run = |dtype: &str| {
        let out = d.join(format!("{dtype}.png"));
        let mut args = generate_args(model.to_str().unwrap(), out.to_str().unwrap());
        args.extend(["--weights-dtype", dtype]);
        let o = prism(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        png_pixels(&out)
    };
    let f32 = run("f32");
    // Tolerances of tests/parity.rs in prism-models (pixel levels against f32 diffusers).
    for (dtype, tol) in [("bf16", 8), ("int8", 8)] {
        let px = run(dtype);
        let worst = f32
            .iter()
            .zip(&px)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= tol, "{dtype}: a pixel differs by {worst}");
    }
    fails(
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--weights-dtype",
            "int4",
            "-o",
            d.join("x.png").to_str().unwrap(),
        ],
        &d.join("x.png"),
        &["int4", "--weights-dtype"],
    );
}

#[test]
fn preflight_predicts_the_measured_peak_within_15_percent() {
    // Two sizes and two weight dtypes of the sd15 preset, one step each: the prediction the
    // preflight refuses runs by, against the process's measured peak RSS.
    if std::fs::read_to_string("/proc/self/status").is_err() {
        eprintln!("no /proc here: peak RSS is not reported");
        return;
    }
    let d = scratch("rss");
    for (size, dtype) in [("128", "f32"), ("512", "int8")] {
        let out = d.join(format!("{size}_{dtype}.png"));
        let o = prism(&[
            "generate",
            "--model",
            "sd15",
            "--prompt",
            "x",
            "--steps",
            "1",
            "--width",
            size,
            "--height",
            size,
            "--weights-dtype",
            dtype,
            "-o",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        // "peak RSS 3.89 GiB (predicted 3.85 GiB)"
        let line = err
            .lines()
            .find(|l| l.starts_with("peak RSS"))
            .unwrap_or_else(|| panic!("no peak RSS line: {err}"));
        let nums: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.trim_start_matches('(').parse().ok())
            .collect();
        let (rss, predicted) = (nums[0], nums[1]);
        eprintln!("{size}² {dtype}: {line}");
        assert!(
            (rss - predicted).abs() <= 0.15 * rss,
            "{size}² {dtype}: {line}"
        );
    }
}

#[test]
fn truncated_safetensors() {
    let m = tiny_copy("trunc");
    let f = m.join("vae/diffusion_pytorch_model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..len as usize / 2]).unwrap();
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["diffusion_pytorch_model.safetensors", "truncated"],
    );
}

fn rewrite_text_encoder(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, prism_core::Tensor)>),
) -> PathBuf {
    let m = tiny_copy(name);
    let f = m.join("text_encoder/model.safetensors");
    let mut ts: Vec<_> = read_tensors(&f).unwrap().into_iter().collect();
    edit(&mut ts);
    write_tensors(&f, &ts, true).unwrap();
    m
}

#[test]
fn missing_tensor_is_named() {
    let m = rewrite_text_encoder("missing", |ts| {
        ts.retain(|(n, _)| n != "text_model.encoder.layers.1.mlp.fc1.weight")
    });
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["missing", "encoder.layers.1.mlp.fc1.weight"],
    );
}

#[test]
fn misshaped_tensor_is_named() {
    let m = rewrite_text_encoder("shape", |ts| {
        let (_, t) = ts
            .iter_mut()
            .find(|(n, _)| n == "text_model.final_layer_norm.weight")
            .unwrap();
        *t = prism_core::Tensor::zeros(&[t.numel() + 1]);
    });
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["wrong shape", "final_layer_norm.weight"],
    );
}

#[test]
fn unknown_block_type_is_named() {
    let m = tiny_copy("block");
    let c = m.join("unet/config.json");
    let text = std::fs::read_to_string(&c).unwrap().replacen(
        "\"CrossAttnDownBlock2D\"",
        "\"SimpleCrossAttnDownBlock2D\"",
        1,
    );
    std::fs::write(&c, text).unwrap();
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["config.json", "SimpleCrossAttnDownBlock2D"],
    );
}

#[test]
fn bad_flags_fail_before_any_work() {
    let d = scratch("flags");
    let out = d.join("x.png");
    let o = out.to_str().unwrap();
    fails(
        &[
            "generate", "--model", "sd15", "--prompt", "p", "--width", "260", "--height", "256",
            "-o", o,
        ],
        &out,
        &["--width 260", "multiple of 8"],
    );
    fails(
        &[
            "generate", "--model", "sd15", "--prompt", "p", "--steps", "0", "-o", o,
        ],
        &out,
        &["--steps 0"],
    );
    let nodir = d.join("no/such/dir/x.png");
    fails(
        &[
            "generate",
            "--model",
            "sd15",
            "--prompt",
            "p",
            "-o",
            nodir.to_str().unwrap(),
        ],
        &nodir,
        &["does not exist"],
    );
    fails(
        &["generate", "--model", "sd99", "--prompt", "p", "-o", o],
        &out,
        &["sd99", "sd15"],
    );
}

#[test]
fn forward_writes_named_outputs() {
    let d = scratch("fwd");
    let out = d.join("o.safetensors");
    let model = fixtures().join("sd1_tiny");
    let inputs = model.join("io/vae_decoder_in.safetensors");
    let args = [
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--component",
        "vae-decoder",
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let o = prism(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read_tensors(&out).unwrap();
    let want = read_tensors(&model.join("io/vae_decoder_out.safetensors")).unwrap();
    let diff = got["sample"].max_abs_diff(&want["sample"]).unwrap();
    assert!(diff <= 1e-4 * want["sample"].max_abs(), "max|Δ| {diff}");
    // The wrong input name for the component is named.
    let out2 = d.join("o2.safetensors");
    let mut bad = args;
    bad[4] = "unet";
    bad[8] = out2.to_str().unwrap();
    fails(&bad, &out2, &["sample", "unet"]);
}

#[test]
fn analyze_and_profile_bad_input() {
    let d = scratch("analyze");
    let nothing = d.join("nothing");
    fails(&["analyze", "sd99"], &nothing, &["sd99", "sd15"]);
    fails(
        &["analyze", "sd15", "--frames", "8"],
        &nothing,
        &["--frames", "image model"],
    );
    let hw = d.join("hw.toml");
    std::fs::write(&hw, "name = \"my gpu\"\npeak_flops_f32 = 1e13\n").unwrap();
    fails(
        &["analyze", "sd15", "--hardware", hw.to_str().unwrap()],
        &nothing,
        &["hw.toml", "mem_bandwidth"],
    );
    fails(
        &["analyze", "t2v", "--frames", "0"],
        &nothing,
        &["--frames 0"],
    );
    fails(
        &["profile", "sd15", "--steps", "0"],
        &nothing,
        &["--steps 0"],
    );
}

#[test]
fn analyze_sd15_reports_torch_counts() {
    let o = prism(&[
        "analyze",
        "sd15",
        "--width",
        "512",
        "--height",
        "512",
        "--steps",
        "20",
        "--hardware",
        "a100",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unet = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "unet")
        .unwrap();
    // Batch 2 with guidance: twice torch's batch-1 count.
    assert_eq!(
        unet["per_run"]["flops"].as_u64().unwrap(),
        2 * 803_273_441_280
    );
    // PNDM takes steps + 1 UNet runs.
    assert_eq!(unet["runs"].as_u64().unwrap(), 21);
    let mut q: Vec<u64> = unet["attention"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "self")
        .map(|a| a["query_len"].as_u64().unwrap())
        .collect();
    q.sort_unstable();
    q.dedup();
    assert_eq!(q, vec![64, 256, 1024, 4096]);
    assert!(unet["attention"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "cross")
        .all(|a| a["key_len"] == 77));
}

#[test]
fn video_bad_input() {
    let d = scratch("video");
    let gif = d.join("clip.gif");
    std::fs::write(&gif, b"not mine").unwrap();
    let g = gif.to_str().unwrap();
    // An existing GIF without --force: refused before any work, file untouched.
    fails(
        &[
            "generate", "--model", "t2v", "--prompt", "p", "--frames", "2", "-o", g,
        ],
        &gif,
        &["already exists", "--force"],
    );
    assert_eq!(std::fs::read(&gif).unwrap(), b"not mine");
    let out = d.join("new.gif");
    fails(
        &[
            "generate",
            "--model",
            "t2v",
            "--prompt",
            "p",
            "--frames",
            "0",
            "-o",
            out.to_str().unwrap(),
        ],
        &out,
        &["--frames 0"],
    );
    let png = d.join("x.png");
    fails(
        &[
            "generate",
            "--model",
            "sd15",
            "--prompt",
            "p",
            "--frames",
            "8",
            "-o",
            png.to_str().unwrap(),
        ],
        &png,
        &["--frames", "image model"],
    );
}

#[test]
fn tiny_video_folder_writes_a_gif() {
    let d = scratch("gif");
    let out = d.join("clip.gif");
    let frames = d.join("frames");
    let model = fixtures().join("t2v_tiny");
    let o = prism(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a boat",
        "--frames",
        "3",
        "--steps",
        "1",
        "--width",
        "32",
        "--height",
        "32",
        "--frames-dir",
        frames.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..6], b"GIF89a");
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 3);
}

#[test]
fn paced_bench_runs_once_per_line_and_stops_when_stdin_closes() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "bench",
            "--only",
            "conv3x3_16_8_b1",
            "--runs",
            "5",
            "--threads",
            "1",
            "--json",
            "--paced",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run prism");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Ready after the warm-up; each line on stdin buys one timed run, then ready again.
    for _ in 0..3 {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "#pace ready");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "#pace ready");
    drop(stdin); // no fourth run
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let doc: serde_json::Value = serde_json::from_str(&rest).expect("JSON after the runs");
    let r = &doc["results"][0];
    assert_eq!(r["name"], "conv3x3_16_8_b1");
    assert_eq!(r["runs"], 3);
    assert_eq!(r["times_s"].as_array().unwrap().len(), 3);
}

#[test]
fn quick_bench_runs_the_tiny_sizes() {
    let o = prism(&[
        "bench",
        "--quick",
        "--only",
        "attention_b2h8_4096_d40,linear_8192_320_320",
        "--runs",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["quick"], true);
    // L = 256 instead of 4096, 256 rows instead of 8192: the FLOPs say so.
    assert_eq!(doc["results"][0]["flops"], 4 * 2 * 8 * 256 * 256 * 40);
    assert_eq!(doc["results"][1]["flops"], 2 * 256 * 320 * 320);
}

#[test]
fn janus_folder_generates_greedily_and_refuses_diffusion_flags() {
    let d = scratch("janus");
    let out = d.join("j.png");
    let model = fixtures().join("janus_tiny");
    let m = model.to_str().unwrap();
    let o = prism(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "a red boat",
        "--greedy",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dec = png::Decoder::new(std::io::Cursor::new(std::fs::read(&out).unwrap()));
    let reader = dec.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (16, 16));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("16 image tokens"), "{err}");
    let o2 = d.join("k.png");
    let o2s = o2.to_str().unwrap();
    fails(
        &[
            "generate", "--model", m, "--prompt", "x", "--steps", "20", "-o", o2s,
        ],
        &o2,
        &["--steps", "image tokens"],
    );
    fails(
        &[
            "generate", "--model", m, "--prompt", "x", "--top-p", "2", "-o", o2s,
        ],
        &o2,
        &["--top-p"],
    );
    fails(
        &[
            "generate", "--model", m, "--prompt", "x", "--width", "64", "-o", o2s,
        ],
        &o2,
        &["--width"],
    );
    // Token flags on a diffusion model, and the LLM baseline asked for an image.
    let sd = fixtures().join("sd1_tiny");
    fails(
        &[
            "generate",
            "--model",
            sd.to_str().unwrap(),
            "--prompt",
            "x",
            "--temperature",
            "0.5",
            "--steps",
            "1",
            "-o",
            o2s,
        ],
        &o2,
        &["--temperature", "diffusion"],
    );
    fails(
        &[
            "generate",
            "--model",
            "llama2-7b",
            "--prompt",
            "x",
            "-o",
            o2s,
        ],
        &o2,
        &["llama2-7b", "analyze"],
    );
    fails(
        &["analyze", "sd15", "--prompt-tokens", "9"],
        &o2,
        &["--prompt-tokens"],
    );
    fails(
        &["analyze", "janus-pro-1b", "--steps", "3"],
        &o2,
        &["--steps"],
    );
    fails(
        &[
            "analyze",
            "llama2-7b",
            "--prompt-tokens",
            "4000",
            "--new-tokens",
            "200",
        ],
        &o2,
        &["4199", "4096"],
    );
}

#[test]
fn janus_forward_and_phases_in_analyze() {
    let d = scratch("janus-fwd");
    let model = fixtures().join("janus_tiny");
    let io = read_tensors(&model.join("io/vq_decode.safetensors")).unwrap();
    let inp = d.join("in.safetensors");
    write_tensors(&inp, &[("ids".into(), io["ids"].clone())], false).unwrap();
    let out = d.join("out.safetensors");
    let o = prism(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--component",
        "vq-decoder",
        "--inputs",
        inp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        read_tensors(&out).unwrap()["sample"].shape(),
        &[2, 3, 16, 16]
    );
    // A diffusion component on Janus is named as wrong.
    let o2 = d.join("o2.safetensors");
    fails(
        &[
            "forward",
            "--model",
            model.to_str().unwrap(),
            "--component",
            "unet",
            "--inputs",
            inp.to_str().unwrap(),
            "-o",
            o2.to_str().unwrap(),
        ],
        &o2,
        &["--component unet", "image-logits"],
    );
    for (args, prompt) in [
        (vec!["analyze", "janus-pro-1b", "--json"], 32u64),
        (
            vec![
                "analyze",
                "llama2-7b",
                "--prompt-tokens",
                "512",
                "--new-tokens",
                "128",
                "--json",
            ],
            512,
        ),
    ] {
        let o = prism(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        let stages = doc["stages"].as_array().unwrap();
        let (p, dcd) = (&stages[0], &stages[1]);
        assert_eq!(p["name"], "prefill");
        assert_eq!(dcd["name"], "decode");
        assert_eq!(p["key_lens"][0], prompt);
        assert_eq!(dcd["key_lens"][0], prompt + 1);
        // Decode is memory-bound, prefill is not; the static cache counts more.
        assert!(dcd["per_run"]["intensity"].as_f64().unwrap() < 2.0);
        assert!(p["per_run"]["intensity"].as_f64().unwrap() > 20.0);
        assert!(dcd["static_cache_flops"].as_u64() > dcd["total"]["flops"].as_u64());
        assert_eq!(p["static_cache_flops"], p["total"]["flops"]);
        assert!(dcd["kv_cache"]["last_bytes"].as_u64() > dcd["kv_cache"]["first_bytes"].as_u64());
    }
}

/// Issue 21's catalogue: outputs only ever replace regular files (or, with --force, a link
/// itself); the format follows the extension; every destination is checked before any work.
#[test]
fn outputs_are_regular_files_named_for_their_format() {
    let d = scratch("outputs");
    let model = fixtures().join("sd1_tiny");
    let m = model.to_str().unwrap();
    // A device is never replaced, even with --force.
    let dev = Path::new("/dev/null");
    let mut args = generate_args(m, "/dev/null");
    args.push("--force");
    fails(&args, dev, &["/dev/null", "not a regular file"]);
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(dev).unwrap().file_type().is_char_device());
    }
    // A dangling link: refused without --force; with it the link itself is replaced.
    let target = d.join("elsewhere.png");
    let link = d.join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    fails(
        &generate_args(m, link.to_str().unwrap()),
        &d.join("never.png"),
        &["symbolic link", "--force"],
    );
    let mut args = generate_args(m, link.to_str().unwrap());
    args.push("--force");
    let o = prism(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert!(!target.exists(), "the link's target was written");
    // The extension names the format.
    let jpg = d.join("x.jpg");
    fails(
        &generate_args(m, jpg.to_str().unwrap()),
        &jpg,
        &["x.jpg", "*.png"],
    );
    let gif = d.join("x.gif");
    fails(&generate_args(m, gif.to_str().unwrap()), &gif, &["*.png"]);
    // Video destinations are checked up front.
    let video = fixtures().join("t2v_tiny");
    let v = video.to_str().unwrap();
    let out = d.join("v.gif");
    let o = out.to_str().unwrap();
    let base = [
        "generate", "--model", v, "--prompt", "x", "--steps", "1", "--frames", "2",
    ];
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["--fps", "0", "-o", o]);
    fails(&a, &out, &["--fps 0"]);
    let file = d.join("afile");
    std::fs::write(&file, b"x").unwrap();
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["--frames-dir", file.to_str().unwrap(), "-o", o]);
    fails(&a, &out, &["--frames-dir", "not a folder"]);
    // forward writes safetensors only.
    let inp = d.join("in.safetensors");
    write_tensors(
        &inp,
        &[(
            "input_ids".into(),
            prism_core::Tensor::from_ids(vec![1, 3], vec![1, 2, 3]).unwrap(),
        )],
        false,
    )
    .unwrap();
    let bin = d.join("out.bin");
    fails(
        &[
            "forward",
            "--model",
            m,
            "--component",
            "text-encoder",
            "--inputs",
            inp.to_str().unwrap(),
            "-o",
            bin.to_str().unwrap(),
        ],
        &bin,
        &["*.safetensors"],
    );
}

/// NaN or Inf in weights, latents, forward inputs or a scheduler config is an error naming
/// it, not a black image.
#[test]
fn non_finite_numbers_are_refused_by_name() {
    let m = rewrite_text_encoder("nan", |ts| {
        let (_, t) = ts
            .iter_mut()
            .find(|(n, _)| n == "text_model.final_layer_norm.weight")
            .unwrap();
        t.data_mut()[3] = f32::NAN;
    });
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["final_layer_norm.weight", "NaN"],
    );
    let d = scratch("nan-latents");
    let lat = d.join("lat.safetensors");
    let mut z = prism_core::Tensor::zeros(&[1, 4, 4, 4]);
    z.data_mut()[5] = f32::INFINITY;
    write_tensors(&lat, &[("latents".into(), z)], false).unwrap();
    let model = fixtures().join("sd1_tiny");
    let out = d.join("x.png");
    let mut args = generate_args(model.to_str().unwrap(), out.to_str().unwrap());
    args.extend(["--latents", lat.to_str().unwrap()]);
    fails(&args, &out, &["--latents", "inf"]);
    // Betas above 1 in the scheduler config.
    let m = tiny_copy("betas");
    let f = m.join("scheduler/scheduler_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    v["beta_end"] = 1.5.into();
    std::fs::write(&f, v.to_string()).unwrap();
    let out = m.join("x.png");
    fails(
        &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
        &out,
        &["beta_end", "< 1"],
    );
    // Too many threads are capped with a note, not a hang.
    let o = prism(&["--threads", "100000", "analyze", "sd15", "--steps", "1"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("more than the"));
}

/// A run that cannot fit is refused before any weight is read, with the predicted figure.
#[test]
fn runs_that_cannot_fit_are_refused_up_front() {
    let d = scratch("preflight");
    let out = d.join("big.png");
    let t = std::time::Instant::now();
    fails(
        &[
            "generate",
            "--model",
            "sd15",
            "--prompt",
            "x",
            "--width",
            "16384",
            "--height",
            "16384",
            "-o",
            out.to_str().unwrap(),
        ],
        &out,
        &["needs about", "GiB", "available", "--no-preflight"],
    );
    let gif = d.join("big.gif");
    fails(
        &[
            "generate",
            "--model",
            "t2v",
            "--prompt",
            "x",
            "--frames",
            "10000000",
            "-o",
            gif.to_str().unwrap(),
        ],
        &gif,
        &["needs about", "--frames"],
    );
    assert!(
        t.elapsed().as_secs() < 10,
        "preflight took {:?}",
        t.elapsed()
    );
}

/// What stands where a weight file should be is named, and shard indexes cannot reach
/// outside the model folder; an empty input is named.
#[test]
fn weight_files_that_are_not_files_are_named() {
    let m = tiny_copy("notfile");
    let f = m.join("vae/diffusion_pytorch_model.safetensors");
    let out = m.join("x.png");
    let args = generate_args(m.to_str().unwrap(), out.to_str().unwrap());
    std::fs::remove_file(&f).unwrap();
    std::fs::create_dir(&f).unwrap();
    fails(
        &args,
        &out,
        &["diffusion_pytorch_model.safetensors", "folder"],
    );
    std::fs::remove_dir(&f).unwrap();
    std::os::unix::fs::symlink("diffusion_pytorch_model.safetensors", &f).unwrap();
    fails(&args, &out, &["symbolic link loop"]);
    std::fs::remove_file(&f).unwrap();
    std::os::unix::fs::symlink("/nonexistent/prism", &f).unwrap();
    fails(&args, &out, &["symbolic link to nothing"]);
    // A FIFO (reading it would block forever).
    std::fs::remove_file(&f).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&f).status();
    if made.is_ok_and(|s| s.success()) {
        fails(
            &args,
            &out,
            &["diffusion_pytorch_model.safetensors", "not a regular file"],
        );
    } else {
        eprintln!("no mkfifo here: the FIFO case is skipped");
    }
    // A shard index naming a device, and a path outside the folder.
    let d = scratch("shards").join("model");
    copy_dir(&fixtures().join("janus_tiny_b"), &d);
    let idx = d.join("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    let key = v["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let out = d.join("j.png");
    for (shard, needle) in [
        ("/dev/zero", "/dev/zero"),
        ("../../etc/passwd", "../../etc/passwd"),
    ] {
        v["weight_map"][&key] = shard.into();
        std::fs::write(&idx, v.to_string()).unwrap();
        fails(
            &[
                "generate",
                "--model",
                d.to_str().unwrap(),
                "--prompt",
                "x",
                "-o",
                out.to_str().unwrap(),
            ],
            &out,
            &[needle, "refused"],
        );
    }
    // An empty forward input.
    let s = scratch("empty-input");
    let inp = s.join("in.safetensors");
    write_tensors(
        &inp,
        &[
            ("sample".into(), prism_core::Tensor::zeros(&[1, 4, 4, 4])),
            ("timestep".into(), prism_core::Tensor::zeros(&[1])),
            (
                "encoder_hidden_states".into(),
                prism_core::Tensor::zeros(&[1, 0, 32]),
            ),
        ],
        false,
    )
    .unwrap();
    let o = s.join("o.safetensors");
    fails(
        &[
            "forward",
            "--model",
            fixtures().join("sd1_tiny").to_str().unwrap(),
            "--component",
            "unet",
            "--inputs",
            inp.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
        &o,
        &["encoder_hidden_states", "empty"],
    );
}

/// Sizes whose counts would not fit 64 bits are refused by flag, not printed wrapped.
#[test]
fn uncountable_sizes_are_refused() {
    let nothing = scratch("uncountable").join("nothing");
    fails(
        &[
            "analyze", "sd15", "--width", "8000000", "--height", "8000000",
        ],
        &nothing,
        &["--width 8000000", "16384"],
    );
    fails(
        &["analyze", "t2v", "--frames", "100000"],
        &nothing,
        &["--frames 100000"],
    );
    // Config values too large to count, zero, or a zero sample size name the config key.
    let m = tiny_copy("config-keys");
    let cfg = m.join("unet/config.json");
    let orig = std::fs::read_to_string(&cfg).unwrap();
    for (key, value, needles) in [
        (
            "block_out_channels",
            serde_json::json!([1_000_000_000, 1_000_000_000]),
            &["block_out_channels", "1000000000"][..],
        ),
        (
            "block_out_channels",
            serde_json::json!([0, 32]),
            &["block_out_channels", "at least 1"][..],
        ),
        (
            "sample_size",
            serde_json::json!(0),
            &["sample_size", "at least 1"][..],
        ),
    ] {
        std::fs::write(&cfg, &orig).unwrap();
        edit_json(&cfg, |v| v[key] = value.clone());
        fails(&["analyze", m.to_str().unwrap()], &nothing, needles);
        let out = m.join("x.png");
        fails(
            &generate_args(m.to_str().unwrap(), out.to_str().unwrap()),
            &out,
            needles,
        );
    }
}

/// Every output destination is checked before any model work: a missing folder is named.
#[test]
fn missing_output_folders_are_named_up_front() {
    let m = fixtures().join("sd1_tiny");
    let m = m.to_str().unwrap();
    let missing = scratch("no-folder").join("absent");
    let o = missing.join("x.png");
    fails(
        &generate_args(m, o.to_str().unwrap()),
        &o,
        &["absent", "does not exist"],
    );
    let t = missing.join("t.json");
    fails(
        &["profile", m, "--steps", "1", "--trace", t.to_str().unwrap()],
        &t,
        &["absent", "does not exist"],
    );
    let c = missing.join("a.csv");
    fails(
        &["analyze", m, "--csv", c.to_str().unwrap()],
        &c,
        &["absent", "does not exist"],
    );
    // A folder that takes no new files (even for root): /proc.
    if Path::new("/proc").is_dir() {
        let o = Path::new("/proc/prism-x.png");
        fails(
            &generate_args(m, "/proc/prism-x.png"),
            o,
            &["cannot write in /proc"],
        );
        let t = Path::new("/proc/prism-t.json");
        fails(
            &[
                "profile",
                m,
                "--steps",
                "1",
                "--trace",
                "/proc/prism-t.json",
            ],
            t,
            &["cannot write in /proc"],
        );
    }
}

/// Edit one JSON config of a copied model folder.
fn edit_json(file: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn amused_folder_generates_deterministically_and_refuses_bad_input() {
    let d = scratch("amused");
    let model = fixtures().join("amused_tiny");
    let m = model.to_str().unwrap();
    // Same seed, same image at any thread count (sampled tokens and Gumbel noise included).
    let mut images = Vec::new();
    for threads in ["1", "2"] {
        let out = d.join(format!("a{threads}.png"));
        let o = prism(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "a red boat",
            "--seed",
            "7",
            "--threads",
            threads,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dec = png::Decoder::new(std::io::Cursor::new(std::fs::read(&out).unwrap()));
        let mut reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (16, 16));
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut px).unwrap();
        images.push(px);
    }
    assert_eq!(images[0], images[1], "seed 7 at 1 and 2 threads");
    // diffusers' deterministic run from the fixture's partly unmasked grid (--latents, read
    // from int64), greedy at temperature 0: the image within ±2.
    let out = d.join("latents.png");
    let lat = model.join("pipeline/latents.safetensors");
    let o = prism(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "a photo of a cat",
        "--latents",
        lat.to_str().unwrap(),
        "--greedy",
        "--temperature",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dec = png::Decoder::new(std::io::Cursor::new(std::fs::read(&out).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut px).unwrap();
    let want = prism_models::io::read_tensors_as_stored(&model.join("pipeline/image.safetensors"))
        .unwrap()
        .remove("image_u8")
        .unwrap();
    let worst = px
        .iter()
        .zip(want.ids().unwrap())
        .map(|(&a, &b)| (i64::from(a) - b).abs())
        .max()
        .unwrap();
    assert!(worst <= 2, "pixels differ from diffusers' by up to {worst}");
    let out = d.join("bad.png");
    let o = out.to_str().unwrap();
    let gen = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "--model", m, "--prompt", "x", "-o", o]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (extra, needles) in [
        (&["--guidance", "nan"][..], &["--guidance"][..]),
        (&["--temperature=-1"], &["--temperature"]),
        (&["--top-k", "5"], &["--top-k"]),
        (&["--scheduler", "ddim"], &["--scheduler"]),
        (&["--steps", "0"], &["--steps 0"]),
        (&["--width", "15"], &["--width 15"]),
    ] {
        let args = gen(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, &out, needles);
    }
    // Inconsistent or unknown configs: one line naming the file and field.
    type Case<'a> = (&'a str, &'a str, fn(&mut serde_json::Value), &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "transformer",
            "config.json",
            |v| v["codebook_size"] = 32.into(),
            &["codebook_size 32", "num_vq_embeddings 64"],
        ),
        (
            "scheduler",
            "scheduler_config.json",
            |v| v["mask_token_id"] = 10.into(),
            &["mask_token_id 10"],
        ),
        (
            "transformer",
            "config.json",
            |v| v["vocab_size"] = 64.into(),
            &["vocab_size", "mask token"],
        ),
        (
            "transformer",
            "config.json",
            |v| v["attention_type"] = "gated".into(),
            &[
                "transformer/config.json",
                "unknown UVit2DModel field `attention_type`",
            ],
        ),
    ];
    for (i, (part, file, edit, needles)) in cases.into_iter().enumerate() {
        let copy = scratch(&format!("amused_cfg{i}")).join("model");
        copy_dir(&model, &copy);
        edit_json(&copy.join(part).join(file), edit);
        let c = copy.to_str().unwrap();
        fails(
            &["generate", "--model", c, "--prompt", "x", "-o", o],
            &out,
            needles,
        );
    }
    // A KL VAE where the VQ model belongs, and the reverse.
    let copy = scratch("amused_kl").join("model");
    copy_dir(&model, &copy);
    std::fs::copy(
        fixtures().join("sd1_tiny/vae/config.json"),
        copy.join("vqvae/config.json"),
    )
    .unwrap();
    let c = copy.to_str().unwrap();
    fails(
        &["generate", "--model", c, "--prompt", "x", "-o", o],
        &out,
        &["vqvae/config.json", "is not VQModel", "KL VAE"],
    );
    let sd = tiny_copy("sd_with_vq");
    std::fs::copy(model.join("vqvae/config.json"), sd.join("vae/config.json")).unwrap();
    let s = sd.to_str().unwrap();
    fails(
        &generate_args(s, o),
        &out,
        &["vae/config.json", "is not AutoencoderKL", "VQ model"],
    );
    // forward names the components an aMUSEd model has.
    let inp = model.join("io/vqvae_decoder_in.safetensors");
    let fo = d.join("f.safetensors");
    fails(
        &[
            "forward",
            "--model",
            m,
            "--component",
            "unet",
            "--inputs",
            inp.to_str().unwrap(),
            "-o",
            fo.to_str().unwrap(),
        ],
        &fo,
        &["--component unet", "vqvae-decoder", "masked-token"],
    );
}

#[test]
fn pixart_and_dit_folders_generate_and_refuse_bad_input() {
    let d = scratch("pixart");
    let px = fixtures().join("pixart_tiny");
    let p = px.to_str().unwrap();
    let out = d.join("p.png");
    let o = prism(&[
        "generate",
        "--model",
        p,
        "--prompt",
        "a photo of a cat",
        "--steps",
        "2",
        "--width",
        "16",
        "--height",
        "16",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dit = fixtures().join("dit_tiny");
    let dm = dit.to_str().unwrap();
    let out2 = d.join("d.png");
    let o = prism(&[
        "generate",
        "--model",
        dm,
        "--class-label",
        "3",
        "--steps",
        "2",
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = d.join("bad.png");
    let b = bad.to_str().unwrap();
    fails(
        &["generate", "--model", dm, "-o", b],
        &bad,
        &["--class-label", "class-conditional"],
    );
    fails(
        &["generate", "--model", dm, "--class-label", "1000", "-o", b],
        &bad,
        &["--class-label 1000", "1000 classes"],
    );
    fails(
        &[
            "generate",
            "--model",
            p,
            "--prompt",
            "x",
            "--class-label",
            "3",
            "-o",
            b,
        ],
        &bad,
        &["--class-label", "not class-conditional"],
    );
    fails(
        &[
            "generate", "--model", p, "--prompt", "x", "--width", "18", "-o", b,
        ],
        &bad,
        &["--width 18"],
    );
    // A transformer whose caption width is not the T5's.
    let copy = scratch("pixart_caption").join("model");
    copy_dir(&px, &copy);
    edit_json(&copy.join("transformer/config.json"), |v| {
        v["caption_channels"] = 40.into()
    });
    let c = copy.to_str().unwrap();
    fails(
        &["generate", "--model", c, "--prompt", "x", "-o", b],
        &bad,
        &["caption_channels 40", "d_model 32"],
    );
    // analyze states the preset's memory (T5-XXL in bf16) without reading weights.
    let o = prism(&["analyze", "pixart-alpha-512", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages = doc["stages"].as_array().unwrap();
    let t5 = stages.iter().find(|s| s["name"] == "text_encoder").unwrap();
    let bytes = t5["memory"]["weight_bytes"].as_u64().unwrap();
    assert!(
        (9_000_000_000..10_000_000_000).contains(&bytes),
        "T5-XXL in bf16 is ~9.5 GB, analyze says {bytes}"
    );
}

/// `--model`'s help names every built-in preset (it is typed in, so this keeps it true).
#[test]
fn model_help_names_every_preset() {
    let o = prism(&["generate", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for p in prism_models::source::PRESETS {
        assert!(
            help.contains(p.name),
            "--model's help does not name {}",
            p.name
        );
    }
}

/// Write `frames` RGB frames of `w`×`h` (a moving gradient) as dir/f_0.png, f_1.png, ...
fn write_png_frames(dir: &Path, frames: usize, w: usize, h: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..frames {
        let data: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 7 + f * 13) % 256) as u8)
            .collect();
        let file = std::fs::File::create(dir.join(format!("f_{f}.png"))).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&data).unwrap();
    }
}

#[test]
fn tokenize_detokenize_and_round_trip_a_clip() {
    let d = scratch("tokenize");
    let model = fixtures().join("magvit").join("tokenizer_tiny");
    let model = model.to_str().unwrap();
    let clip = d.join("clip");
    write_png_frames(&clip, 9, 32, 32);
    let tokens = d.join("t.safetensors");
    let o = prism(&[
        "tokenize",
        "--model",
        model,
        "--input",
        clip.to_str().unwrap(),
        "-o",
        tokens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_tensors(&tokens).unwrap();
    // 9 frames, 4× in time and space: the predicted 3×8×8 grid of 8-bit ids.
    assert_eq!(t["ids"].shape(), &[3, 8, 8]);
    assert!(t["ids"].data().iter().all(|&v| (0.0..256.0).contains(&v)));
    let gif = d.join("r.gif");
    let frames = d.join("frames");
    let o = prism(&[
        "detokenize",
        "--model",
        model,
        "--input",
        tokens.to_str().unwrap(),
        "--frames-dir",
        frames.to_str().unwrap(),
        "-o",
        gif.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = prism_models::video_io::read_clip(&gif, Default::default()).unwrap();
    assert_eq!((back.frames, back.width, back.height), (9, 32, 32));
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 9);
    // The round trip reports a PSNR and keeps the same tokens.
    let tokens2 = d.join("t2.safetensors");
    let o = prism(&[
        "round-trip",
        "--model",
        model,
        "--input",
        clip.to_str().unwrap(),
        "--tokens",
        tokens2.to_str().unwrap(),
        "-o",
        d.join("rt.gif").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("PSNR"), "{err}");
    let t2 = read_tensors(&tokens2).unwrap();
    assert_eq!(t2["ids"].data(), t["ids"].data());
    // No overwrite without --force.
    fails(
        &[
            "tokenize",
            "--model",
            model,
            "--input",
            clip.to_str().unwrap(),
            "-o",
            tokens.to_str().unwrap(),
        ],
        &tokens,
        &["--force"],
    );
}

#[test]
fn tokenizer_bad_input_is_one_line() {
    let d = scratch("tokenize-bad");
    let model = fixtures().join("magvit").join("tokenizer_tiny");
    let model = model.to_str().unwrap();
    let out = d.join("t.safetensors");
    let o = out.to_str().unwrap();
    // 8 frames: the causal tokenizer takes 1 + k·4.
    let clip8 = d.join("clip8");
    write_png_frames(&clip8, 8, 32, 32);
    fails(
        &[
            "tokenize",
            "--model",
            model,
            "--input",
            clip8.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        &["clip8", "8 frames", "1 + k·4"],
    );
    // 30×32: not a multiple of the 4× downsampling.
    let odd = d.join("odd");
    write_png_frames(&odd, 5, 30, 32);
    fails(
        &[
            "tokenize",
            "--model",
            model,
            "--input",
            odd.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        &["multiples of 4"],
    );
    // ids beyond the 256-code book.
    let ids = d.join("ids.safetensors");
    let bad = prism_core::Tensor::from_ids(vec![1, 2, 2], vec![0, 5, 255, 256]).unwrap();
    write_tensors(&ids, &[("ids".into(), bad)], false).unwrap();
    let gif = d.join("x.gif");
    fails(
        &[
            "detokenize",
            "--model",
            model,
            "--input",
            ids.to_str().unwrap(),
            "-o",
            gif.to_str().unwrap(),
        ],
        &gif,
        &["ids.safetensors", "256", "codebook"],
    );
    // A token file without `ids`.
    let other = d.join("other.safetensors");
    write_tensors(
        &other,
        &[("x".into(), prism_core::Tensor::zeros(&[2]))],
        false,
    )
    .unwrap();
    fails(
        &[
            "detokenize",
            "--model",
            model,
            "--input",
            other.to_str().unwrap(),
            "-o",
            gif.to_str().unwrap(),
        ],
        &gif,
        &["no tensor `ids`"],
    );
    // A folder that is not a tokenizer.
    fails(
        &[
            "tokenize",
            "--model",
            d.to_str().unwrap(),
            "--input",
            clip8.to_str().unwrap(),
            "-o",
            o,
        ],
        &out,
        &["no MAGVIT-v2 tokenizer"],
    );
}

#[test]
fn suite_reports_one_model_and_resumes_from_its_cache() {
    let d = scratch("suite");
    let out = d.join("report");
    let args = [
        "suite",
        "--quick",
        "--only",
        "amused-256",
        "-o",
        out.to_str().unwrap(),
    ];
    let o = prism(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<h2>Findings</h2>") && html.contains("amused-256"));
    // Charts are inline SVG; no script, nothing fetched.
    assert!(html.matches("<svg").count() >= 5, "charts present");
    // (the SVG namespace URI is a name, not a fetch)
    for external in [
        "<script",
        " src=",
        "<link",
        "url(",
        "@import",
        "href=\"http",
    ] {
        assert!(!html.contains(external), "{external} in the report");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("suite.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "prism.suite/1");
    let m = &json["models"][0];
    assert_eq!(m["model"]["name"], "amused-256");
    assert!(m["flash"]["stages"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    assert!(m["naive"]["command"]
        .as_str()
        .unwrap()
        .contains("--attention naive"));
    for f in ["models.csv", "categories.csv", "sweeps.csv", "findings.csv"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A second run takes every unit from the cache.
    let o = prism(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("cached") && !err.contains("..."),
        "{err}"
    );
}

#[test]
fn suite_bad_arguments_are_one_line() {
    let d = scratch("suite-bad");
    let out = d.join("r");
    fails(
        &["suite", "--only", "sd99", "-o", out.to_str().unwrap()],
        &out,
        &["--only sd99", "sd15"],
    );
    let file = d.join("file");
    std::fs::write(&file, "x").unwrap();
    fails(
        &["suite", "-o", file.to_str().unwrap()],
        &file,
        &["not a folder"],
    );
}
