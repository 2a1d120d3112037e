//! Safetensors weights through memory mapping: single files, sharded folders with their
//! `*.safetensors.index.json`, and variant files (`*.fp16.safetensors`). Tensors are bound to
//! a graph's parameter table by name; anything missing, unexpected or mis-shaped is one error
//! that lists every offender by its full name.

use prism_core::tensor::decode_to_f32;
use prism_core::{DType, Error, Graph, Result, Tensor};
use prism_runtime::{WeightDType, Weights};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Weight files of one component folder (e.g. `unet/`).
pub fn weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let stems = ["diffusion_pytorch_model", "model"];
    let suffix = variant.map_or(String::new(), |v| format!(".{v}"));
    for stem in stems {
        let single = dir.join(format!("{stem}{suffix}.safetensors"));
        if std::fs::symlink_metadata(&single).is_ok() {
            return match not_a_weight_file(&single) {
                None => Ok(vec![single]),
                Some(why) => Err(Error::file(&single, why)),
            };
        }
        let index = dir.join(format!("{stem}{suffix}.safetensors.index.json"));
        if index.is_file() {
            return shard_files(&index);
        }
    }
    let listing: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".safetensors") || n.ends_with(".bin"))
        .collect();
    let hint = match variant {
        Some(v) => format!("no {v} variant weights (*.{v}.safetensors)"),
        None if listing.iter().any(|n| n.contains(".fp16.")) => {
            "no default weights; this folder has fp16 variant files: add --variant fp16".into()
        }
        None => "no *.safetensors weights (diffusion_pytorch_model.safetensors or model.safetensors, or a sharded *.safetensors.index.json)".into(),
    };
    Err(Error::file(
        dir,
        format!("{hint}; found [{}]", listing.join(", ")),
    ))
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(index, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "no weight_map object"))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    // A shard is a file name in the index's folder: no paths out of the model folder.
    if let Some(bad) = files.iter().find(|f| {
        let p = Path::new(f.as_str());
        p.components().count() != 1
            || !matches!(p.components().next(), Some(std::path::Component::Normal(_)))
    }) {
        return Err(Error::file(
            index,
            format!(
                "weight_map names shard {bad:?}, which is not a file name in this folder; refused"
            ),
        ));
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    for p in &paths {
        if let Some(why) = not_a_weight_file(p) {
            return Err(Error::file(
                index,
                format!("shard {} listed in weight_map {why}", p.display()),
            ));
        }
    }
    Ok(paths)
}

/// Why `p` cannot be read as a weight file (None: a regular file, or a link to one).
fn not_a_weight_file(p: &Path) -> Option<String> {
    let link = match std::fs::symlink_metadata(p) {
        Err(_) => return Some("does not exist".into()),
        Ok(m) => m.file_type().is_symlink(),
    };
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("is a folder, not a file".into()),
        Ok(_) => Some("is not a regular file (a FIFO, socket or device)".into()),
        Err(e) if link && e.raw_os_error() == Some(40) => Some("is a symbolic link loop".into()),
        Err(_) if link => Some("is a symbolic link to nothing".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}

/// One tensor as stored on disk.
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    file: usize,
    start: usize,
    end: usize,
}

/// Memory-mapped safetensors files and the tensors they hold.
pub struct TensorFiles {
    paths: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    pub tensors: BTreeMap<String, RawTensor>,
}

fn dtype_of(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::U8 => DType::U8,
        _ => return None,
    })
}

impl TensorFiles {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::new();
        let mut tensors = BTreeMap::new();
        for (fi, path) in paths.iter().enumerate() {
            let f = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the file is mapped read-only; prism never writes it, and a concurrent
            // truncation by another process is outside what a reader can defend against.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
            let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| {
                Error::file(
                    path,
                    format!("not a valid safetensors file ({e}); is it truncated or corrupt?"),
                )
            })?;
            let base = map.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let dtype = dtype_of(view.dtype()).ok_or_else(|| {
                    Error::file(
                        path,
                        format!("tensor {name} has unsupported dtype {:?}", view.dtype()),
                    )
                })?;
                let start = view.data().as_ptr() as usize - base;
                let raw = RawTensor {
                    shape: view.shape().to_vec(),
                    dtype,
                    file: fi,
                    start,
                    end: start + view.data().len(),
                };
                if tensors.insert(name.clone(), raw).is_some() {
                    return Err(Error::file(
                        path,
                        format!("tensor {name} appears in more than one shard"),
                    ));
                }
            }
            maps.push(map);
        }
        Ok(Self {
            paths: paths.to_vec(),
            maps,
            tensors,
        })
    }

    /// A tensor converted to f32.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let r = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::invalid(format!("no tensor named {name}")))?;
        let bytes = &self.maps[r.file][r.start..r.end];
        let data = decode_to_f32(bytes, r.dtype)
            .map_err(|e| Error::file(&self.paths[r.file], format!("{name}: {e}")))?;
        Tensor::new(r.shape.clone(), data)
    }

    /// Tensor `name` as stored: integer dtypes as i64 ids, float dtypes as f32.
    pub fn get_as_stored(&self, name: &str) -> Result<Tensor> {
        let r = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::invalid(format!("no tensor named {name}")))?;
        let bytes = &self.maps[r.file][r.start..r.end];
        Tensor::from_le_bytes(r.shape.clone(), bytes, r.dtype)
            .map_err(|e| Error::file(&self.paths[r.file], format!("{name}: {e}")))
    }

    pub fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn list(items: &[String], limit: usize) -> String {
    let mut s = items
        .iter()
        .take(limit)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > limit {
        s += &format!(" and {} more", items.len() - limit);
    }
    s
}

/// How checkpoint keys relate to graph parameter names.
#[derive(Clone, Debug, Default)]
pub struct KeyRules {
    /// A prefix some checkpoints put before every key (`text_model.`); stripped if present.
    pub optional_prefix: Option<&'static str>,
    /// Keys that may be present and are not parameters (buffers such as `position_ids`, or
    /// layers a clip-skip graph does not run).
    pub ignore: Vec<String>,
    /// A stored tensor may differ from its parameter by axes of size 1 (the same data in the
    /// same order): a 1×1 convolution's weight bound to a linear layer, a Conv2d's or a
    /// Conv1d's to a one-frame or one-pixel Conv3d.
    pub unit_axes: bool,
}

/// The shape without its size-1 axes.
fn squeezed(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

/// Bind every parameter of `graph` to a tensor of `files`, converted to f32.
pub fn bind(
    graph: &Graph,
    files: &TensorFiles,
    rules: &KeyRules,
    dtype: WeightDType,
    layout: &[prism_runtime::WeightLayout],
) -> Result<Weights> {
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    for key in files.tensors.keys() {
        let k = match rules.optional_prefix {
            Some(p) => key.strip_prefix(p).unwrap_or(key),
            None => key,
        };
        by_name.insert(k, key.as_str());
    }
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for p in &graph.params {
        match by_name.get(p.name.as_str()) {
            None => missing.push(p.name.clone()),
            Some(key) => {
                let shape = &files.tensors[*key].shape;
                let same =
                    *shape == p.shape || (rules.unit_axes && squeezed(shape) == squeezed(&p.shape));
                if !same {
                    misshaped.push(format!("{key} is {shape:?}, expected {:?}", p.shape));
                }
            }
        }
    }
    let known: std::collections::HashSet<&str> =
        graph.params.iter().map(|p| p.name.as_str()).collect();
    let unexpected: Vec<String> = by_name
        .iter()
        .filter(|(k, _)| {
            !known.contains(**k)
                && !rules
                    .ignore
                    .iter()
                    .any(|i| k.starts_with(i.as_str()) || k.ends_with(i.as_str()))
        })
        .map(|(_, full)| full.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing tensors: {}",
            missing.len(),
            list(&missing, 12)
        ));
    }
    if !misshaped.is_empty() {
        problems.push(format!(
            "{} tensors of the wrong shape: {}",
            misshaped.len(),
            list(&misshaped, 12)
        ));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "{} unexpected tensors: {}",
            unexpected.len(),
            list(&unexpected, 12)
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Weights {
            component: format!("{} ({})", graph.name, files.describe()),
            msg: problems.join("; "),
        });
    }
    Weights::from_fn_par_laid(graph, dtype, layout, files.describe(), |p| {
        let key = by_name[p.name.as_str()];
        let mut t = files.get(key)?;
        if t.shape() != p.shape.as_slice() {
            t = t.reshape(&p.shape)?;
        }
        // NaN or Inf in a weight would make a black image or noise, not an error: refuse it.
        if let Some((i, v)) = t.first_non_finite() {
            return Err(Error::Weights {
                component: files.describe(),
                msg: format!("tensor {key} holds {v} at element {i}: the weights are corrupt"),
            });
        }
        Ok(t)
    })
}
