//! Tensors in and out of safetensors files (for `prism forward`, `--latents` and fixtures).

use crate::image::{check_output_path, write_atomic};
use crate::loader::TensorFiles;
use prism_core::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// Every tensor of a safetensors file, converted to f32 (any float or integer dtype).
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(read_tensors_as_stored(path)?
        .into_iter()
        .map(|(k, t)| (k, t.into_f32()))
        .collect())
}

/// Every tensor of a safetensors file: float dtypes as f32, integer dtypes as i64 ids.
pub fn read_tensors_as_stored(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::file(path, "no such file"));
    }
    let files = TensorFiles::open(&[path.to_path_buf()])?;
    files
        .tensors
        .keys()
        .map(|k| Ok((k.clone(), files.get_as_stored(k)?)))
        .collect()
}

/// The one f32 tensor named `name` in a safetensors file (integers converted).
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    let mut all = read_tensors(path)?;
    all.remove(name).ok_or_else(|| {
        Error::file(
            path,
            format!(
                "no tensor named {name} (found: {})",
                all.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// Write tensors (f32, or ids as i64) to a safetensors file (atomically; refuses to overwrite unless `force`).
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)], force: bool) -> Result<()> {
    check_output_path(path, force)?;
    let bytes: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| match t.ids() {
            Some(ids) => (
                n.clone(),
                t.shape().to_vec(),
                safetensors::Dtype::I64,
                ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            None => (
                n.clone(),
                t.shape().to_vec(),
                safetensors::Dtype::F32,
                t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, dt, b)| {
            safetensors::tensor::TensorView::new(*dt, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::invalid(format!("safetensors serialization failed: {e}")))?;
    write_atomic(path, |w| w.write_all(&data).map_err(|e| Error::io(path, e)))
}
