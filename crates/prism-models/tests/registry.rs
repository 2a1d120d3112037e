//! The pipeline registry: presets, `model_index.json` classes, folders without one, and
//! classes prism does not run.

use prism_models::pipelines::{self, MediaKind};
use prism_models::source::ModelSource;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prism-registry-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn presets_and_folders_find_their_pipeline() {
    for (model, class, media) in [
        ("sd15", "StableDiffusionPipeline", MediaKind::Image),
        ("sd21", "StableDiffusionPipeline", MediaKind::Image),
        ("t2v", "TextToVideoSDPipeline", MediaKind::Video),
    ] {
        let e = pipelines::entry_for(&ModelSource::parse(model).unwrap()).unwrap();
        assert_eq!((e.class_name, e.media), (class, media), "{model}");
    }
    for (dir, class) in [
        ("sd1_tiny", "StableDiffusionPipeline"),
        ("sd2_tiny", "StableDiffusionPipeline"),
        ("t2v_tiny", "TextToVideoSDPipeline"),
    ] {
        let src = ModelSource::parse(fixture(dir).to_str().unwrap()).unwrap();
        assert_eq!(
            pipelines::entry_for(&src).unwrap().class_name,
            class,
            "{dir}"
        );
    }
}

#[test]
fn unknown_classes_are_named_and_folders_without_an_index_are_detected() {
    // A class prism does not run, and no unet/ to fall back on: named in one line.
    let d = scratch("flux");
    std::fs::write(
        d.join("model_index.json"),
        r#"{"_class_name": "FluxPipeline"}"#,
    )
    .unwrap();
    let e = pipelines::entry_for(&ModelSource::parse(d.to_str().unwrap()).unwrap())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("FluxPipeline") && e.contains("StableDiffusionPipeline"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    // No `_class_name`: the file is named.
    std::fs::write(
        d.join("model_index.json"),
        r#"{"unet": ["diffusers", "X"]}"#,
    )
    .unwrap();
    let e = pipelines::entry_for(&ModelSource::parse(d.to_str().unwrap()).unwrap())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("model_index.json") && e.contains("_class_name"),
        "{e}"
    );
    // A transformers folder names its architecture: Llama is the LLM baseline, another is
    // named in the error.
    let l = scratch("llama");
    std::fs::write(
        l.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
    )
    .unwrap();
    let e = pipelines::entry_for(&ModelSource::parse(l.to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(e.class_name, "LlamaForCausalLM");
    std::fs::write(
        l.join("config.json"),
        r#"{"architectures": ["MistralForCausalLM"], "model_type": "mistral"}"#,
    )
    .unwrap();
    let e = pipelines::entry_for(&ModelSource::parse(l.to_str().unwrap()).unwrap())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("MistralForCausalLM") && e.contains("JanusForConditionalGeneration"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&l);
    // A folder with only a 3D UNet config and no index is the video pipeline.
    let v = scratch("video");
    std::fs::create_dir_all(v.join("unet")).unwrap();
    std::fs::copy(
        fixture("t2v_tiny/unet/config.json"),
        v.join("unet/config.json"),
    )
    .unwrap();
    let src = ModelSource::parse(v.to_str().unwrap()).unwrap();
    assert_eq!(
        pipelines::entry_for(&src).unwrap().class_name,
        "TextToVideoSDPipeline"
    );
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&v);
}
