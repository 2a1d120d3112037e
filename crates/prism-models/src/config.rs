//! Reading diffusers / transformers `config.json` files: typed getters whose errors name the
//! file and key, and explicit rejection of values prism does not implement.

use crate::schedulers::parse_config_json;
use prism_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Most blocks a UNet or VAE may have (the downscale factor is `2^(blocks - 1)`).
pub const MAX_BLOCKS: usize = 16;
/// Largest channel / hidden / embedding width accepted from a config.
pub const MAX_CHANNELS: usize = 1 << 20;
/// Most layers per block (ResNets, transformer blocks) or text encoder layers.
pub const MAX_LAYERS: usize = 256;
/// Largest `sample_size` (latent pixels per side) accepted from a config.
pub const MAX_SAMPLE_SIZE: usize = 1 << 16;
/// Largest vocabulary / position table accepted from a config.
pub const MAX_TABLE: usize = 1 << 24;

/// A JSON value for a one-line error message: compact, at most ~80 characters.
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 80 {
        s
    } else {
        format!("{}…", s.chars().take(77).collect::<String>())
    }
}

/// A parsed config file and the label errors carry (its path, or `preset sd15/unet`).
pub struct Cfg {
    pub v: Value,
    pub file: String,
}

impl Cfg {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file = path.display().to_string();
        Self::from_value(parse_config_json(&text, &file)?, &file)
    }

    pub fn from_str(text: &str, label: &str) -> Result<Self> {
        Self::from_value(parse_config_json(text, label)?, label)
    }

    fn from_value(v: Value, file: &str) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::config(
                file,
                format!("must be a JSON object, got {}", show(&v)),
            ));
        }
        Ok(Self {
            v,
            file: file.to_string(),
        })
    }

    /// A nested config object (transformers' `text_config`, `vq_config`, ...), its errors
    /// labelled `file:key`.
    pub fn sub(&self, key: &str) -> Result<Cfg> {
        match self.get(key) {
            Some(v) if v.is_object() => Ok(Cfg {
                v: v.clone(),
                file: format!("{}:{key}", self.file),
            }),
            Some(v) => Err(self.err(format!("`{key}` must be an object, got {}", show(v)))),
            None => Err(self.err(format!("no `{key}`"))),
        }
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::config(&self.file, msg)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    /// `key`'s value as the file spells it (`x`, the value read, when absent).
    fn shown(&self, key: &str, x: f64) -> String {
        self.get(key).map(show).unwrap_or_else(|| x.to_string())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(format!(
                    "`{key}` must be a non-negative integer, got {}",
                    show(v)
                ))
            }),
        }
    }

    pub fn usize_req(&self, key: &str) -> Result<usize> {
        if !self.has(key) {
            return Err(self.err(format!("missing required key `{key}`")));
        }
        self.usize_or(key, 0)
    }

    /// `usize_or`, then `lo <= value <= hi`.
    pub fn usize_in(&self, key: &str, default: usize, lo: usize, hi: usize) -> Result<usize> {
        let v = self.usize_or(key, default)?;
        self.check_range(key, v, lo, hi)?;
        Ok(v)
    }

    /// Error unless `lo <= v <= hi`, naming `key` (which may carry an index: "`key`[2]").
    pub fn check_range(&self, key: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
        let key = quote_key(key);
        if v < lo {
            return Err(self.err(format!("{key} = {v}: must be at least {lo}")));
        }
        if v > hi {
            return Err(self.err(format!("{key} = {v}: must be at most {hi}")));
        }
        Ok(())
    }

    /// Every entry of the list `key` within `lo..=hi`.
    pub fn check_entries(&self, key: &str, l: &[usize], lo: usize, hi: usize) -> Result<()> {
        for (i, &v) in l.iter().enumerate() {
            self.check_range(&format!("`{key}`[{i}]"), v, lo, hi)?;
        }
        Ok(())
    }

    /// Error unless `divisor` (the value of `dkey`) divides `v` (the value of `vkey`); both
    /// keys may carry an index. A zero divisor is reported as such, never divided by.
    pub fn check_divides(&self, dkey: &str, divisor: usize, vkey: &str, v: usize) -> Result<()> {
        let (dk, vk) = (quote_key(dkey), quote_key(vkey));
        if divisor == 0 {
            return Err(self.err(format!("{dk} = 0: must be at least 1")));
        }
        if v % divisor != 0 {
            return Err(self.err(format!("{dk} = {divisor} does not divide {vk} = {v}")));
        }
        Ok(())
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {}", show(v)))),
        }
    }

    /// A number that is finite as an f32 and at least `min`.
    pub fn f32_at_least(&self, key: &str, default: f64, min: f32) -> Result<f32> {
        let x = self.f64_or(key, default)?;
        let v = x as f32;
        if !v.is_finite() || v < min {
            return Err(self.err(format!(
                "`{key}` = {}: must be a finite number of at least {min}",
                self.shown(key, x)
            )));
        }
        Ok(v)
    }

    /// A number that is finite as an f32 and greater than zero.
    pub fn f32_positive(&self, key: &str, default: f64) -> Result<f32> {
        let x = self.f64_or(key, default)?;
        let v = x as f32;
        if !v.is_finite() || v <= 0.0 {
            return Err(self.err(format!(
                "`{key}` = {}: must be a positive finite number",
                self.shown(key, x)
            )));
        }
        Ok(v)
    }

    /// A number that is finite as an f32.
    pub fn f32_finite(&self, key: &str, default: f64) -> Result<f32> {
        let x = self.f64_or(key, default)?;
        let v = x as f32;
        if !v.is_finite() {
            return Err(self.err(format!(
                "`{key}` = {}: must be a finite number",
                self.shown(key, x)
            )));
        }
        Ok(v)
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {}", show(v)))),
        }
    }

    pub fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(format!("`{key}` must be a string, got {}", show(v)))),
        }
    }

    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing required key `{key}`")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| {
                self.err(format!(
                    "`{key}` must be a list of non-negative integers, got {}",
                    show(v)
                ))
            })
    }

    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing required key `{key}`")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| {
                self.err(format!(
                    "`{key}` must be a list of strings, got {}",
                    show(v)
                ))
            })
    }

    /// The per-block list `key` (one entry per down block), checked for emptiness and for
    /// more than [`MAX_BLOCKS`] entries, each entry in `1..=MAX_CHANNELS`.
    pub fn block_channels(&self, key: &str) -> Result<Vec<usize>> {
        let l = self.usize_list(key)?;
        if l.is_empty() {
            return Err(self.err(format!(
                "`{key}` is empty; expected one entry per down block"
            )));
        }
        if l.len() > MAX_BLOCKS {
            return Err(self.err(format!(
                "`{key}` has {} entries: at most {MAX_BLOCKS} blocks are supported",
                l.len()
            )));
        }
        self.check_entries(key, &l, 1, MAX_CHANNELS)?;
        Ok(l)
    }

    /// The string list `key`, which must have one entry per block (`n`, the length of
    /// `per`, a key named in the message).
    pub fn block_types(&self, key: &str, n: usize, per: &str) -> Result<Vec<String>> {
        let l = self.str_list(key)?;
        if l.len() != n {
            return Err(self.err(format!(
                "`{key}` has {} but `{per}` has {n}",
                entries(l.len())
            )));
        }
        Ok(l)
    }

    /// An int or a per-block list of ints, expanded to `n` entries.
    pub fn per_block(&self, key: &str, n: usize, default: Option<usize>) -> Result<Vec<usize>> {
        match self.get(key) {
            None => default
                .map(|d| vec![d; n])
                .ok_or_else(|| self.err(format!("missing required key `{key}`"))),
            Some(v) if v.is_u64() => Ok(vec![v.as_u64().unwrap_or_default() as usize; n]),
            Some(v) if v.is_array() => {
                let l = self.usize_list(key)?;
                if l.len() != n {
                    return Err(self.err(format!(
                        "`{key}` has {}, expected {n} (one per block) or one number",
                        entries(l.len())
                    )));
                }
                Ok(l)
            }
            Some(v) => Err(self.err(format!(
                "`{key}` must be a non-negative integer or a list of {n} of them, got {}",
                show(v)
            ))),
        }
    }

    /// Every key but the `_`-prefixed metadata (`_class_name`, `_diffusers_version`, ...) must
    /// be one of `known` (the fields of `class` prism reads or checks): a field prism does not
    /// know is an error naming it, not a setting silently ignored.
    pub fn only_keys(&self, class: &str, known: &[&str]) -> Result<()> {
        let obj = self.v.as_object().expect("a Cfg is an object");
        match obj
            .keys()
            .find(|k| !k.starts_with('_') && !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some(k) => Err(self.err(format!(
                "unknown {class} field `{k}` (prism reads {})",
                known.join(", ")
            ))),
        }
    }

    /// The key must be absent, null, or one of `allowed` (compared as JSON).
    pub fn expect(&self, key: &str, allowed: &[Value]) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(v) if allowed.contains(v) => Ok(()),
            Some(v) => Err(self.err(format!(
                "unsupported `{key}` = {} (prism supports {})",
                show(v),
                if allowed.is_empty() {
                    "only null / absent".to_string()
                } else {
                    allowed
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))),
        }
    }
}

/// "1 entry", "3 entries".
fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".to_string()
    } else {
        format!("{n} entries")
    }
}

/// "`key`" for a bare key; a key that already carries backticks (an indexed "`key`[2]") as is.
fn quote_key(key: &str) -> String {
    if key.starts_with('`') {
        key.to_string()
    } else {
        format!("`{key}`")
    }
}
