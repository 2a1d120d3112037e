//! Reading a user's video clip: a GIF file or a directory of numbered PNG frames.
//!
//! [`read_clip`] decodes either input into a [`Clip`] of 8-bit RGB frames; [`Clip::to_video`]
//! turns it into the `(1, 3, T, H, W)` float tensor in `[-1, 1]` that video models take.
//!
//! - GIF: frames are composited onto the logical screen the way browsers do it: each frame is
//!   drawn at its offset (clipped to the screen), transparent pixels keep what is below, and
//!   the frame's disposal method (keep, clear to transparent, restore previous) is applied
//!   before the next one. Pixels still transparent in the output become black.
//! - PNG directory: the regular files ending in `.png` (any case), ordered by the last run of
//!   digits in their names (`frame_2.png` before `frame_10.png`). Any PNG colour type and bit
//!   depth is accepted; alpha is composited onto black.
//!
//! Every size is checked against [`ClipLimits`] before anything that large is allocated, and
//! every error is one line that names the file at fault.

use std::cmp::Ordering;
use std::fs;
use std::io::{BufReader, Read, Seek};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use prism_core::{Error, Result, Tensor};

/// A decoded clip: `frames` RGB frames of height × width, 8-bit, interleaved (T, H, W, 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clip {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub rgb: Vec<u8>,
}

impl Clip {
    /// The clip as a (1, 3, T, H, W) float32 tensor in [-1, 1] (x / 127.5 − 1), channel-planar.
    pub fn to_video(&self) -> Result<Tensor> {
        let (t, h, w) = (self.frames, self.height, self.width);
        let plane = t
            .checked_mul(h)
            .and_then(|n| n.checked_mul(w))
            .ok_or_else(|| Error::invalid(format!("clip of {t} frames of {w}x{h} is too large")))?;
        let total = plane
            .checked_mul(3)
            .ok_or_else(|| Error::invalid(format!("clip of {t} frames of {w}x{h} is too large")))?;
        if self.rgb.len() != total {
            return Err(Error::shape(
                "clip to_video",
                format!(
                    "{t} frames of {w}x{h} RGB need {total} bytes, the clip holds {}",
                    self.rgb.len()
                ),
            ));
        }
        let mut data = vec![0f32; total];
        for (c, out) in data.chunks_exact_mut(plane.max(1)).enumerate().take(3) {
            for (o, px) in out.iter_mut().zip(self.rgb.chunks_exact(3)) {
                *o = f32::from(px[c]) / 127.5 - 1.0;
            }
        }
        Tensor::new(vec![1, 3, t, h, w], data)
    }
}

/// How large a clip [`read_clip`] accepts; checked before the frames are allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipLimits {
    /// Most frames a clip may have.
    pub max_frames: usize,
    /// Most pixels (width × height) one frame may have.
    pub max_pixels: usize,
}

impl Default for ClipLimits {
    fn default() -> Self {
        Self {
            max_frames: 4096,
            max_pixels: 4096 * 4096,
        }
    }
}

const INPUT_HINT: &str =
    "pass a .gif file or a directory of numbered PNG frames (000.png, 001.png, …)";

/// Read a clip from a GIF file or from a directory of PNG frames.
pub fn read_clip(path: &Path, limits: ClipLimits) -> Result<Clip> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::file(path, format!("does not exist; {INPUT_HINT}")));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.is_dir() {
        read_png_dir(path, limits)
    } else if meta.is_file() {
        read_gif(path, limits)
    } else {
        Err(Error::file(
            path,
            format!("is neither a regular file nor a directory; {INPUT_HINT}"),
        ))
    }
}

/// `w × h` as a pixel count, checked against the limit. `what` names the image in errors.
fn check_frame_size(
    path: &Path,
    what: &str,
    w: usize,
    h: usize,
    limits: &ClipLimits,
) -> Result<usize> {
    if w == 0 || h == 0 {
        return Err(Error::file(
            path,
            format!("{what} is {w}x{h}; a frame needs a nonzero width and height"),
        ));
    }
    match w.checked_mul(h) {
        Some(n) if n <= limits.max_pixels => Ok(n),
        _ => Err(Error::file(
            path,
            format!(
                "{what} is {w}x{h}, more than the limit of {} pixels per frame; \
                 downscale the clip",
                limits.max_pixels
            ),
        )),
    }
}

fn too_many_frames(path: &Path, found: &str, limits: &ClipLimits) -> Error {
    Error::file(
        path,
        format!(
            "has {found} frames, over the limit of {}; trim the clip",
            limits.max_frames
        ),
    )
}

/// Room for `frames` more RGB frames of `pixels` pixels, or an error instead of an abort.
fn reserve_rgb(path: &Path, rgb: &mut Vec<u8>, frames: usize, pixels: usize) -> Result<()> {
    let bytes = frames.checked_mul(pixels).and_then(|n| n.checked_mul(3));
    match bytes {
        // Amortized growth: GIF frames are added one at a time.
        Some(b) if rgb.try_reserve(b).is_ok() => Ok(()),
        _ => Err(Error::file(
            path,
            format!(
                "{frames} frames of {pixels} pixels do not fit in memory; use fewer or smaller frames"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// GIF

fn gif_error(path: &Path, e: gif::DecodingError) -> Error {
    match e {
        gif::DecodingError::Io(e) => Error::io(path, e),
        gif::DecodingError::MemoryLimit | gif::DecodingError::OutOfMemory => Error::file(
            path,
            "decoding this GIF needs more memory than allowed; the file may be corrupt",
        ),
        gif::DecodingError::UnexpectedEof => Error::file(
            path,
            "the GIF ends unexpectedly: it is truncated or holds no frames; re-export the clip",
        ),
        e => Error::file(path, format!("is not a valid GIF: {e}")),
    }
}

fn read_gif(path: &Path, limits: ClipLimits) -> Result<Clip> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = Vec::with_capacity(8);
    (&mut file)
        .take(8)
        .read_to_end(&mut magic)
        .map_err(|e| Error::io(path, e))?;
    if !(magic.starts_with(b"GIF87a") || magic.starts_with(b"GIF89a")) {
        let msg = if magic.starts_with(b"\x89PNG\r\n\x1a\n") {
            "is a single PNG image, not a clip; put the frames in a directory as 000.png, \
             001.png, … and pass the directory"
                .to_string()
        } else {
            format!("is not a GIF (it does not start with GIF87a/GIF89a); {INPUT_HINT}")
        };
        return Err(Error::file(path, msg));
    }
    file.rewind().map_err(|e| Error::io(path, e))?;

    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    // Frame buffers are allocated here, after their size is checked; the decoder's own limit
    // covers its metadata buffers.
    let meta_limit = (limits.max_pixels as u64).saturating_mul(4).max(1 << 20);
    opts.set_memory_limit(gif::MemoryLimit::Bytes(
        NonZeroU64::new(meta_limit).unwrap_or(NonZeroU64::MIN),
    ));
    let mut dec = opts
        .read_info(BufReader::new(file))
        .map_err(|e| gif_error(path, e))?;
    let (w, h) = (usize::from(dec.width()), usize::from(dec.height()));
    let pixels = check_frame_size(path, "the GIF screen", w, h, &limits)?;

    let too_big = || Error::file(path, "a frame does not fit in memory; use a smaller clip");
    let mut canvas = vec![0u8; pixels.checked_mul(4).ok_or_else(too_big)?];
    let mut saved: Vec<u8> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut rgb: Vec<u8> = Vec::new();
    let mut frames = 0usize;
    while let Some(info) = dec.next_frame_info().map_err(|e| gif_error(path, e))? {
        let (left, top) = (usize::from(info.left), usize::from(info.top));
        let (fw, fh) = (usize::from(info.width), usize::from(info.height));
        let dispose = info.dispose;
        if frames >= limits.max_frames {
            return Err(too_many_frames(
                path,
                &format!("more than {frames}"),
                &limits,
            ));
        }
        let what = format!("frame {frames}");
        let fpix = check_frame_size(path, &what, fw, fh, &limits)?;
        buf.clear();
        buf.resize(fpix.checked_mul(4).ok_or_else(too_big)?, 0);
        dec.read_into_buffer(&mut buf)
            .map_err(|e| gif_error(path, e))?;

        if dispose == gif::DisposalMethod::Previous {
            saved.clear();
            saved.extend_from_slice(&canvas);
        }
        // The frame's rectangle clipped to the screen.
        let x_end = (left.saturating_add(fw)).min(w);
        let y_end = (top.saturating_add(fh)).min(h);
        for y in top..y_end {
            for x in left..x_end {
                let s = ((y - top) * fw + (x - left)) * 4;
                let d = (y * w + x) * 4;
                if let (Some(src), Some(dst)) = (buf.get(s..s + 4), canvas.get_mut(d..d + 4)) {
                    if src[3] != 0 {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }

        reserve_rgb(path, &mut rgb, 1, pixels)?;
        for px in canvas.chunks_exact(4) {
            if px[3] == 0 {
                rgb.extend_from_slice(&[0, 0, 0]);
            } else {
                rgb.extend_from_slice(&px[..3]);
            }
        }
        frames += 1;

        match dispose {
            gif::DisposalMethod::Background => {
                for y in top..y_end {
                    let (a, b) = ((y * w + left) * 4, (y * w + x_end) * 4);
                    if let Some(row) = canvas.get_mut(a..b) {
                        row.fill(0);
                    }
                }
            }
            gif::DisposalMethod::Previous => {
                if saved.len() == canvas.len() {
                    std::mem::swap(&mut canvas, &mut saved);
                }
            }
            gif::DisposalMethod::Keep | gif::DisposalMethod::Any => {}
        }
    }
    if frames == 0 {
        return Err(Error::file(path, "the GIF holds no frames"));
    }
    Ok(Clip {
        frames,
        height: h,
        width: w,
        rgb,
    })
}

// ---------------------------------------------------------------------------------------------
// PNG directory

/// A frame file with its number: the last run of digits in the stem, leading zeros dropped.
struct Numbered {
    path: PathBuf,
    name: String,
    digits: String,
}

impl Numbered {
    /// Numeric order without parsing (so any number of digits works): shorter is smaller.
    fn cmp_number(&self, other: &Self) -> Ordering {
        self.digits
            .len()
            .cmp(&other.digits.len())
            .then_with(|| self.digits.cmp(&other.digits))
    }
    fn number(&self) -> &str {
        if self.digits.is_empty() {
            "0"
        } else {
            &self.digits
        }
    }
}

/// The last run of ASCII digits in `stem`, without leading zeros ("" for zero); `None` if none.
fn last_number(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    Some(stem[start..end].trim_start_matches('0').to_string())
}

fn is_png_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

fn list_pngs(dir: &Path, limits: &ClipLimits) -> Result<Vec<Numbered>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if is_png_name(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(Error::file(
            dir,
            "no .png frames in this directory; expected files like 000.png, 001.png, …",
        ));
    }
    if paths.len() > limits.max_frames {
        return Err(too_many_frames(dir, &paths.len().to_string(), limits));
    }
    let mut frames = Vec::with_capacity(paths.len());
    for path in paths {
        // Follows symlinks: a link to a regular file is a frame like any other.
        let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Err(Error::file(
                &path,
                "is not a regular file (a directory or special file); frames must be .png \
                 files, move it out of the frames directory",
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(digits) = last_number(&stem) else {
            return Err(Error::file(
                &path,
                "the file name holds no frame number; name frames like 000.png, 001.png, … \
                 or move this file out of the frames directory",
            ));
        };
        frames.push(Numbered { path, name, digits });
    }
    // Stable: equal numbers stay in name order, so duplicate errors are deterministic.
    frames.sort_by(Numbered::cmp_number);
    for pair in frames.windows(2) {
        if pair[0].cmp_number(&pair[1]) == Ordering::Equal {
            return Err(Error::file(
                dir,
                format!(
                    "{} and {} both have frame number {}; rename or remove one",
                    pair[0].name,
                    pair[1].name,
                    pair[0].number()
                ),
            ));
        }
    }
    Ok(frames)
}

fn png_error(path: &Path, e: png::DecodingError) -> Error {
    match e {
        png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::file(path, "is not a valid PNG: it ends early (truncated file?)")
        }
        png::DecodingError::IoError(e) => Error::io(path, e),
        e => Error::file(path, format!("is not a valid PNG: {e}")),
    }
}

/// Decode one PNG to 8-bit RGB (alpha composited onto black), checking its size first.
/// Returns `(width, height, rgb)`.
fn decode_png(path: &Path, limits: &ClipLimits) -> Result<(usize, usize, Vec<u8>)> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = png::Decoder::new(BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    dec.set_ignore_text_chunk(true);
    let header = dec.read_header_info().map_err(|e| png_error(path, e))?;
    let w = usize::try_from(header.width).unwrap_or(usize::MAX);
    let h = usize::try_from(header.height).unwrap_or(usize::MAX);
    let pixels = check_frame_size(path, "the image", w, h, limits)?;
    let mut reader = dec.read_info().map_err(|e| png_error(path, e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::file(path, format!("a {w}x{h} image does not fit in memory")))?;
    let mut buf = vec![0u8; size];
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| png_error(path, e))?;
    if out.bit_depth != png::BitDepth::Eight {
        return Err(Error::file(
            path,
            format!("decoded to {:?}-bit samples, expected 8-bit", out.bit_depth),
        ));
    }
    let channels = match out.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(Error::file(path, "palette image was not expanded to RGB"));
        }
    };
    let (ow, oh) = (out.width as usize, out.height as usize);
    if (ow, oh) != (w, h) || out.line_size < w * channels {
        return Err(Error::file(
            path,
            format!("decoded frame is {ow}x{oh}, the header says {w}x{h}"),
        ));
    }
    let premul = |v: u8, a: u8| ((u32::from(v) * u32::from(a) + 127) / 255) as u8;
    let mut rgb = Vec::with_capacity(pixels * 3);
    for row in buf.chunks(out.line_size).take(h) {
        let Some(row) = row.get(..w * channels) else {
            return Err(Error::file(path, "decoded image data is truncated"));
        };
        for px in row.chunks_exact(channels) {
            match *px {
                [g] => rgb.extend_from_slice(&[g, g, g]),
                [g, a] => {
                    let g = premul(g, a);
                    rgb.extend_from_slice(&[g, g, g]);
                }
                [r, g, b] => rgb.extend_from_slice(&[r, g, b]),
                [r, g, b, a] => rgb.extend_from_slice(&[premul(r, a), premul(g, a), premul(b, a)]),
                _ => {}
            }
        }
    }
    if rgb.len() != pixels * 3 {
        return Err(Error::file(path, "decoded image data is truncated"));
    }
    Ok((w, h, rgb))
}

fn read_png_dir(dir: &Path, limits: ClipLimits) -> Result<Clip> {
    let files = list_pngs(dir, &limits)?;
    let mut rgb: Vec<u8> = Vec::new();
    let mut size: Option<(usize, usize, &str)> = None;
    for f in &files {
        let (w, h, frame) = decode_png(&f.path, &limits)?;
        match size {
            None => {
                reserve_rgb(dir, &mut rgb, files.len(), w * h)?;
                size = Some((w, h, &f.name));
            }
            Some((w0, h0, first)) if (w0, h0) != (w, h) => {
                return Err(Error::file(
                    &f.path,
                    format!(
                        "is {w}x{h} but the first frame {first} is {w0}x{h0}; all frames must \
                         have the same size"
                    ),
                ));
            }
            Some(_) => {}
        }
        rgb.extend_from_slice(&frame);
    }
    let (width, height, _) = size.ok_or_else(|| {
        Error::file(
            dir,
            "no .png frames in this directory; expected files like 000.png, 001.png, …",
        )
    })?;
    Ok(Clip {
        frames: files.len(),
        height,
        width,
        rgb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory for one test; removed by `Drop`.
    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("prism-video-io-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TmpDir(d)
        }
        fn join(&self, p: &str) -> PathBuf {
            self.0.join(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const BLACK: [u8; 3] = [0, 0, 0];
    const RED: [u8; 3] = [255, 0, 0];
    const GREEN: [u8; 3] = [0, 255, 0];
    const BLUE: [u8; 3] = [0, 0, 255];
    const ODD: [u8; 3] = [10, 20, 30];
    /// Index 0 black, 1 red, 2 green, 3 blue, 4 (10, 20, 30).
    fn palette() -> Vec<u8> {
        [BLACK, RED, GREEN, BLUE, ODD].concat()
    }

    struct F {
        left: u16,
        top: u16,
        w: u16,
        h: u16,
        idx: Vec<u8>,
        transparent: Option<u8>,
        dispose: gif::DisposalMethod,
    }

    fn f(left: u16, top: u16, w: u16, h: u16, idx: &[u8], dispose: gif::DisposalMethod) -> F {
        F {
            left,
            top,
            w,
            h,
            idx: idx.to_vec(),
            transparent: Some(0),
            dispose,
        }
    }

    fn write_gif(path: &Path, w: u16, h: u16, frames: &[F]) {
        let mut out = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut out, w, h, &palette()).unwrap();
            for fr in frames {
                let mut frame =
                    gif::Frame::from_indexed_pixels(fr.w, fr.h, fr.idx.clone(), fr.transparent);
                frame.left = fr.left;
                frame.top = fr.top;
                frame.dispose = fr.dispose;
                enc.write_frame(&frame).unwrap();
            }
        }
        fs::write(path, out).unwrap();
    }

    /// The clip's frame `t` as a list of RGB pixels.
    fn frame(c: &Clip, t: usize) -> Vec<[u8; 3]> {
        let n = c.width * c.height * 3;
        c.rgb[t * n..(t + 1) * n]
            .chunks(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect()
    }

    fn err(path: &Path, limits: ClipLimits) -> String {
        let e = read_clip(path, limits).unwrap_err().to_string();
        assert!(!e.contains('\n'), "error is not one line: {e}");
        e
    }

    #[test]
    fn gif_offsets_transparency_and_clipping() {
        use gif::DisposalMethod::Keep;
        let d = TmpDir::new("gif-offsets");
        let p = d.join("clip.gif");
        #[rustfmt::skip]
        let frames = [
            // 4x3, all red but (0,0).
            F { transparent: None, ..f(0, 0, 4, 3, &[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], Keep) },
            // 2x2 at (1,1); index 0 is transparent and keeps the red below.
            f(1, 1, 2, 2, &[2, 3, 0, 2], Keep),
            // 2x2 at (3,2): only its top-left pixel is on the screen.
            f(3, 2, 2, 2, &[3, 2, 2, 2], Keep),
        ];
        write_gif(&p, 4, 3, &frames);
        let c = read_clip(&p, ClipLimits::default()).unwrap();
        assert_eq!((c.frames, c.height, c.width), (3, 3, 4));
        assert_eq!(c.rgb.len(), 3 * 3 * 4 * 3);
        let r = RED;
        assert_eq!(frame(&c, 0), [ODD, r, r, r, r, r, r, r, r, r, r, r]);
        assert_eq!(
            frame(&c, 1),
            [ODD, r, r, r, r, GREEN, BLUE, r, r, r, GREEN, r]
        );
        assert_eq!(
            frame(&c, 2),
            [ODD, r, r, r, r, GREEN, BLUE, r, r, r, GREEN, BLUE]
        );
    }

    #[test]
    fn gif_disposal_background_and_previous() {
        use gif::DisposalMethod::{Background, Keep, Previous};
        let d = TmpDir::new("gif-dispose");
        let p = d.join("clip.gif");
        let frames = [
            f(0, 0, 2, 2, &[1, 1, 1, 1], Keep),
            f(1, 1, 1, 1, &[2], Previous),   // drawn, then undone
            f(0, 0, 1, 1, &[3], Background), // drawn, then cleared to transparent
            f(1, 0, 1, 1, &[0], Keep),       // fully transparent: shows the canvas
        ];
        write_gif(&p, 2, 2, &frames);
        let c = read_clip(&p, ClipLimits::default()).unwrap();
        assert_eq!((c.frames, c.height, c.width), (4, 2, 2));
        assert_eq!(frame(&c, 0), [RED, RED, RED, RED]);
        assert_eq!(frame(&c, 1), [RED, RED, RED, GREEN]);
        assert_eq!(frame(&c, 2), [BLUE, RED, RED, RED]);
        assert_eq!(frame(&c, 3), [BLACK, RED, RED, RED]);

        // A transparent first frame is black.
        write_gif(&p, 2, 1, &[f(0, 0, 2, 1, &[0, 2], Keep)]);
        let c = read_clip(&p, ClipLimits::default()).unwrap();
        assert_eq!(frame(&c, 0), [BLACK, GREEN]);
    }

    #[test]
    fn gif_errors() {
        use gif::DisposalMethod::Keep;
        let d = TmpDir::new("gif-errors");
        let p = d.join("clip.gif");
        write_gif(&p, 2, 2, &[]);
        let e = err(&p, ClipLimits::default());
        assert!(e.contains("clip.gif") && e.contains("no frames"), "{e}");

        let frames: Vec<F> = (0..3).map(|_| f(0, 0, 2, 2, &[1; 4], Keep)).collect();
        write_gif(&p, 2, 2, &frames);
        let limits = ClipLimits {
            max_frames: 2,
            ..ClipLimits::default()
        };
        let e = err(&p, limits);
        assert!(e.contains("clip.gif") && e.contains("limit of 2"), "{e}");
        let limits = ClipLimits {
            max_pixels: 3,
            ..ClipLimits::default()
        };
        let e = err(&p, limits);
        assert!(e.contains("2x2") && e.contains("3 pixels"), "{e}");

        // Truncated data: an error, not a panic.
        let bytes = fs::read(&p).unwrap();
        for cut in [6, 13, bytes.len() / 2, bytes.len() - 2] {
            fs::write(&p, &bytes[..cut]).unwrap();
            let _ = err(&p, ClipLimits::default());
        }

        let txt = d.join("clip.mp4");
        fs::write(&txt, b"\0\0\0\x18ftypmp42").unwrap();
        let e = err(&txt, ClipLimits::default());
        assert!(
            e.contains("clip.mp4") && e.contains("not a GIF") && e.contains("directory"),
            "{e}"
        );
        fs::write(&txt, b"").unwrap();
        assert!(err(&txt, ClipLimits::default()).contains("not a GIF"));

        let e = err(&d.join("missing.gif"), ClipLimits::default());
        assert!(
            e.contains("missing.gif") && e.contains("does not exist"),
            "{e}"
        );
    }

    fn write_png(
        path: &Path,
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) {
        let file = fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
    }

    fn gray(path: &Path, w: u32, h: u32) {
        let data = vec![7u8; (w * h) as usize];
        write_png(
            path,
            w,
            h,
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &data,
        );
    }

    #[test]
    fn png_dir_numeric_order_and_colour_types() {
        use png::{BitDepth, ColorType};
        let d = TmpDir::new("png-dir");
        // Written out of order; 10 sorts after 2 numerically, before it by name.
        #[rustfmt::skip]
        write_png(&d.join("f_10.png"), 2, 1, ColorType::Rgb, BitDepth::Sixteen,
                  &[0x12, 0x34, 0xff, 0xff, 0x00, 0x01, 0x80, 0x00, 0x40, 0x00, 0x20, 0x00]);
        write_png(
            &d.join("f_1.png"),
            2,
            1,
            ColorType::Grayscale,
            BitDepth::Eight,
            &[0, 200],
        );
        #[rustfmt::skip]
        write_png(&d.join("F_2.PNG"), 2, 1, ColorType::Rgba, BitDepth::Eight,
                  &[200, 100, 50, 255, 200, 100, 50, 128]);
        fs::write(d.join("notes.txt"), b"ignored").unwrap();
        fs::create_dir(d.join("sub")).unwrap();

        let c = read_clip(&d.0, ClipLimits::default()).unwrap();
        assert_eq!((c.frames, c.height, c.width), (3, 1, 2));
        #[rustfmt::skip]
        assert_eq!(c.rgb, [
            0, 0, 0, 200, 200, 200,             // f_1: gray → RGB
            200, 100, 50, 100, 50, 25,          // F_2: alpha 128 composited on black
            0x12, 0xff, 0x00, 0x80, 0x40, 0x20, // f_10: 16-bit → high byte
        ]);
    }

    #[test]
    fn png_dir_errors() {
        let limits = ClipLimits::default();
        let d = TmpDir::new("png-errors");
        fs::write(d.join("readme.txt"), b"x").unwrap();
        let e = err(&d.0, limits);
        assert!(e.contains("no .png frames") && e.contains("000.png"), "{e}");

        gray(&d.join("a_1.png"), 2, 2);
        gray(&d.join("a_2.png"), 2, 2);
        gray(&d.join("a_3.png"), 3, 2);
        let e = err(&d.0, limits);
        assert!(
            e.contains("a_3.png")
                && e.contains("3x2")
                && e.contains("a_1.png")
                && e.contains("2x2"),
            "{e}"
        );

        let small = ClipLimits {
            max_frames: 2,
            ..limits
        };
        let e = err(&d.0, small);
        assert!(e.contains("3 frames") && e.contains("limit of 2"), "{e}");
        let small = ClipLimits {
            max_pixels: 3,
            ..limits
        };
        let e = err(&d.0, small);
        assert!(e.contains("a_1.png") && e.contains("3 pixels"), "{e}");

        fs::remove_file(d.join("a_3.png")).unwrap();
        gray(&d.join("b002.png"), 2, 2);
        let e = err(&d.0, limits);
        assert!(
            e.contains("a_2.png") && e.contains("b002.png") && e.contains("number 2"),
            "{e}"
        );

        fs::remove_file(d.join("b002.png")).unwrap();
        gray(&d.join("cover.png"), 2, 2);
        let e = err(&d.0, limits);
        assert!(
            e.contains("cover.png") && e.contains("no frame number"),
            "{e}"
        );

        fs::remove_file(d.join("cover.png")).unwrap();
        fs::create_dir(d.join("a_3.png")).unwrap();
        let e = err(&d.0, limits);
        assert!(
            e.contains("a_3.png") && e.contains("not a regular file"),
            "{e}"
        );

        fs::remove_dir(d.join("a_3.png")).unwrap();
        fs::write(d.join("a_3.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
        let e = err(&d.0, limits);
        assert!(
            e.contains("a_3.png") && e.contains("not a valid PNG"),
            "{e}"
        );

        // A single PNG passed as the input.
        let e = err(&d.join("a_1.png"), limits);
        assert!(e.contains("single PNG") && e.contains("directory"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn png_symlink_frames_are_read() {
        let d = TmpDir::new("png-link");
        let frames = d.join("frames");
        fs::create_dir(&frames).unwrap();
        gray(&d.join("src.png"), 1, 1);
        std::os::unix::fs::symlink(d.join("src.png"), frames.join("0.png")).unwrap();
        std::os::unix::fs::symlink(d.join("src.png"), frames.join("1.png")).unwrap();
        let c = read_clip(&frames, ClipLimits::default()).unwrap();
        assert_eq!((c.frames, c.height, c.width), (2, 1, 1));
        assert_eq!(c.rgb, [7; 6]);
    }

    #[test]
    fn to_video_layout_and_range() {
        // 2 frames of 1x2: pixel (t, x) = [r, g, b].
        let c = Clip {
            frames: 2,
            height: 1,
            width: 2,
            rgb: vec![0, 255, 51, 255, 0, 102, 10, 20, 30, 40, 50, 60],
        };
        let v = c.to_video().unwrap();
        assert_eq!(v.shape(), &[1, 3, 2, 1, 2]);
        let x = |b: u8| b as f32 / 127.5 - 1.0;
        let want: Vec<f32> = [0, 255, 10, 40, 255, 0, 20, 50, 51, 102, 30, 60]
            .into_iter()
            .map(x)
            .collect();
        assert_eq!(v.data(), &want[..]);
        assert_eq!(v.data()[0], -1.0);
        assert_eq!(v.data()[1], 1.0);

        let bad = Clip {
            rgb: vec![0; 5],
            ..c
        };
        assert!(bad.to_video().is_err());
    }
}
