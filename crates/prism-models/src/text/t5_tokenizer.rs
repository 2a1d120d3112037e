//! T5's tokenizer: a SentencePiece unigram model, from a folder's `tokenizer.json` or, where a
//! folder has only `spiece.model` (older T5 / PixArt checkpoints), from that protobuf, built
//! the way transformers 5's `T5Tokenizer` builds it: the model's pieces and scores as a
//! Unigram (unk id 2), its precompiled normalization charsmap, whitespace split then Metaspace
//! ("▁", prepended always), `</s>` appended, and the 100 sentinel tokens `<extra_id_N>` after the
//! vocabulary.

use super::tokenizer::tokenizer_from_bytes;
use prism_core::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The sentinel tokens T5 appends (`extra_ids`).
pub const EXTRA_IDS: usize = 100;

pub struct T5Tokenizer {
    tok: Tokenizer,
    file: PathBuf,
    pad_id: u32,
}

/// One prompt's ids and attention mask, padded to a fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    /// Tokens the prompt had (with `</s>`) before truncation.
    pub untruncated_len: usize,
}

impl T5Tokenizer {
    /// `tokenizer.json` if the folder has one, else `spiece.model`.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let spm = dir.join("spiece.model");
        let (tok, file) = if json.is_file() {
            let bytes = std::fs::read(&json).map_err(|e| Error::io(&json, e))?;
            (tokenizer_from_bytes(&json, &bytes)?, json)
        } else if spm.is_file() {
            let bytes = std::fs::read(&spm).map_err(|e| Error::io(&spm, e))?;
            let spec = tokenizer_json_from_spm(&spm, &bytes)?;
            let text = serde_json::to_vec(&spec).expect("a JSON value serializes");
            (tokenizer_from_bytes(&spm, &text)?, spm)
        } else {
            return Err(Error::file(
                dir,
                "neither tokenizer.json nor spiece.model: is this a T5 tokenizer folder?",
            ));
        };
        let pad_id = tok
            .token_to_id("<pad>")
            .ok_or_else(|| Error::file(&file, "no <pad> token: is this a T5 tokenizer?"))?;
        Ok(Self { tok, file, pad_id })
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// The ids of `text` with `</s>` (as `tokenizer(text, add_special_tokens=True)`), cut to
    /// `max_len` (the last kept position becomes `</s>`, as transformers truncates) and padded
    /// with `<pad>`; the mask is 1 on tokens, 0 on padding.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Encoded> {
        // A malformed precompiled charsmap makes the normalizer index out of bounds (found by
        // `fuzz/` target `spiece`): the panic is caught and reported as this file's error.
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tok.encode(text, true)));
        std::panic::set_hook(prev);
        let enc = match r {
            Ok(r) => {
                r.map_err(|e| Error::file(&self.file, format!("tokenizing {text:?} failed: {e}")))?
            }
            Err(_) => {
                return Err(Error::file(
                    &self.file,
                    "its normalization table is corrupt (the tokenizers library failed on it)",
                ))
            }
        };
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        let untruncated_len = ids.len();
        if ids.len() > max_len {
            // transformers truncates the text, then appends </s>.
            let eos = *ids.last().expect("at least </s>");
            ids.truncate(max_len.saturating_sub(1));
            if max_len > 0 {
                ids.push(eos);
            }
        }
        let mut mask = vec![1i64; ids.len()];
        ids.resize(max_len, i64::from(self.pad_id));
        mask.resize(max_len, 0);
        Ok(Encoded {
            ids,
            mask,
            untruncated_len,
        })
    }
}

/// A protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, in order (fixed64 fields skipped).
fn fields<'a>(mut b: &'a [u8], file: &Path) -> Result<Vec<(u64, Field<'a>)>> {
    let bad = |what: &str| Error::file(file, format!("not a SentencePiece model ({what})"));
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b).ok_or_else(|| bad("truncated field key"))?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(&mut b).ok_or_else(|| bad("truncated varint"))?),
            1 => {
                if b.len() < 8 {
                    return Err(bad("truncated fixed64"));
                }
                b = &b[8..];
                continue;
            }
            2 => {
                let n = varint(&mut b).ok_or_else(|| bad("truncated length"))? as usize;
                if n > b.len() {
                    return Err(bad("a field runs past the end"));
                }
                let (v, rest) = b.split_at(n);
                b = rest;
                Field::Bytes(v)
            }
            5 => {
                if b.len() < 4 {
                    return Err(bad("truncated fixed32"));
                }
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                b = &b[4..];
                Field::Fixed32(v)
            }
            w => return Err(bad(&format!("wire type {w}"))),
        };
        out.push((num, f));
    }
    Ok(out)
}

/// `spiece.model` (a `sentencepiece.ModelProto`) → the tokenizer JSON transformers' `T5Tokenizer`
/// builds from it.
pub fn tokenizer_json_from_spm(file: &Path, bytes: &[u8]) -> Result<Value> {
    let mut pieces: Vec<(String, f32)> = Vec::new();
    let mut charsmap: &[u8] = &[];
    let mut model_type = 1u64; // UNIGRAM
    for (num, f) in fields(bytes, file)? {
        match (num, f) {
            // ModelProto.pieces: SentencePiece { piece = 1, score = 2, type = 3 }
            (1, Field::Bytes(p)) => {
                let (mut piece, mut score) = (None, 0f32);
                for (n, g) in fields(p, file)? {
                    match (n, g) {
                        (1, Field::Bytes(s)) => {
                            piece = Some(String::from_utf8(s.to_vec()).map_err(|_| {
                                Error::file(file, "a piece is not UTF-8: not a SentencePiece model")
                            })?)
                        }
                        (2, Field::Fixed32(v)) => score = f32::from_bits(v),
                        _ => {}
                    }
                }
                let piece = piece.ok_or_else(|| {
                    Error::file(file, "a piece has no text: not a SentencePiece model")
                })?;
                pieces.push((piece, score));
            }
            // ModelProto.trainer_spec.model_type = 3
            (2, Field::Bytes(t)) => {
                for (n, g) in fields(t, file)? {
                    if let (3, Field::Varint(v)) = (n, g) {
                        model_type = v;
                    }
                }
            }
            // ModelProto.normalizer_spec.precompiled_charsmap = 2
            (3, Field::Bytes(ns)) => {
                for (n, g) in fields(ns, file)? {
                    if let (2, Field::Bytes(c)) = (n, g) {
                        charsmap = c;
                    }
                }
            }
            _ => {}
        }
    }
    if model_type != 1 {
        return Err(Error::file(
            file,
            format!("SentencePiece model type {model_type} is not a unigram model (T5's is)"),
        ));
    }
    if pieces.len() < 3
        || pieces[..3]
            .iter()
            .map(|p| p.0.as_str())
            .ne(["<pad>", "</s>", "<unk>"])
    {
        return Err(Error::file(
            file,
            "the first pieces are not <pad>, </s>, <unk>: not a T5 SentencePiece model",
        ));
    }
    let n = pieces.len();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let mut added = vec![special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")];
    // Sentinels after the pieces, <extra_id_0> last (the original T5 vocabulary's order).
    for i in 0..EXTRA_IDS {
        added.push(special(n + EXTRA_IDS - 1 - i, &format!("<extra_id_{i}>")));
    }
    added.sort_by_key(|t| t["id"].as_u64());
    let mut vocab: Vec<Value> = pieces.iter().map(|(p, s)| json!([p, s])).collect();
    for i in (0..EXTRA_IDS).rev() {
        vocab.push(json!([format!("<extra_id_{i}>"), 0.0]));
    }
    let normalizer = if charsmap.is_empty() {
        Value::Null
    } else {
        json!({"type": "Precompiled", "precompiled_charsmap": base64(charsmap)})
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
        },
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
    }))
}

/// Standard base64 with padding (the tokenizers JSON stores the charsmap so).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(raw.as_bytes()), enc);
        }
    }
}
