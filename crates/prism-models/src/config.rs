//! Reading diffusers / transformers `config.json` files: typed getters whose errors name the
//! file and key, and explicit rejection of values prism does not implement.

use crate::schedulers::parse_config_json;
use prism_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// A parsed config file and the label errors carry (its path, or `preset sd15/unet`).
pub struct Cfg {
    pub v: Value,
    pub file: String,
}

impl Cfg {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file = path.display().to_string();
        Ok(Self {
            v: parse_config_json(&text, &file)?,
            file,
        })
    }

    pub fn from_str(text: &str, label: &str) -> Result<Self> {
        Ok(Self {
            v: parse_config_json(text, label)?,
            file: label.to_string(),
        })
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::config(&self.file, msg)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.err(format!("{key} must be a non-negative integer, got {v}"))),
        }
    }

    pub fn usize_req(&self, key: &str) -> Result<usize> {
        if !self.has(key) {
            return Err(self.err(format!("missing required key {key}")));
        }
        self.usize_or(key, 0)
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("{key} must be a number, got {v}"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("{key} must be true or false, got {v}"))),
        }
    }

    pub fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(format!("{key} must be a string, got {v}"))),
        }
    }

    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing required key {key}")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
            .ok_or_else(|| self.err(format!("{key} must be a list of integers, got {v}")))
    }

    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing required key {key}")))?;
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| self.err(format!("{key} must be a list of strings, got {v}")))
    }

    /// An int or a per-block list of ints, expanded to `n` entries.
    pub fn per_block(&self, key: &str, n: usize, default: Option<usize>) -> Result<Vec<usize>> {
        match self.get(key) {
            None => default
                .map(|d| vec![d; n])
                .ok_or_else(|| self.err(format!("missing required key {key}"))),
            Some(v) if v.is_u64() => Ok(vec![v.as_u64().unwrap() as usize; n]),
            Some(_) => {
                let l = self.usize_list(key)?;
                if l.len() != n {
                    return Err(self.err(format!(
                        "{key} has {} entries but there are {n} blocks",
                        l.len()
                    )));
                }
                Ok(l)
            }
        }
    }

    /// The key must be absent, null, or one of `allowed` (compared as JSON).
    pub fn expect(&self, key: &str, allowed: &[Value]) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(v) if allowed.contains(v) => Ok(()),
            Some(v) => Err(self.err(format!(
                "unsupported {key} = {v} (prism supports {})",
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
