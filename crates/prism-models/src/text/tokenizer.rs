//! CLIP's byte-level BPE tokenizer, identical to transformers' `CLIPTokenizer` (5.x, backed by
//! the `tokenizers` library) for Stable Diffusion 1.x / 2.x text encoders.
//!
//! The pipeline, built here with the `tokenizers` crate exactly as transformers builds it
//! (and as it serialises it to `tokenizer.json`):
//!
//! * normalizer: `NFC`, then `Replace(/\s+/ -> " ")`, then `Lowercase`. There is no strip and no
//!   ftfy: leading/trailing whitespace is dropped by the pre-tokenizer below instead.
//! * pre-tokenizer: `Split` on CLIP's regex
//!   `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!   with `invert = true` and behaviour `Removed` (the matches are the pieces; what lies between
//!   them, i.e. whitespace, is dropped), then `ByteLevel` (no prefix space, `use_regex = true`).
//! * model: BPE with `end_of_word_suffix = "</w>"`, unk `<|endoftext|>`, no dropout.
//! * added tokens: `<|startoftext|>`, `<|endoftext|>` and the pad token, special and not
//!   normalized, so they are recognised verbatim in the prompt before normalization. With SD 2.x's
//!   pad token `!` this means every `!` in a prompt becomes its own id 0 (`"!!!"` gives `0 0 0`,
//!   not BPE's `!!!`), exactly as transformers does.
//! * post-processor: `RobertaProcessing` (`<|startoftext|> … <|endoftext|>`, no offset trimming).
//! * `tokenizer(text, padding="max_length", max_length=77, truncation=True)`: the prompt is cut to
//!   `max_length - 2` tokens from the right (longest-first), wrapped in bos/eos, then padded on
//!   the right with the pad token to `max_length`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prism_core::{Error, Result};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's beginning-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// CLIP's end-of-text token (also its unknown token, and SD 1.x's pad token).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Context length of every CLIP text encoder used by Stable Diffusion.
pub const DEFAULT_MAX_LENGTH: usize = 77;
/// Values of `model_max_length` above this are "unset" placeholders (transformers writes
/// `1000000000000000019884624838656` when it knows none) and are replaced by 77.
const ABSURD_MAX_LENGTH: f64 = 1_000_000.0;

/// CLIP's pre-tokenization regex, as in OpenAI's `SimpleTokenizer` and transformers.
pub const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// OpenAI CLIP's 48894 BPE merges (see `assets/README.md`), behind a `#version: 0.2` header.
const BUILTIN_MERGES: &str = include_str!("../../assets/clip_bpe_merges.txt");
const BUILTIN_NUM_MERGES: usize = 49152 - 256 - 2;
const BUILTIN_NAME: &str = "<built-in CLIP vocabulary: assets/clip_bpe_merges.txt>";

/// A `tokenizer.json` parsed by the `tokenizers` crate. Some malformed files make that crate
/// panic (an `expect` inside its decoder deserializer, found by `fuzz/` target `tokenizer`):
/// the panic is caught and reported as this file's error, one line, no backtrace.
pub fn tokenizer_from_bytes(file: &Path, bytes: &[u8]) -> Result<Tokenizer> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes));
    std::panic::set_hook(prev);
    match r {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(Error::file(
            file,
            format!("not a valid tokenizers JSON file: {e}"),
        )),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::file(
                file,
                format!("not a valid tokenizers JSON file (the tokenizers library failed: {msg})"),
            ))
        }
    }
}

/// [`tokenizer_from_bytes`] on a file.
pub fn tokenizer_from_file(file: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    tokenizer_from_bytes(file, &bytes)
}

/// Which token pads the ids of [`ClipTokenizer::builtin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadToken {
    /// `<|endoftext|>` (id 49407): Stable Diffusion 1.x (`openai/clip-vit-large-patch14`).
    Eos,
    /// `!` (id 0): Stable Diffusion 2.x (OpenCLIP ViT-H/14 as diffusers ships it).
    Bang,
}

impl PadToken {
    pub fn as_str(self) -> &'static str {
        match self {
            PadToken::Eos => EOS_TOKEN,
            PadToken::Bang => "!",
        }
    }
}

/// CLIP BPE tokenizer producing fixed-length id sequences for the text encoder.
#[derive(Clone)]
pub struct ClipTokenizer {
    /// With truncation and padding to `max_length` installed.
    inner: Tokenizer,
    /// The same pipeline without truncation / padding (token counting).
    raw: Tokenizer,
    max_length: usize,
    pad_token: String,
    pad_id: u32,
    bos_id: u32,
    eos_id: u32,
    vocab_size: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("max_length", &self.max_length)
            .field("pad_token", &self.pad_token)
            .field("pad_id", &self.pad_id)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

/// Special tokens and length read from `tokenizer_config.json` / `special_tokens_map.json`.
struct FolderConfig {
    bos: String,
    eos: String,
    unk: String,
    pad: String,
    max_length: usize,
}

impl ClipTokenizer {
    /// The built-in vocabulary (no files): OpenAI CLIP's BPE as the `open_clip_torch` package
    /// ships it, equal to the `tokenizer/` folder of SD 1.x (`PadToken::Eos`) and SD 2.x
    /// (`PadToken::Bang`). `max_length` is 77.
    pub fn builtin(pad: PadToken) -> Result<Self> {
        let builtin_err = |msg: String| Error::invalid(format!("{BUILTIN_NAME}: {msg}"));
        let merges = parse_merges(BUILTIN_MERGES).map_err(builtin_err)?;
        if merges.len() != BUILTIN_NUM_MERGES {
            return Err(builtin_err(format!(
                "expected {BUILTIN_NUM_MERGES} merges, found {}",
                merges.len()
            )));
        }
        let vocab = builtin_vocab(&merges);
        let inner = build_clip(vocab, merges, EOS_TOKEN, BOS_TOKEN, EOS_TOKEN)
            .map_err(|e| builtin_err(e.to_string()))?;
        Self::finish(
            inner,
            BOS_TOKEN,
            EOS_TOKEN,
            pad.as_str(),
            DEFAULT_MAX_LENGTH,
        )
        .map_err(builtin_err)
    }

    /// From a diffusers `tokenizer/` folder: `tokenizer.json` if present, else `vocab.json` +
    /// `merges.txt`. `tokenizer_config.json` and `special_tokens_map.json` (both optional; the
    /// latter wins, as in transformers) give the bos/eos/unk/pad tokens (SD 1.x pads with
    /// `<|endoftext|>`, SD 2.x with `!`) and `model_max_length` (77 when absent or absurd; use
    /// [`ClipTokenizer::with_max_length`] to apply the text encoder's `max_position_embeddings`).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "tokenizer folder not found (or not a directory)",
            ));
        }
        let cfg = read_folder_config(dir)?;
        let tokenizer_json = dir.join("tokenizer.json");
        let vocab_json = dir.join("vocab.json");
        let merges_txt = dir.join("merges.txt");

        let (inner, source) = if tokenizer_json.is_file() {
            let bytes = read_bytes(&tokenizer_json)?;
            let tk = tokenizer_from_bytes(&tokenizer_json, &bytes)?;
            (tk, tokenizer_json)
        } else if vocab_json.is_file() {
            if !merges_txt.is_file() {
                return Err(Error::file(
                    &merges_txt,
                    "missing: a tokenizer folder without tokenizer.json needs vocab.json and merges.txt",
                ));
            }
            let vocab_text = read_text(&vocab_json)?;
            let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text).map_err(|e| {
                Error::file(
                    &vocab_json,
                    format!("malformed JSON (expected an object token -> id): {e}"),
                )
            })?;
            // Special tokens missing from the vocabulary are vocab.json's fault, not the merges'.
            for (role, tok) in [("start (bos)", &cfg.bos), ("end (eos)", &cfg.eos)] {
                if !vocab.contains_key(tok.as_str()) {
                    return Err(Error::file(
                        &vocab_json,
                        format!("the {role} token {tok:?} is not in the vocabulary"),
                    ));
                }
            }
            let merges_text = read_text(&merges_txt)?;
            let merges = parse_merges(&merges_text).map_err(|m| Error::file(&merges_txt, m))?;
            let tk = build_clip(vocab, merges, &cfg.unk, &cfg.bos, &cfg.eos).map_err(|e| {
                Error::file(
                    &merges_txt,
                    format!("cannot build the BPE model from vocab.json and merges.txt: {e}"),
                )
            })?;
            (tk, vocab_json)
        } else {
            return Err(Error::file(
                dir,
                "no tokenizer: neither tokenizer.json nor vocab.json (+ merges.txt) is present",
            ));
        };
        Self::finish(inner, &cfg.bos, &cfg.eos, &cfg.pad, cfg.max_length)
            .map_err(|m| Error::file(source, m))
    }

    /// The same tokenizer with another output length (e.g. the text encoder's
    /// `max_position_embeddings` when the folder's `model_max_length` was unset). At least 2.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid(format!(
                "tokenizer max_length must be at least 2 (bos + eos), got {max_length}"
            )));
        }
        self.max_length = max_length;
        self.configure()?;
        Ok(self)
    }

    /// Token ids padded / truncated to [`max_length`](Self::max_length), exactly as
    /// `tokenizer(text, padding="max_length", max_length=77, truncation=True)["input_ids"]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::input("prompt", format!("tokenization failed: {e}")))?;
        let ids = enc.get_ids();
        if ids.len() != self.max_length {
            return Err(Error::invalid(format!(
                "tokenizer produced {} ids instead of {}",
                ids.len(),
                self.max_length
            )));
        }
        Ok(ids.to_vec())
    }

    /// Token ids of several prompts (each as [`encode`](Self::encode)).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// The ids of `text` without bos/eos, truncation or padding.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .raw
            .encode(text, false)
            .map_err(|e| Error::input("prompt", format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Number of ids before padding, truncation and bos/eos (how many tokens the prompt needs).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self
            .raw
            .encode(text, false)
            .map_err(|e| Error::input("prompt", format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().len())
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    /// Vocabulary size including the special tokens (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Resolve the special tokens and install truncation / padding. Errors are messages for the
    /// caller to attach to the right file.
    fn finish(
        mut raw: Tokenizer,
        bos: &str,
        eos: &str,
        pad: &str,
        max_length: usize,
    ) -> std::result::Result<Self, String> {
        // Padding / truncation stored in a tokenizer.json would leak into `raw`.
        raw.with_padding(None);
        raw.with_truncation(None).map_err(|e| e.to_string())?;
        let id = |what: &str, tok: &str| {
            raw.token_to_id(tok)
                .ok_or_else(|| format!("unknown {what} token {tok:?}: it is not in the vocabulary"))
        };
        let bos_id = id("bos", bos)?;
        let eos_id = id("eos", eos)?;
        let pad_id = id("pad", pad)?;
        // transformers registers every special token of the config (pad included) as a special,
        // non-normalized added token, so it is matched verbatim in the prompt: with SD 2.x's pad
        // "!", "!!!" becomes three ids 0 instead of the BPE token "!!!". Do the same.
        let missing: Vec<AddedToken> = [bos, eos, pad]
            .into_iter()
            .filter(|t| {
                !raw.get_added_tokens_decoder()
                    .values()
                    .any(|a| a.content == *t)
            })
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        if !missing.is_empty() {
            raw.add_special_tokens(&missing);
        }
        let vocab_size = raw.get_vocab_size(true);
        let mut tk = Self {
            inner: raw.clone(),
            raw,
            max_length,
            pad_token: pad.to_string(),
            pad_id,
            bos_id,
            eos_id,
            vocab_size,
        };
        tk.configure().map_err(|e| e.to_string())?;
        Ok(tk)
    }

    fn configure(&mut self) -> Result<()> {
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: self.max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::invalid(format!("tokenizer truncation: {e}")))?;
        self.inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(self.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        }));
        Ok(())
    }
}

/// The GPT-2 / CLIP byte -> printable-char table (`bytes_to_unicode`), indexed by byte value,
/// plus the byte order in which CLIP's vocabulary lists them.
fn bytes_to_unicode() -> ([char; 256], Vec<u8>) {
    let mut order: Vec<u8> = (b'!'..=b'~')
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut table = ['\0'; 256];
    for &b in &order {
        table[b as usize] = char::from(b);
    }
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !order.contains(&b) {
            order.push(b);
            // 256 + n is always a valid scalar value (< 0x200).
            table[b as usize] = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
        }
    }
    (table, order)
}

/// CLIP's vocabulary: byte chars, byte chars + `</w>`, one token per merge, bos, eos.
fn builtin_vocab(merges: &[(String, String)]) -> HashMap<String, u32> {
    let (table, order) = bytes_to_unicode();
    let mut tokens: Vec<String> = Vec::with_capacity(512 + merges.len() + 2);
    tokens.extend(order.iter().map(|&b| table[b as usize].to_string()));
    tokens.extend(order.iter().map(|&b| format!("{}</w>", table[b as usize])));
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push(BOS_TOKEN.to_string());
    tokens.push(EOS_TOKEN.to_string());
    tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect()
}

/// Parse a `merges.txt`: optional `#version` header, then one `left right` pair per line.
fn parse_merges(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("#version") {
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(format!(
                    "line {}: expected a merge 'left right', got {line:?}",
                    i + 1
                ))
            }
        }
    }
    if merges.is_empty() {
        return Err("no merges found".to_string());
    }
    Ok(merges)
}

/// Build transformers' CLIP pipeline around a vocabulary and merges.
fn build_clip(
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    unk: &str,
    bos: &str,
    eos: &str,
) -> tokenizers::Result<Tokenizer> {
    let bos_id = *vocab
        .get(bos)
        .ok_or_else(|| format!("bos token {bos:?} is not in the vocabulary"))?;
    let eos_id = *vocab
        .get(eos)
        .ok_or_else(|| format!("eos token {eos:?} is not in the vocabulary"))?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .unk_token(unk.to_string())
        .end_of_word_suffix("</w>".to_string())
        .continuing_subword_prefix(String::new())
        .fuse_unk(false)
        .byte_fallback(false)
        .build()?;

    let normalizer = NormalizerSequence::new(vec![
        NFC.into(),
        Replace::new(ReplacePattern::Regex(r"\s+".to_string()), " ")?.into(),
        Lowercase.into(),
    ]);
    let pre_tokenizer = PreTokenizerSequence::new(vec![
        Split::new(
            SplitPattern::Regex(CLIP_SPLIT_PATTERN.to_string()),
            SplitDelimiterBehavior::Removed,
            true,
        )?
        .into(),
        ByteLevel::new(false, true, true).into(),
    ]);
    let post = RobertaProcessing::new((eos.to_string(), eos_id), (bos.to_string(), bos_id))
        .trim_offsets(false)
        .add_prefix_space(false);

    let mut tk = Tokenizer::new(bpe);
    tk.with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_post_processor(Some(post))
        .with_decoder(Some(ByteLevel::new(true, true, true)));
    let mut specials: Vec<AddedToken> = Vec::new();
    for t in [bos, eos, unk] {
        if !specials.iter().any(|a| a.content == t) {
            specials.push(AddedToken::from(t.to_string(), true));
        }
    }
    tk.add_special_tokens(&specials);
    Ok(tk)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| Error::file(path, format!("not valid UTF-8: {e}")))
}

fn read_json_object(path: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(Error::file(path, "malformed JSON: expected an object")),
        Err(e) => Err(Error::file(path, format!("malformed JSON: {e}"))),
    }
}

/// A special-token entry: `"tok"`, `{"content": "tok", ...}`, or `null` (unset).
fn token_entry(
    path: &Path,
    map: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<String>> {
    match map.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Object(o)) => match o.get("content") {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(Error::file(
                path,
                format!("\"{key}\": expected a string or an object with a string \"content\""),
            )),
        },
        Some(_) => Err(Error::file(
            path,
            format!("\"{key}\": expected a string or an object with a string \"content\""),
        )),
    }
}

fn read_folder_config(dir: &Path) -> Result<FolderConfig> {
    let cfg_path: PathBuf = dir.join("tokenizer_config.json");
    let map_path: PathBuf = dir.join("special_tokens_map.json");
    let cfg = read_json_object(&cfg_path)?;
    let map = read_json_object(&map_path)?;

    let lookup = |key: &str, default: &str| -> Result<String> {
        if let Some(m) = &map {
            if let Some(t) = token_entry(&map_path, m, key)? {
                return Ok(t);
            }
        }
        if let Some(c) = &cfg {
            if let Some(t) = token_entry(&cfg_path, c, key)? {
                return Ok(t);
            }
        }
        Ok(default.to_string())
    };
    let bos = lookup("bos_token", BOS_TOKEN)?;
    let eos = lookup("eos_token", EOS_TOKEN)?;
    let unk = lookup("unk_token", EOS_TOKEN)?;
    let pad = lookup("pad_token", EOS_TOKEN)?;

    let max_length = match cfg.as_ref().and_then(|c| c.get("model_max_length")) {
        None | Some(serde_json::Value::Null) => DEFAULT_MAX_LENGTH,
        Some(v) => {
            let x = v.as_f64().ok_or_else(|| {
                Error::file(
                    &cfg_path,
                    format!("\"model_max_length\": expected a number, got {v}"),
                )
            })?;
            if x >= ABSURD_MAX_LENGTH {
                DEFAULT_MAX_LENGTH
            } else if x < 2.0 || x.fract() != 0.0 {
                return Err(Error::file(
                    &cfg_path,
                    format!("\"model_max_length\": expected an integer >= 2, got {v}"),
                ));
            } else {
                x as usize
            }
        }
    };
    Ok(FolderConfig {
        bos,
        eos,
        unk,
        pad,
        max_length,
    })
}
