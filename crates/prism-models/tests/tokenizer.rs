//! CLIP tokenizer against transformers 5.23 `CLIPTokenizer` reference ids
//! (`tests/fixtures/tokenizer/clip_prompts.json`, `tests/fixtures/*_tiny/io/text_encoder_in.safetensors`).

use std::path::{Path, PathBuf};

use prism_core::Error;
use prism_models::text::tokenizer::{ClipTokenizer, PadToken};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

struct Case {
    prompt: String,
    ids: Vec<u32>,
    ids_pad_bang: Vec<u32>,
}

fn load_cases() -> Vec<Case> {
    let path = fixture("tokenizer/clip_prompts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the reference fixture is required)",
            path.display()
        )
    });
    let v: serde_json::Value =
        serde_json::from_str(&text).expect("clip_prompts.json is valid JSON");
    let ids = |x: &serde_json::Value, key: &str| -> Vec<u32> {
        x[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|i| i.as_u64().expect("id is an integer") as u32)
            .collect()
    };
    let cases: Vec<Case> = v
        .as_array()
        .expect("clip_prompts.json is a list")
        .iter()
        .map(|x| Case {
            prompt: x["prompt"]
                .as_str()
                .expect("prompt is a string")
                .to_string(),
            ids: ids(x, "ids"),
            ids_pad_bang: ids(x, "ids_pad_bang"),
        })
        .collect();
    assert!(
        cases.len() >= 60,
        "expected at least 60 prompts, found {}",
        cases.len()
    );
    cases
}

/// Compare every prompt; report all mismatches at once.
fn check_all(name: &str, tk: &ClipTokenizer, cases: &[Case], bang: bool) {
    let mut bad = Vec::new();
    for c in cases {
        let want = if bang { &c.ids_pad_bang } else { &c.ids };
        let got = tk.encode(&c.prompt).expect("encode");
        if &got != want {
            bad.push(format!(
                "  {:?}\n    got  {:?}\n    want {:?}",
                c.prompt, got, want
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {}/{} prompts differ from transformers:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
    eprintln!("{name}: {}/{} prompts match", cases.len(), cases.len());
}

#[test]
fn builtin_matches_transformers_pad_eos() {
    let tk = ClipTokenizer::builtin(PadToken::Eos).unwrap();
    assert_eq!(tk.vocab_size(), 49408);
    assert_eq!(
        (tk.bos_id(), tk.eos_id(), tk.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(tk.max_length(), 77);
    check_all("builtin pad=<|endoftext|>", &tk, &load_cases(), false);
}

#[test]
fn builtin_matches_transformers_pad_bang() {
    let tk = ClipTokenizer::builtin(PadToken::Bang).unwrap();
    assert_eq!((tk.bos_id(), tk.eos_id(), tk.pad_id()), (49406, 49407, 0));
    check_all("builtin pad=!", &tk, &load_cases(), true);
}

#[test]
fn builtin_known_ids() {
    let tk = ClipTokenizer::builtin(PadToken::Eos).unwrap();
    let ids = tk.encode("a photo of a cat").unwrap();
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&i| i == 49407));
    assert_eq!(ids.len(), 77);
    assert_eq!(tk.count_tokens("a photo of a cat").unwrap(), 5);
    // Truncation keeps 75 prompt tokens and ends with eos.
    let long = "word ".repeat(200);
    let ids = tk.encode(&long).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    assert_eq!(tk.count_tokens(&long).unwrap(), 200);
    // A shorter length is honoured.
    let short = tk.clone().with_max_length(8).unwrap();
    assert_eq!(
        short.encode("a photo of a cat").unwrap(),
        vec![49406, 320, 1125, 539, 320, 2368, 49407, 49407]
    );
    assert!(tk.clone().with_max_length(1).is_err());
}

#[test]
fn folder_vocab_merges_matches_transformers() {
    let dir = fixture("clip_vocab");
    assert!(dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file());
    let cases = load_cases();
    let tk = ClipTokenizer::from_folder(&dir).unwrap();
    assert_eq!(tk.vocab_size(), 49408);
    assert_eq!(
        (tk.bos_id(), tk.eos_id(), tk.pad_id(), tk.max_length()),
        (49406, 49407, 49407, 77)
    );
    check_all("clip_vocab folder pad=<|endoftext|>", &tk, &cases, false);

    // Same files with SD 2.x's pad token "!".
    let tmp = TempDir::new("clip_vocab_bang");
    std::fs::copy(dir.join("vocab.json"), tmp.0.join("vocab.json")).unwrap();
    std::fs::copy(dir.join("merges.txt"), tmp.0.join("merges.txt")).unwrap();
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        r#"{"pad_token": "!", "model_max_length": 77}"#,
    )
    .unwrap();
    let tk = ClipTokenizer::from_folder(&tmp.0).unwrap();
    assert_eq!(tk.pad_id(), 0);
    check_all("clip_vocab folder pad=!", &tk, &cases, true);
}

/// Reads `input_ids` (int64, (2, 77)) from a `text_encoder_in.safetensors`.
fn saved_input_ids(path: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let t = st.tensor("input_ids").expect("input_ids tensor");
    assert_eq!(t.dtype(), safetensors::Dtype::I64);
    assert_eq!(t.shape(), &[2, 77]);
    let flat: Vec<u32> = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    flat.chunks(77).map(|r| r.to_vec()).collect()
}

fn check_tiny(name: &str, pad_id: u32) {
    let tok_dir = fixture(&format!("{name}/tokenizer"));
    let want = saved_input_ids(&fixture(&format!("{name}/io/text_encoder_in.safetensors")));
    let prompts = ["a photo of a cat", ""];

    // tokenizer.json path.
    assert!(
        tok_dir.join("tokenizer.json").is_file(),
        "{} missing",
        tok_dir.display()
    );
    let tk = ClipTokenizer::from_folder(&tok_dir).unwrap();
    assert_eq!(tk.pad_id(), pad_id, "{name} pad id");
    assert_eq!(tk.max_length(), 77);
    assert_eq!(tk.vocab_size(), 1014);
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(&tk.encode(p).unwrap(), w, "{name} tokenizer.json: {p:?}");
    }

    // vocab.json + merges.txt path (same folder without tokenizer.json).
    let tmp = TempDir::new(name);
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tok_dir.join(f), tmp.0.join(f)).unwrap();
    }
    let tk = ClipTokenizer::from_folder(&tmp.0).unwrap();
    assert_eq!(tk.pad_id(), pad_id);
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(
            &tk.encode(p).unwrap(),
            w,
            "{name} vocab.json+merges.txt: {p:?}"
        );
    }
}

#[test]
fn sd1_tiny_tokenizer_matches_saved_input_ids() {
    check_tiny("sd1_tiny", 1013);
}

#[test]
fn sd2_tiny_tokenizer_matches_saved_input_ids() {
    check_tiny("sd2_tiny", 0);
}

#[test]
fn absurd_model_max_length_is_capped() {
    let src = fixture("sd1_tiny/tokenizer");
    let tmp = TempDir::new("absurd_len");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(src.join(f), tmp.0.join(f)).unwrap();
    }
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        r#"{"model_max_length": 1000000000000000019884624838656, "pad_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    let tk = ClipTokenizer::from_folder(&tmp.0).unwrap();
    assert_eq!(tk.max_length(), 77);
}

fn err_text(r: prism_core::Result<ClipTokenizer>) -> (String, Error) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => (e.to_string(), e),
    }
}

#[test]
fn errors_name_the_file() {
    let src = fixture("sd1_tiny/tokenizer");

    // Empty folder: neither tokenizer.json nor vocab.json.
    let tmp = TempDir::new("err_empty");
    let (msg, e) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(
        matches!(e, Error::File { .. })
            && msg.contains("vocab.json")
            && msg.contains("tokenizer.json"),
        "{msg}"
    );

    // Missing folder.
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0.join("nope")));
    assert!(msg.contains("nope"), "{msg}");

    // vocab.json without merges.txt.
    std::fs::copy(src.join("vocab.json"), tmp.0.join("vocab.json")).unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(msg.contains("merges.txt"), "{msg}");

    // Malformed vocab.json.
    std::fs::copy(src.join("merges.txt"), tmp.0.join("merges.txt")).unwrap();
    std::fs::write(tmp.0.join("vocab.json"), "{\"a\": 1,").unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(
        msg.contains("vocab.json") && msg.contains("malformed JSON"),
        "{msg}"
    );

    // Malformed merges.txt.
    std::fs::copy(src.join("vocab.json"), tmp.0.join("vocab.json")).unwrap();
    std::fs::write(
        tmp.0.join("merges.txt"),
        "#version: 0.2\ni n\nthis has three\n",
    )
    .unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(
        msg.contains("merges.txt") && msg.contains("line 3"),
        "{msg}"
    );

    // Merge whose parts are not in the vocabulary.
    std::fs::write(
        tmp.0.join("merges.txt"),
        "#version: 0.2\n\u{4e00} \u{4e01}\n",
    )
    .unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(msg.contains("merges.txt"), "{msg}");

    // vocab.json without the start token: vocab.json is named, not merges.txt.
    std::fs::copy(src.join("merges.txt"), tmp.0.join("merges.txt")).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("vocab.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("<|startoftext|>");
    std::fs::write(tmp.0.join("vocab.json"), v.to_string()).unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(
        msg.contains("vocab.json")
            && !msg.contains("merges.txt")
            && msg.contains("<|startoftext|>"),
        "{msg}"
    );
    std::fs::copy(src.join("vocab.json"), tmp.0.join("vocab.json")).unwrap();

    // Unknown pad token.
    std::fs::copy(src.join("merges.txt"), tmp.0.join("merges.txt")).unwrap();
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        r#"{"pad_token": "<|pad|>"}"#,
    )
    .unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(msg.contains("pad") && msg.contains("<|pad|>"), "{msg}");

    // Malformed tokenizer_config.json.
    std::fs::write(tmp.0.join("tokenizer_config.json"), "not json").unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("malformed JSON"),
        "{msg}"
    );

    // Bad model_max_length.
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        r#"{"model_max_length": "77"}"#,
    )
    .unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(msg.contains("model_max_length"), "{msg}");

    // Malformed tokenizer.json wins over vocab.json and is reported.
    std::fs::write(tmp.0.join("tokenizer_config.json"), "{}").unwrap();
    std::fs::write(tmp.0.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let (msg, _) = err_text(ClipTokenizer::from_folder(&tmp.0));
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("prism-tokenizer-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `tokenizer.json` that made the `tokenizers` crate panic (found by `fuzz/` target
/// `tokenizer`) is a one-line error naming the file.
#[test]
fn a_tokenizer_file_that_panics_the_parser_is_an_error() {
    let src = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/fuzz/tokenizer_decoder_panic.json"
    ));
    let dir = std::env::temp_dir().join(format!("prism-tok-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&src, dir.join("tokenizer.json")).unwrap();
    let e = prism_models::text::tokenizer::ClipTokenizer::from_folder(&dir)
        .expect_err("refused")
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a valid"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}
