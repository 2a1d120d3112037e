//! Writing images: PNG with text chunks, written to a temporary file and renamed into place so
//! a failed run never leaves a half-written output.

use prism_core::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Check that `path` may be written, before any work: its folder exists and takes new files;
/// the path is new, or (with `force`) a regular file or a symbolic link, which the output
/// replaces (a link is replaced itself; its target is left alone). Folders, devices, FIFOs
/// and sockets are never replaced.
pub fn check_output_path(path: &Path, force: bool) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::file(
            path,
            format!("output folder {} does not exist", parent.display()),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) => {
            let t = m.file_type();
            if t.is_dir() {
                return Err(Error::file(path, "output path is a folder"));
            }
            if t.is_symlink() {
                if !force {
                    return Err(Error::file(
                        path,
                        "is a symbolic link; pass --force to replace the link (its target is left alone)",
                    ));
                }
            } else if !t.is_file() {
                return Err(Error::file(
                    path,
                    "is not a regular file (a device, FIFO or socket); prism writes only regular files, even with --force",
                ));
            } else if !force {
                return Err(Error::file(
                    path,
                    "already exists; pass --force to overwrite it",
                ));
            }
        }
    }
    check_writable_folder(&parent, path)
}

/// Does `dir` take new files? (A probe file, created and removed: the output is written as a
/// temporary file there and renamed into place.)
fn check_writable_folder(dir: &Path, for_path: &Path) -> Result<()> {
    let probe = dir.join(format!(".prism-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::file(
            for_path,
            format!("cannot write in {}: {e}", dir.display()),
        )),
    }
}

/// Write `bytes` atomically: to `path.tmp-<pid>` first, then rename.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or("out".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An 8-bit RGB image, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Encode RGB8 as PNG with `tEXt` chunks (key, value).
pub fn encode_png(img: &RgbImage, text: &[(String, String)], w: &mut dyn Write) -> Result<()> {
    let err = |e: png::EncodingError| Error::invalid(format!("PNG encoding failed: {e}"));
    let mut enc = png::Encoder::new(w, img.width as u32, img.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        // tEXt is Latin-1; international text goes in iTXt.
        if v.chars().all(|c| (c as u32) < 256) {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(err)?;
        } else {
            enc.add_itxt_chunk(k.clone(), v.clone()).map_err(err)?;
        }
    }
    let mut wr = enc.write_header().map_err(err)?;
    wr.write_image_data(&img.data).map_err(err)?;
    wr.finish().map_err(err)
}

pub fn save_png(path: &Path, img: &RgbImage, text: &[(String, String)], force: bool) -> Result<()> {
    check_output_path(path, force)?;
    write_atomic(path, |w| encode_png(img, text, w))
}

/// A planar (3, H, W) sample → interleaved RGB8, each value through `to_u8(channel, value)`.
pub fn planar_to_rgb8(
    sample: &[f32],
    h: usize,
    w: usize,
    to_u8: impl Fn(usize, f32) -> u8,
) -> RgbImage {
    let plane = h * w;
    let mut data = vec![0u8; plane * 3];
    for c in 0..3 {
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            px[c] = to_u8(c, sample[c * plane + i]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

/// Decoder output (1, 3, H, W) in [-1, 1] → RGB8, as diffusers' postprocess does:
/// (x/2 + 0.5).clamp(0, 1), then ×255 rounded half to even (numpy's round).
pub fn to_rgb8(sample: &[f32], h: usize, w: usize) -> RgbImage {
    planar_to_rgb8(sample, h, w, |_, v| unit_to_u8(v / 2.0 + 0.5))
}

/// Decoder output (1, 3, H, W) in [0, 1] → RGB8, as aMUSEd's pipeline does: clip to [0, 1],
/// ×255 rounded half to even (its image processor does not renormalize).
pub fn to_rgb8_unit(sample: &[f32], h: usize, w: usize) -> RgbImage {
    planar_to_rgb8(sample, h, w, |_, v| unit_to_u8(v))
}

fn unit_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}
