//! Charts for the HTML report, drawn with plotters into self-contained SVG strings.
//!
//! Each chart is a pure function from plain data to an SVG document of [`SIZE`] pixels: white
//! background, a title, labelled axes, a legend where there is more than one series, the fixed
//! colour-blind-friendly [`PALETTE`] and generic `sans-serif` text. None of them panics: empty
//! data draws a chart that says "no data", non-finite values are skipped (and so are values ≤ 0
//! on a log axis), and an internal drawing error comes back as an SVG that shows the error text.
//!
//! Axes are plotted in a transformed space (log10 of the value on a log axis) with tick
//! positions chosen here, so linear and log axes share one code path.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::{CoordTranslate, Shift};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

// ---------------------------------------------------------------------------------------------
// Chart data

/// One bar per label, split into stacked segments (shares that sum to ≤ 1, shown as %).
///
/// A segment name keeps one colour across all bars; the legend lists each name once.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackedBars {
    pub title: String,
    pub y_label: String,
    /// (bar label, [(segment name, share)]).
    pub bars: Vec<(String, Vec<(String, f64)>)>,
}

/// Bars grouped by family: each group a cluster of bars (a value per model), coloured by group,
/// with an optional horizontal reference line such as ("no speedup", 1.0).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupedBars {
    pub title: String,
    pub y_label: String,
    /// (group name, [(bar label, value)]).
    pub groups: Vec<(String, Vec<(String, f64)>)>,
    /// (label, value) of a dashed horizontal line.
    pub reference: Option<(String, f64)>,
}

/// Lines with point markers: several series of (x, y) points, optionally on log axes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    /// (series name, [(x, y)]).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// A histogram already binned: labelled bins with counts or weights.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Histogram {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// (bin label, count or weight).
    pub bins: Vec<(String, f64)>,
}

/// A quantity through a sequence (memory through the forward pass): x = node index, one
/// shaded line per series, and dashed vertical markers with short labels at stage or block
/// boundaries.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Profile {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// (series name, [(x, y)]).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// (x, label) of vertical markers.
    pub marks: Vec<(f64, String)>,
}

/// Roofline, log-log: x = arithmetic intensity (FLOP/byte), y = attained FLOP/s.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Roofline {
    pub title: String,
    /// (hardware name, peak FLOP/s, bandwidth bytes/s), drawn as min(peak, bandwidth · I).
    pub roofs: Vec<(String, f64, f64)>,
    /// (label, intensity FLOP/byte, attained FLOP/s).
    pub points: Vec<(String, f64, f64)>,
}

// ---------------------------------------------------------------------------------------------
// Look

/// Width and height of every chart, in px.
pub const SIZE: (u32, u32) = (720, 400);

/// Okabe–Ito colours, ordered so neighbours contrast (yellow late: it is faint on white),
/// then greys.
pub const PALETTE: [RGBColor; 12] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0x66, 0x66, 0x66),
    RGBColor(0xCC, 0xCC, 0xCC),
    RGBColor(0x44, 0x44, 0x44),
];

const FONT: &str = "sans-serif";
const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
const AXIS: RGBColor = RGBColor(0x55, 0x55, 0x55);
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const GRID_LIGHT: RGBColor = RGBColor(0xF0, 0xF0, 0xF0);
const REFERENCE: RGBColor = RGBColor(0x44, 0x44, 0x44);

// Font sizes as plotters takes them; its SVG backend writes `font-size` = size / 1.24.
const TITLE_PT: f64 = 20.0; // ≈ 16 px
const DESC_PT: f64 = 15.5; // axis descriptions and legend, ≈ 12.5 px
const TICK_PT: f64 = 14.0; // ≈ 11.3 px
const SMALL_PT: f64 = 13.0; // ≈ 10.5 px
const LINE_H: i32 = 13; // px between lines of small text

// Chart margins around the plot and its label areas, px.
const MARGIN_L: u32 = 8;
const MARGIN_R: u32 = 22;
const MARGIN_B: u32 = 4;

/// Colour `i` of the palette (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Colour `i` of the palette as CSS hex ("#0072B2"), to match HTML around the charts.
pub fn color_hex(i: usize) -> String {
    let c = color(i);
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

fn style(pt: f64, c: RGBColor) -> TextStyle<'static> {
    let mut s = TextStyle::from((FONT, pt).into_font());
    s.color = c.to_backend_color();
    s
}

fn anchored(pt: f64, c: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    style(pt, c).pos(Pos::new(h, v))
}

/// Text that reads well on `c`: white on dark colours, near-black on light ones.
fn ink_on(c: RGBColor) -> RGBColor {
    let lum = 0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2);
    if lum < 140.0 {
        WHITE
    } else {
        TEXT
    }
}

/// Estimated width in px of `s` in a proportional sans-serif at plotters size `pt` (the SVG
/// backend cannot measure text; this errs on the wide side).
fn text_w(s: &str, pt: f64) -> f64 {
    let em: f64 = s
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | 'I' | 't' | 'f' | 'r' | '.' | ',' | ':' | ';' | '\'' | '|' | '!'
            | ' ' | '(' | ')' | '[' | ']' => 0.34,
            'm' | 'w' | 'M' | 'W' | '@' | '%' | '&' => 0.86,
            c if c.is_ascii_uppercase() => 0.68,
            _ => 0.57,
        })
        .sum();
    em * pt / 1.24
}

/// `s`, cut with an ellipsis so that it is at most `max_px` wide.
fn fit_text(s: &str, max_px: f64, pt: f64) -> String {
    if text_w(s, pt) <= max_px {
        return s.to_string();
    }
    let mut out: String = s.chars().collect();
    while !out.is_empty() && text_w(&out, pt) + text_w("…", pt) > max_px {
        out.pop();
    }
    format!("{}…", out.trim_end())
}

// ---------------------------------------------------------------------------------------------
// Number formatting

/// `v` with at most three significant digits, trailing zeros trimmed: 1.25, 0.5, 350, 0.0125;
/// exponent notation below 1e-3 and from 1e21.
fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            format!("{v}")
        };
    }
    let a = v.abs();
    if !(1e-3..1e21).contains(&a) {
        let s = format!("{v:.2e}");
        return match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        };
    }
    let mag = a.log10().floor() as i32;
    let dec = (2 - mag).clamp(0, 5) as usize;
    let s = format!("{v:.dec$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A number with an SI prefix from k upward and three significant digits: 1.2 T, 350 G, 4.5 k,
/// 12, 0.25, 1.5e-5.
pub fn si(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    const PREFIXES: [(f64, &str); 6] = [
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ];
    let a = v.abs();
    for (d, p) in PREFIXES {
        if a >= d * 0.9995 {
            return format!("{} {p}", sig3(v / d));
        }
    }
    sig3(v)
}

/// [`si`] followed by a unit: "989 TFLOP/s", "4.8 TB/s", "12 s".
pub fn si_unit(v: f64, unit: &str) -> String {
    let s = si(v);
    if s.ends_with(|c: char| c.is_ascii_alphabetic()) && !s.ends_with("inf") && s != "NaN" {
        format!("{s}{unit}")
    } else {
        format!("{s} {unit}")
    }
}

const KIB: f64 = 1024.0;

/// Bytes with a binary prefix and three significant digits: 512 B, 1.5 KiB, 4 GiB.
pub fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let u = byte_unit(v.abs() * 1.0005);
    format!("{} {}", sig3(v / u), byte_unit_name(u))
}

/// The largest power of 1024 (up to EiB) not above `v`, at least 1.
fn byte_unit(v: f64) -> f64 {
    let mut u = 1.0;
    while u < KIB.powi(6) && v >= u * KIB {
        u *= KIB;
    }
    u
}

fn byte_unit_name(u: f64) -> &'static str {
    const NAMES: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let k = (u.log2() / 10.0).round().clamp(0.0, 6.0) as usize;
    NAMES[k]
}

/// A share (0..1) as a percentage: 0.425 → "42.5%".
fn percent(v: f64) -> String {
    format!("{}%", sig3(v * 100.0))
}

/// How an axis writes its values.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    Si,
    Bytes,
    Share,
}

impl Fmt {
    /// Bytes when the axis label says so, SI otherwise.
    fn of_label(label: &str) -> Fmt {
        if label.to_lowercase().contains("byte") {
            Fmt::Bytes
        } else {
            Fmt::Si
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Fmt::Si => si(v),
            Fmt::Bytes => bytes(v),
            Fmt::Share => percent(v),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Axes

/// A plotted value: finite and not so large that spans overflow.
fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() < 1e300
}

/// Value → plot coordinate: the value itself, or its log10 on a log axis; None for values the
/// axis cannot show.
fn to_t(v: f64, log: bool) -> Option<f64> {
    if !usable(v) {
        None
    } else if log {
        (v > 0.0).then(|| v.log10())
    } else {
        Some(v)
    }
}

/// A "nice" step (1, 2, 2.5 or 5 × 10^k) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// Multiples of a nice step (of `unit`s) within lo..=hi, about `target` of them.
fn linear_ticks(lo: f64, hi: f64, target: usize, unit: f64) -> Vec<f64> {
    let step = nice_step((hi - lo) / unit / target.max(1) as f64) * unit;
    if !(step.is_finite() && step > 0.0) {
        return vec![];
    }
    let (k0, k1) = ((lo / step - 1e-6).ceil(), (hi / step + 1e-6).floor());
    if !(k0.is_finite() && k1.is_finite()) || k1 - k0 > 200.0 || k1 < k0 {
        return vec![];
    }
    (k0 as i64..=k1 as i64).map(|k| k as f64 * step).collect()
}

/// One axis: its range in plot coordinates (log10 on a log axis) and the unit its ticks step in.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// Ticks are nice multiples of this (1024^k on a bytes axis).
    unit: f64,
}

impl Axis {
    fn lin(lo: f64, hi: f64) -> Axis {
        Axis {
            lo,
            hi,
            log: false,
            unit: 1.0,
        }
    }

    fn inv(&self, t: f64) -> f64 {
        if self.log {
            10f64.powf(t)
        } else {
            t
        }
    }

    /// An axis over `vals` (skipping what it cannot show). `zero`: a linear axis that includes
    /// 0 and ends on a tick; `pad`: the share of the span added as room at the ends.
    fn fit(vals: impl IntoIterator<Item = f64>, log: bool, zero: bool, fmt: Fmt, pad: f64) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for t in vals.into_iter().filter_map(|v| to_t(v, log)) {
            lo = lo.min(t);
            hi = hi.max(t);
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        let zero = zero && !log;
        if zero {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        if hi - lo <= 1e-9 * lo.abs().max(hi.abs()) {
            if log {
                lo -= 0.5;
                hi += 0.5;
            } else if lo == 0.0 && hi == 0.0 {
                hi = 1.0;
            } else {
                let d = lo.abs().max(hi.abs()) * 0.1;
                lo -= d;
                hi += d;
            }
        }
        let unit = if fmt == Fmt::Bytes && !log {
            byte_unit(lo.abs().max(hi.abs()))
        } else {
            1.0
        };
        let span = hi - lo;
        if log {
            let p = (span * pad).max(0.05);
            lo -= p;
            hi += p;
        } else if zero {
            let lo2 = if lo < 0.0 { lo - span * pad } else { lo };
            let hi2 = if hi > 0.0 { hi + span * pad } else { hi };
            let step = nice_step((hi2 - lo2) / unit / 6.0) * unit;
            lo = (lo2 / step).floor() * step;
            hi = (hi2 / step).ceil() * step;
        } else {
            lo -= span * pad;
            hi += span * pad;
        }
        Axis { lo, hi, log, unit }
    }

    /// (labelled ticks, light grid lines) in plot coordinates.
    fn ticks(&self, target: usize) -> (Vec<f64>, Vec<f64>) {
        if !self.log {
            return (linear_ticks(self.lo, self.hi, target, self.unit), vec![]);
        }
        let (lo, hi) = (self.lo, self.hi);
        let inside = |t: f64| t >= lo - 1e-9 && t <= hi + 1e-9;
        let decades = (lo.floor() as i64 - 1)..=(hi.ceil() as i64 + 1);
        let with = |mantissas: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|e| mantissas.iter().map(move |m| m.log10() + e as f64))
                .filter(|&t| inside(t))
                .collect()
        };
        let all: Vec<f64> = (1..10).map(f64::from).collect();
        if hi - lo > 8.0 {
            let stride = ((hi - lo) / 8.0).ceil() as i64;
            let (bold, light) = decades
                .clone()
                .map(|e| e as f64)
                .filter(|&t| inside(t))
                .partition(|&t| (t as i64).rem_euclid(stride) == 0);
            return (bold, light);
        }
        let light = if hi - lo <= 6.0 { with(&all) } else { vec![] };
        for set in [&[1.0][..], &[1.0, 2.0, 5.0][..], &all[..]] {
            let bold = with(set);
            if bold.len() >= 3 || (set.len() == 9 && bold.len() >= 2) {
                let light = light.into_iter().filter(|t| !bold.contains(t)).collect();
                return (bold, light);
            }
        }
        // Less than a factor of ~2: nice linear steps of the value itself.
        let bold = linear_ticks(10f64.powf(lo), 10f64.powf(hi), 5, 1.0)
            .into_iter()
            .filter_map(|v| to_t(v, true))
            .collect();
        (bold, vec![])
    }

    fn label(&self, fmt: Fmt, t: f64) -> String {
        let v = self.inv(t);
        if fmt == Fmt::Bytes && !self.log && self.unit > 1.0 {
            if v == 0.0 {
                return "0".into();
            }
            return format!("{} {}", sig3(v / self.unit), byte_unit_name(self.unit));
        }
        fmt.show(v)
    }
}

/// A linear plotters coordinate over plot coordinates, with the ticks an [`Axis`] chose.
struct Scale {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Scale {
    fn new(a: Axis, bold: Vec<f64>, light: Vec<f64>) -> Scale {
        Scale {
            lo: a.lo,
            hi: a.hi,
            bold,
            light,
        }
    }
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        let r = if span > 0.0 {
            (v - self.lo) / span
        } else {
            0.5
        };
        let px = f64::from(limit.0) + r * f64::from(limit.1 - limit.0);
        // Far-off (or NaN) values land off the canvas instead of wrapping around.
        if px.is_nan() {
            0
        } else {
            px.clamp(-1e6, 1e6).round() as i32
        }
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing plumbing

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type Coord = Cartesian2d<Scale, Scale>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Coord>;
type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Runs `draw` on a fresh white SVG; a drawing error (or a panic inside plotters) becomes an
/// SVG that shows the error.
fn render(title: &str, draw: impl for<'a, 'b> FnOnce(&'a Area<'b>) -> Res) -> String {
    let mut buf = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        let run = catch_unwind(AssertUnwindSafe(|| -> Res {
            root.fill(&WHITE)?;
            draw(&root)?;
            root.present()?;
            Ok(())
        }));
        match run {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(p) => Err(p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic while drawing".into())),
        }
    };
    match outcome {
        Ok(()) => buf,
        Err(e) => error_svg(title, &e),
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A chart-sized SVG that shows `title` and an error message.
fn error_svg(title: &str, err: &str) -> String {
    let (w, h) = SIZE;
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#FFFFFF\"/>\n\
         <text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-family=\"{FONT}\" font-size=\"16\" fill=\"#222222\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"{FONT}\" font-size=\"12\" fill=\"#D55E00\">chart error: {}</text>\n\
         </svg>\n",
        w / 2,
        xml_escape(title),
        w / 2,
        h / 2,
        xml_escape(err)
    )
}

/// How a legend entry is keyed.
#[derive(Clone, Copy, Debug)]
enum Key {
    /// A filled square (bars).
    Swatch,
    /// A line, with the marker of series `n` if any.
    Line(Option<usize>),
    /// A dashed line (reference lines).
    Dashed,
}

struct Item {
    label: String,
    color: RGBColor,
    key: Key,
}

const LEGEND_ROW: i32 = 18;
const LEGEND_MAX_ROWS: usize = 5;

/// Draws the title and the legend (rows of entries under the title) and returns the area left.
fn page<'b>(root: &Area<'b>, title: &str, items: &[Item]) -> Res<Area<'b>> {
    let title = fit_text(title, f64::from(SIZE.0) - 24.0, TITLE_PT);
    let body = root.titled(&title, style(TITLE_PT, TEXT))?;
    if items.is_empty() {
        return Ok(body);
    }
    let (w, _) = body.dim_in_pixel();
    let max_w = f64::from(w) - 24.0;
    let labels: Vec<String> = items
        .iter()
        .map(|it| fit_text(&it.label, 260.0, DESC_PT))
        .collect();
    let widths: Vec<f64> = labels.iter().map(|l| 18.0 + text_w(l, DESC_PT)).collect();
    const GAP: f64 = 16.0;
    let mut rows: Vec<Vec<usize>> = vec![];
    let mut row_w = 0.0;
    for (i, &iw) in widths.iter().enumerate() {
        match rows.last_mut() {
            Some(row) if row_w + GAP + iw <= max_w => {
                row.push(i);
                row_w += GAP + iw;
            }
            _ => {
                rows.push(vec![i]);
                row_w = iw;
            }
        }
    }
    rows.truncate(LEGEND_MAX_ROWS);
    let h = rows.len() as i32 * LEGEND_ROW + 6;
    let (top, rest) = body.split_vertically(h);
    for (r, row) in rows.iter().enumerate() {
        let total: f64 = row.iter().map(|&i| widths[i]).sum::<f64>() + GAP * (row.len() - 1) as f64;
        let mut x = ((f64::from(w) - total) / 2.0).max(4.0);
        let cy = r as i32 * LEGEND_ROW + LEGEND_ROW / 2 + 2;
        for &i in row {
            let it = &items[i];
            let xi = x.round() as i32;
            match it.key {
                Key::Swatch => {
                    top.draw(&Rectangle::new(
                        [(xi, cy - 6), (xi + 12, cy + 6)],
                        it.color.filled(),
                    ))?;
                }
                Key::Line(mark) => {
                    top.draw(&PathElement::new(
                        vec![(xi - 2, cy), (xi + 14, cy)],
                        it.color.stroke_width(2),
                    ))?;
                    if let Some(m) = mark {
                        marker(&top, (xi + 6, cy), m, it.color)?;
                    }
                }
                Key::Dashed => {
                    top.draw(&DashedPathElement::new(
                        vec![(xi - 2, cy), (xi + 14, cy)],
                        4,
                        3,
                        it.color.stroke_width(2),
                    ))?;
                }
            }
            top.draw(&Text::new(
                labels[i].clone(),
                (xi + 18, cy),
                anchored(DESC_PT, TEXT, HPos::Left, VPos::Center),
            ))?;
            x += widths[i] + GAP;
        }
    }
    Ok(rest)
}

/// Title and a framed "no data".
fn no_data(root: &Area<'_>, title: &str) -> Res {
    let body = page(root, title, &[])?;
    let (w, h) = body.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    body.draw(&Rectangle::new(
        [(MARGIN_L as i32 + 40, 8), (w - MARGIN_R as i32, h - 40)],
        GRID.stroke_width(1),
    ))?;
    body.draw(&Text::new(
        "no data",
        (
            (w + MARGIN_L as i32 + 40 - MARGIN_R as i32) / 2,
            (h - 32) / 2,
        ),
        anchored(DESC_PT + 4.0, MUTED, HPos::Center, VPos::Center),
    ))?;
    Ok(())
}

/// Marker shape `n` (circle, square, triangle, diamond, inverted triangle) as pixel offsets.
fn marker_shape(n: usize) -> Vec<(i32, i32)> {
    match n % 5 {
        0 => (0..12)
            .map(|k| {
                let a = f64::from(k) * std::f64::consts::PI / 6.0;
                (
                    (4.0 * a.cos()).round() as i32,
                    (4.0 * a.sin()).round() as i32,
                )
            })
            .collect(),
        1 => vec![(-3, -3), (3, -3), (3, 3), (-3, 3)],
        2 => vec![(0, -5), (4, 3), (-4, 3)],
        3 => vec![(0, -5), (4, 0), (0, 5), (-4, 0)],
        _ => vec![(0, 5), (4, -3), (-4, -3)],
    }
}

/// Draws marker `n` centred at `at` (plot or pixel coordinates of `area`).
fn marker<CT: CoordTranslate>(
    area: &DrawingArea<SVGBackend<'_>, CT>,
    at: CT::From,
    n: usize,
    c: RGBColor,
) -> Res {
    area.draw(&(EmptyElement::at(at) + Polygon::new(marker_shape(n), c.filled())))?;
    Ok(())
}

/// What a chart's frame needs: axes, how ticks read, axis descriptions and room around it.
struct Frame<'s> {
    x: Axis,
    y: Axis,
    x_fmt: Fmt,
    y_fmt: Fmt,
    x_desc: &'s str,
    y_desc: &'s str,
    /// False on a category axis: the caller writes the labels.
    x_ticks: bool,
    /// Height under the plot for x labels and description.
    x_area: u32,
    /// Margin above the plot.
    top: u32,
}

const X_TICKS: usize = 8;
const Y_TICKS: usize = 6;

impl Frame<'_> {
    fn y_area(&self) -> u32 {
        let (bold, _) = self.y.ticks(Y_TICKS);
        let w = bold
            .iter()
            .map(|&t| text_w(&self.y.label(self.y_fmt, t), TICK_PT))
            .fold(0.0, f64::max);
        let desc = if self.y_desc.is_empty() { 0.0 } else { 22.0 };
        (w + 16.0 + desc).clamp(30.0, 160.0) as u32
    }

    /// Width of the plot inside an area `area_w` wide.
    fn plot_w(&self, area_w: u32) -> f64 {
        (f64::from(area_w) - f64::from(MARGIN_L + MARGIN_R + self.y_area())).max(10.0)
    }

    /// Pixel offset of plot x coordinate `t` from the plot's left edge.
    fn x_px(&self, area_w: u32, t: f64) -> f64 {
        (t - self.x.lo) / (self.x.hi - self.x.lo) * self.plot_w(area_w)
    }
}

/// Height of the x label area with tick labels and, if any, a description.
fn numeric_x_area(desc: &str) -> u32 {
    if desc.is_empty() {
        30
    } else {
        48
    }
}

/// Builds the chart on `area` and draws its grid, axes, ticks and axis descriptions.
fn build<'a, 'b>(area: &'a Area<'b>, f: &Frame<'_>) -> Res<Chart<'a, 'b>> {
    let (xb, xl) = if f.x_ticks {
        f.x.ticks(X_TICKS)
    } else {
        (vec![], vec![])
    };
    let (yb, yl) = f.y.ticks(Y_TICKS);
    let mut chart = ChartBuilder::on(area)
        .margin_top(f.top)
        .margin_bottom(MARGIN_B)
        .margin_left(MARGIN_L)
        .margin_right(MARGIN_R)
        .x_label_area_size(f.x_area)
        .y_label_area_size(f.y_area())
        .build_cartesian_2d(Scale::new(f.x, xb, xl), Scale::new(f.y, yb, yl))?;
    {
        let xfmt = |t: &f64| f.x.label(f.x_fmt, *t);
        let yfmt = |t: &f64| f.y.label(f.y_fmt, *t);
        let mut mesh = chart.configure_mesh();
        mesh.bold_line_style(GRID)
            .light_line_style(GRID_LIGHT)
            .axis_style(AXIS)
            .label_style(style(TICK_PT, TEXT))
            .axis_desc_style(style(DESC_PT, TEXT))
            .x_label_formatter(&xfmt)
            .y_label_formatter(&yfmt);
        if !f.x_desc.is_empty() {
            mesh.x_desc(f.x_desc);
        }
        if !f.y_desc.is_empty() {
            mesh.y_desc(f.y_desc);
        }
        mesh.draw()?;
    }
    Ok(chart)
}

/// How category labels go under their bars.
enum CatLabels {
    /// Horizontal, each wrapped into at most three lines that fit its slot.
    Flat(Vec<Vec<String>>),
    /// Rotated to read bottom-to-top, in as many side-by-side lines as the slot holds (cut
    /// with an ellipsis beyond a maximum length).
    Vertical(Vec<Vec<String>>),
}

const MAX_VERTICAL_LABEL: f64 = 120.0;

/// Greedy word wrap of `s` into at most `max_lines` lines at most `avail` px wide, cutting
/// what does not fit with an ellipsis.
fn wrap_cut(s: &str, avail: f64, max_lines: usize, pt: f64) -> Vec<String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut lines: Vec<String> = vec![];
    for (k, word) in words.iter().enumerate() {
        let full = lines.len() >= max_lines.max(1);
        match lines.last_mut() {
            Some(line) if text_w(&format!("{line} {word}"), pt) <= avail => {
                line.push(' ');
                line.push_str(word);
            }
            Some(line) if full => {
                *line = fit_text(&format!("{line} {}", words[k..].join(" ")), avail, pt);
                break;
            }
            _ => lines.push(fit_text(word, avail, pt)),
        }
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

/// Greedy word wrap of `s` into lines at most `avail` px wide; None if a word alone is wider.
fn wrap(s: &str, avail: f64, pt: f64) -> Option<Vec<String>> {
    if text_w(s, pt) <= avail {
        return Some(vec![s.to_string()]);
    }
    let mut lines: Vec<String> = vec![];
    for word in s.split_whitespace() {
        if text_w(word, pt) > avail {
            return None;
        }
        match lines.last_mut() {
            Some(line) if text_w(&format!("{line} {word}"), pt) <= avail => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    Some(lines)
}

impl CatLabels {
    fn plan(labels: &[String], slot_px: f64) -> CatLabels {
        let wrapped: Option<Vec<Vec<String>>> = labels
            .iter()
            .map(|l| wrap(l, slot_px - 4.0, TICK_PT))
            .collect();
        match wrapped {
            Some(w) if w.iter().all(|l| l.len() <= 3) => CatLabels::Flat(w),
            _ => {
                let max_lines =
                    (((slot_px - 2.0) / f64::from(LINE_H)).floor() as usize).clamp(1, 3);
                CatLabels::Vertical(
                    labels
                        .iter()
                        .map(|l| wrap_cut(l, MAX_VERTICAL_LABEL, max_lines, TICK_PT))
                        .collect(),
                )
            }
        }
    }

    /// Height the labels need under the axis, px.
    fn height(&self) -> u32 {
        match self {
            CatLabels::Flat(w) => {
                let lines = w.iter().map(Vec::len).max().unwrap_or(1).max(1);
                lines as u32 * LINE_H as u32 + 12
            }
            CatLabels::Vertical(l) => {
                let w = l
                    .iter()
                    .flatten()
                    .map(|s| text_w(s, TICK_PT))
                    .fold(0.0, f64::max);
                w.ceil() as u32 + 14
            }
        }
    }

    /// Writes label `i` under plot x coordinate `xs[i]`.
    fn draw(&self, area: &Area<'_>, chart: &Chart<'_, '_>, y_axis: f64, xs: &[f64]) -> Res {
        let (bx, by) = area.get_base_pixel();
        for (i, &x) in xs.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(x, y_axis));
            let (px, py) = (px - bx, py - by + 7);
            match self {
                CatLabels::Flat(w) => {
                    for (k, line) in w[i].iter().enumerate() {
                        area.draw(&Text::new(
                            line.clone(),
                            (px, py + k as i32 * LINE_H),
                            anchored(TICK_PT, TEXT, HPos::Center, VPos::Top),
                        ))?;
                    }
                }
                CatLabels::Vertical(l) => {
                    // Lines side by side, the first on the left, centred on the bar.
                    let n = l[i].len() as i32;
                    for (k, line) in l[i].iter().enumerate() {
                        let dx = (2 * k as i32 - (n - 1)) * LINE_H / 2;
                        area.draw(&Text::new(
                            line.clone(),
                            (px + dx, py),
                            anchored(TICK_PT, TEXT, HPos::Right, VPos::Center)
                                .transform(FontTransform::Rotate270),
                        ))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Finite (x, y) points of a series in plot coordinates, sorted by x.
fn clean(points: &[(f64, f64)], log_x: bool, log_y: bool) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|&(a, b)| Some((to_t(a, log_x)?, to_t(b, log_y)?)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

// ---------------------------------------------------------------------------------------------
// Charts

/// Stacked bars of shares (y in %), one colour per segment name, labels under the bars.
pub fn stacked_bars(c: &StackedBars) -> String {
    render(&c.title, |root| draw_stacked(root, c))
}

fn draw_stacked(root: &Area<'_>, c: &StackedBars) -> Res {
    let mut names: Vec<&str> = vec![];
    let mut bars: Vec<(&str, Vec<(usize, f64)>)> = vec![];
    for (label, segs) in &c.bars {
        let mut kept = vec![];
        for (name, share) in segs {
            if !(usable(*share) && *share > 0.0) {
                continue;
            }
            let k = names.iter().position(|n| n == name).unwrap_or_else(|| {
                names.push(name);
                names.len() - 1
            });
            kept.push((k, *share));
        }
        bars.push((label, kept));
    }
    if names.is_empty() {
        return no_data(root, &c.title);
    }
    let items: Vec<Item> = names
        .iter()
        .enumerate()
        .map(|(k, n)| Item {
            label: n.to_string(),
            color: color(k),
            key: Key::Swatch,
        })
        .collect();
    let body = page(root, &c.title, &items)?;
    let total_max = bars
        .iter()
        .map(|(_, s)| s.iter().map(|&(_, v)| v).sum::<f64>())
        .fold(0.0, f64::max);
    let y = if total_max <= 1.0 + 1e-9 {
        Axis::lin(0.0, 1.0)
    } else {
        Axis::fit([0.0, total_max], false, true, Fmt::Share, 0.02)
    };
    let n = bars.len();
    let mut f = Frame {
        x: Axis::lin(-0.5, n as f64 - 0.5),
        y,
        x_fmt: Fmt::Si,
        y_fmt: Fmt::Share,
        x_desc: "",
        y_desc: &c.y_label,
        x_ticks: false,
        x_area: 0,
        top: 8,
    };
    let (aw, _) = body.dim_in_pixel();
    let slot = f.plot_w(aw) / n as f64;
    let labels: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    let plan = CatLabels::plan(&labels, slot);
    f.x_area = plan.height();
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    let plot_h = f64::from(pa.dim_in_pixel().1);
    const HALF: f64 = 0.38;
    let bar_px = slot * 2.0 * HALF;
    for (i, (_, segs)) in bars.iter().enumerate() {
        let xi = i as f64;
        let mut cum = 0.0;
        for &(k, v) in segs {
            let (a, b) = (cum, cum + v);
            cum = b;
            let col = color(k);
            let corners = [(xi - HALF, a), (xi + HALF, b)];
            pa.draw(&Rectangle::new(corners, col.filled()))?;
            pa.draw(&Rectangle::new(corners, WHITE.stroke_width(1)))?;
            let txt = percent(v);
            let seg_px = v / (y.hi - y.lo) * plot_h;
            if seg_px >= 15.0 && bar_px >= text_w(&txt, SMALL_PT) + 4.0 {
                pa.draw(&Text::new(
                    txt,
                    (xi, (a + b) / 2.0),
                    anchored(SMALL_PT, ink_on(col), HPos::Center, VPos::Center),
                ))?;
            }
        }
    }
    let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
    plan.draw(&body, &chart, y.lo, &xs)
}

/// Bars clustered by group and coloured by group, with an optional dashed reference line.
pub fn grouped_bars(c: &GroupedBars) -> String {
    render(&c.title, |root| draw_grouped(root, c))
}

fn draw_grouped(root: &Area<'_>, c: &GroupedBars) -> Res {
    const GAP: f64 = 0.7;
    // (x, colour index, label, value)
    let mut slots: Vec<(f64, usize, &str, Option<f64>)> = vec![];
    let mut used: Vec<&str> = vec![];
    let mut pos = 0.0;
    for (gname, bars) in &c.groups {
        if bars.is_empty() {
            continue;
        }
        used.push(gname);
        for (label, v) in bars {
            slots.push((pos, used.len() - 1, label, usable(*v).then_some(*v)));
            pos += 1.0;
        }
        pos += GAP;
    }
    if slots.iter().all(|s| s.3.is_none()) {
        return no_data(root, &c.title);
    }
    let reference = c.reference.as_ref().filter(|r| usable(r.1));
    let mut items: Vec<Item> = vec![];
    if used.len() > 1 {
        items.extend(used.iter().enumerate().map(|(g, n)| Item {
            label: n.to_string(),
            color: color(g),
            key: Key::Swatch,
        }));
    }
    if let Some((name, r)) = reference {
        items.push(Item {
            label: format!("{name} ({})", Fmt::of_label(&c.y_label).show(*r)),
            color: REFERENCE,
            key: Key::Dashed,
        });
    }
    let body = page(root, &c.title, &items)?;
    let y_fmt = Fmt::of_label(&c.y_label);
    let y = Axis::fit(
        slots
            .iter()
            .filter_map(|s| s.3)
            .chain(reference.map(|r| r.1)),
        false,
        true,
        y_fmt,
        0.08,
    );
    let last = slots.last().map_or(0.0, |s| s.0);
    let mut f = Frame {
        x: Axis::lin(-0.6, last + 0.6),
        y,
        x_fmt: Fmt::Si,
        y_fmt,
        x_desc: "",
        y_desc: &c.y_label,
        x_ticks: false,
        x_area: 0,
        top: 8,
    };
    let (aw, _) = body.dim_in_pixel();
    let slot = f.plot_w(aw) / (f.x.hi - f.x.lo);
    let labels: Vec<String> = slots.iter().map(|s| s.2.to_string()).collect();
    let plan = CatLabels::plan(&labels, slot);
    f.x_area = plan.height();
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    const HALF: f64 = 0.4;
    for &(x, g, _, v) in &slots {
        let Some(v) = v else { continue };
        pa.draw(&Rectangle::new(
            [(x - HALF, 0.0), (x + HALF, v)],
            color(g).filled(),
        ))?;
        let txt = y_fmt.show(v);
        if text_w(&txt, SMALL_PT) <= slot {
            let (dy, vpos) = if v >= 0.0 {
                (-3, VPos::Bottom)
            } else {
                (3, VPos::Top)
            };
            pa.draw(
                &(EmptyElement::at((x, v))
                    + Text::new(txt, (0, dy), anchored(SMALL_PT, TEXT, HPos::Center, vpos))),
            )?;
        }
    }
    if let Some((_, r)) = reference {
        // Named in the legend: a label on the line would collide with the bars' values.
        pa.draw(&DashedPathElement::new(
            vec![(f.x.lo, *r), (f.x.hi, *r)],
            6,
            4,
            REFERENCE.stroke_width(2),
        ))?;
    }
    let xs: Vec<f64> = slots.iter().map(|s| s.0).collect();
    plan.draw(&body, &chart, y.lo, &xs)
}

/// Lines with point markers, optionally on log axes.
pub fn lines(c: &Lines) -> String {
    render(&c.title, |root| draw_lines(root, c))
}

fn draw_lines(root: &Area<'_>, c: &Lines) -> Res {
    let series: Vec<(&str, Vec<(f64, f64)>)> = c
        .series
        .iter()
        .map(|(n, p)| (n.as_str(), clean(p, c.log_x, c.log_y)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return no_data(root, &c.title);
    }
    let items: Vec<Item> = if series.len() > 1 {
        series
            .iter()
            .enumerate()
            .map(|(i, (n, _))| Item {
                label: n.to_string(),
                color: color(i),
                key: Key::Line(Some(i)),
            })
            .collect()
    } else {
        vec![]
    };
    let body = page(root, &c.title, &items)?;
    let inv = |t: f64, log: bool| if log { 10f64.powf(t) } else { t };
    let xs = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| inv(p.0, c.log_x)));
    let ys = || {
        series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| inv(p.1, c.log_y)))
    };
    let (x_fmt, y_fmt) = (Fmt::of_label(&c.x_label), Fmt::of_label(&c.y_label));
    let zero = !c.log_y && ys().all(|v| v >= 0.0);
    let f = Frame {
        x: Axis::fit(xs, c.log_x, false, x_fmt, 0.04),
        y: Axis::fit(ys(), c.log_y, zero, y_fmt, 0.05),
        x_fmt,
        y_fmt,
        x_desc: &c.x_label,
        y_desc: &c.y_label,
        x_ticks: true,
        x_area: numeric_x_area(&c.x_label),
        top: 10,
    };
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    for (i, (_, pts)) in series.iter().enumerate() {
        if pts.len() >= 2 {
            pa.draw(&PathElement::new(pts.clone(), color(i).stroke_width(2)))?;
        }
        if pts.len() <= 80 {
            for &p in pts {
                marker(pa, p, i, color(i))?;
            }
        }
    }
    Ok(())
}

/// A binned histogram: one bar per labelled bin.
pub fn histogram(c: &Histogram) -> String {
    render(&c.title, |root| draw_histogram(root, c))
}

fn draw_histogram(root: &Area<'_>, c: &Histogram) -> Res {
    if !c.bins.iter().any(|b| usable(b.1)) {
        return no_data(root, &c.title);
    }
    let body = page(root, &c.title, &[])?;
    let y_fmt = Fmt::of_label(&c.y_label);
    let n = c.bins.len();
    let mut f = Frame {
        x: Axis::lin(-0.5, n as f64 - 0.5),
        y: Axis::fit(
            c.bins.iter().map(|b| b.1).filter(|v| usable(*v)),
            false,
            true,
            y_fmt,
            0.08,
        ),
        x_fmt: Fmt::Si,
        y_fmt,
        x_desc: &c.x_label,
        y_desc: &c.y_label,
        x_ticks: false,
        x_area: 0,
        top: 8,
    };
    let (aw, _) = body.dim_in_pixel();
    let slot = f.plot_w(aw) / n as f64;
    let labels: Vec<String> = c.bins.iter().map(|b| b.0.clone()).collect();
    let plan = CatLabels::plan(&labels, slot);
    f.x_area = plan.height() + if c.x_label.is_empty() { 0 } else { 20 };
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    const HALF: f64 = 0.46;
    for (i, (_, v)) in c.bins.iter().enumerate() {
        if !usable(*v) {
            continue;
        }
        let x = i as f64;
        pa.draw(&Rectangle::new(
            [(x - HALF, 0.0), (x + HALF, *v)],
            color(0).filled(),
        ))?;
        let txt = y_fmt.show(*v);
        if text_w(&txt, SMALL_PT) <= slot {
            let (dy, vpos) = if *v >= 0.0 {
                (-3, VPos::Bottom)
            } else {
                (3, VPos::Top)
            };
            pa.draw(
                &(EmptyElement::at((x, *v))
                    + Text::new(txt, (0, dy), anchored(SMALL_PT, TEXT, HPos::Center, vpos))),
            )?;
        }
    }
    let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
    plan.draw(&body, &chart, f.y.lo, &xs)
}

/// A quantity through a sequence: shaded lines from 0 and dashed, labelled vertical marks.
pub fn profile(c: &Profile) -> String {
    render(&c.title, |root| draw_profile(root, c))
}

fn draw_profile(root: &Area<'_>, c: &Profile) -> Res {
    let series: Vec<(&str, Vec<(f64, f64)>)> = c
        .series
        .iter()
        .map(|(n, p)| (n.as_str(), clean(p, false, false)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return no_data(root, &c.title);
    }
    let items: Vec<Item> = if series.len() > 1 {
        series
            .iter()
            .enumerate()
            .map(|(i, (n, _))| Item {
                label: n.to_string(),
                color: color(i),
                key: Key::Line(None),
            })
            .collect()
    } else {
        vec![]
    };
    let body = page(root, &c.title, &items)?;
    let (x_fmt, y_fmt) = (Fmt::of_label(&c.x_label), Fmt::of_label(&c.y_label));
    let mut f = Frame {
        x: Axis::fit(
            series.iter().flat_map(|s| s.1.iter().map(|p| p.0)),
            false,
            false,
            x_fmt,
            0.01,
        ),
        y: Axis::fit(
            series.iter().flat_map(|s| s.1.iter().map(|p| p.1)),
            false,
            true,
            y_fmt,
            0.05,
        ),
        x_fmt,
        y_fmt,
        x_desc: &c.x_label,
        y_desc: &c.y_label,
        x_ticks: true,
        x_area: numeric_x_area(&c.x_label),
        top: 10,
    };
    // Marks inside the x range, their labels staggered over up to three rows above the plot.
    let mut marks: Vec<(f64, String)> = c
        .marks
        .iter()
        .filter(|m| usable(m.0) && m.0 >= f.x.lo && m.0 <= f.x.hi)
        .map(|(x, l)| (*x, fit_text(l, 120.0, SMALL_PT)))
        .collect();
    marks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (aw, _) = body.dim_in_pixel();
    let mut ends = [f64::NEG_INFINITY; 3];
    let mut rows = Vec::with_capacity(marks.len());
    for (x, label) in &marks {
        let px = f.x_px(aw, *x);
        let half = text_w(label, SMALL_PT) / 2.0;
        let row = ends
            .iter()
            .position(|&e| e + 6.0 <= px - half)
            .unwrap_or_else(|| {
                (0..ends.len())
                    .min_by(|&a, &b| ends[a].total_cmp(&ends[b]))
                    .unwrap_or(0)
            });
        ends[row] = px + half;
        rows.push(row);
    }
    let used_rows = rows.iter().map(|r| r + 1).max().unwrap_or(0);
    f.top = 10 + used_rows as u32 * LINE_H as u32;
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    let base = 0f64.clamp(f.y.lo, f.y.hi);
    // Shading first, then every line over it.
    for (i, (_, pts)) in series.iter().enumerate() {
        if pts.len() >= 2 {
            let mut poly = pts.clone();
            poly.push((pts[pts.len() - 1].0, base));
            poly.push((pts[0].0, base));
            pa.draw(&Polygon::new(poly, color(i).mix(0.10).filled()))?;
        }
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        if pts.len() >= 2 {
            pa.draw(&PathElement::new(pts.clone(), color(i).stroke_width(2)))?;
        } else {
            marker(pa, pts[0], i, color(i))?;
        }
    }
    for ((x, label), row) in marks.iter().zip(&rows) {
        pa.draw(&DashedPathElement::new(
            vec![(*x, f.y.lo), (*x, f.y.hi)],
            5,
            4,
            MUTED.stroke_width(1),
        ))?;
        pa.draw(
            &(EmptyElement::at((*x, f.y.hi))
                + Text::new(
                    label.clone(),
                    (0, -4 - *row as i32 * LINE_H),
                    anchored(SMALL_PT, TEXT, HPos::Center, VPos::Bottom),
                )),
        )?;
    }
    Ok(())
}

/// Log-log roofline: one roof min(peak, bandwidth · I) per hardware, labelled points.
pub fn roofline(c: &Roofline) -> String {
    render(&c.title, |root| draw_roofline(root, c))
}

fn draw_roofline(root: &Area<'_>, c: &Roofline) -> Res {
    let roofs: Vec<(&str, f64, f64)> = c
        .roofs
        .iter()
        .filter(|r| usable(r.1) && usable(r.2) && r.1 > 0.0 && r.2 > 0.0)
        .map(|r| (r.0.as_str(), r.1, r.2))
        .filter(|r| usable(r.1 / r.2) && r.1 / r.2 > 0.0)
        .collect();
    let points: Vec<(&str, f64, f64)> = c
        .points
        .iter()
        .filter(|p| to_t(p.1, true).is_some() && to_t(p.2, true).is_some())
        .map(|p| (p.0.as_str(), p.1, p.2))
        .collect();
    if roofs.is_empty() && points.is_empty() {
        return no_data(root, &c.title);
    }
    let items: Vec<Item> = roofs
        .iter()
        .enumerate()
        .map(|(i, r)| Item {
            label: format!(
                "{}: {}, {}",
                r.0,
                si_unit(r.1, "FLOP/s"),
                si_unit(r.2, "B/s")
            ),
            color: color(i),
            key: Key::Line(None),
        })
        .collect();
    let body = page(root, &c.title, &items)?;
    let x = Axis::fit(
        points.iter().map(|p| p.1).chain(
            roofs
                .iter()
                .flat_map(|r| [r.1 / r.2 / 4.0, r.1 / r.2 * 4.0]),
        ),
        true,
        false,
        Fmt::Si,
        0.04,
    );
    // The roof at an intensity, in plot coordinates.
    let roof_t = |r: &(&str, f64, f64), t: f64| (r.1.log10()).min(r.2.log10() + t);
    let y = Axis::fit(
        points.iter().map(|p| p.2).chain(
            roofs
                .iter()
                .flat_map(|r| [r.1, 10f64.powf(roof_t(r, x.lo))]),
        ),
        true,
        false,
        Fmt::Si,
        0.04,
    );
    let f = Frame {
        x,
        y,
        x_fmt: Fmt::Si,
        y_fmt: Fmt::Si,
        x_desc: "arithmetic intensity (FLOP/byte)",
        y_desc: "attained performance (FLOP/s)",
        x_ticks: true,
        x_area: numeric_x_area("x"),
        top: 10,
    };
    let chart = build(&body, &f)?;
    let pa = chart.plotting_area();
    for (i, r) in roofs.iter().enumerate() {
        let ridge = (r.1 / r.2).log10();
        let mut ts = vec![x.lo];
        if ridge > x.lo && ridge < x.hi {
            ts.push(ridge);
        }
        ts.push(x.hi);
        let pts: Vec<(f64, f64)> = ts
            .iter()
            .map(|&t| (t, roof_t(r, t).clamp(y.lo, y.hi)))
            .collect();
        pa.draw(&PathElement::new(pts, color(i).stroke_width(2)))?;
    }
    let (px_range, _) = pa.get_pixel_range();
    for p in &points {
        let at = (p.1.log10(), p.2.log10());
        let label = fit_text(p.0, 160.0, SMALL_PT);
        let (px, _) = chart.backend_coord(&at);
        let right = f64::from(px) + 8.0 + text_w(&label, SMALL_PT) <= f64::from(px_range.end);
        let (dx, h) = if right {
            (6, HPos::Left)
        } else {
            (-6, HPos::Right)
        };
        marker(pa, at, 0, BLACK)?;
        pa.draw(
            &(EmptyElement::at(at)
                + Text::new(label, (dx, -3), anchored(SMALL_PT, TEXT, h, VPos::Bottom))),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the SVG is well-formed enough: one root `<svg>` element, tags balanced and
    /// nested, no raw `<` in text, every `&` an entity. Panics with the reason otherwise.
    fn check_xml(svg: &str) {
        let s = svg.trim();
        assert!(
            s.starts_with("<svg"),
            "starts with <svg: {}",
            &s[..s.len().min(80)]
        );
        assert!(s.ends_with("</svg>"), "ends with </svg>");
        assert_eq!(s.matches("<svg").count(), 1, "one <svg");
        assert_eq!(s.matches("</svg>").count(), 1, "one </svg>");
        let mut stack: Vec<String> = vec![];
        let mut rest = s;
        let check_text = |t: &str| {
            assert!(!t.contains('>'), "raw > in text {t:?}");
            let mut it = t.split('&');
            it.next();
            for after in it {
                let ent = after.split(';').next().unwrap_or("");
                let ok = after.contains(';')
                    && (["amp", "lt", "gt", "quot", "apos"].contains(&ent)
                        || (ent.starts_with('#') && ent.len() > 1));
                assert!(ok, "raw & in {t:?}");
            }
        };
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "< inside a tag: {tag:?}");
            // Attribute values: strip quoted parts and check them.
            for (k, part) in tag.split('"').enumerate() {
                if k % 2 == 1 {
                    check_text(part);
                }
            }
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().expect("close without open");
                assert_eq!(top, name.trim(), "mismatched close");
            } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
                let name: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                assert!(!name.is_empty(), "bad tag {tag:?}");
                stack.push(name);
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    /// Well-formed, no error, and contains each of `texts` (XML-escaped).
    fn check(svg: &str, texts: &[&str]) {
        check_xml(svg);
        assert!(!svg.contains("chart error"), "error chart: {svg}");
        for t in texts {
            let e = xml_escape(t);
            assert!(svg.contains(&e), "missing {e:?}");
        }
    }

    fn no_error(svg: &str) {
        check_xml(svg);
        assert!(!svg.contains("chart error"), "error chart: {svg}");
    }

    fn stacked() -> StackedBars {
        let seg = |a: f64, b: f64, c: f64| {
            vec![
                ("Conv".to_string(), a),
                ("Attention".to_string(), b),
                ("GEMM & <norm>".to_string(), c),
            ]
        };
        StackedBars {
            title: "Time by op class".into(),
            y_label: "share of time (%)".into(),
            bars: vec![
                ("sd15".into(), seg(0.5, 0.3, 0.15)),
                ("sd15 flash".into(), seg(0.6, 0.1, 0.2)),
                (
                    "svd".into(),
                    vec![("Attention".into(), 0.4), ("Temporal".into(), 0.35)],
                ),
            ],
        }
    }

    fn grouped() -> GroupedBars {
        GroupedBars {
            title: "Flash-attention speedup".into(),
            y_label: "speedup (×)".into(),
            groups: vec![
                (
                    "SD".into(),
                    vec![("sd15".into(), 1.4), ("sdxl".into(), 1.25)],
                ),
                (
                    "Video".into(),
                    vec![("svd".into(), 2.1), ("a<b & c".into(), 0.9)],
                ),
            ],
            reference: Some(("no speedup".into(), 1.0)),
        }
    }

    fn lines_data(log: bool) -> Lines {
        Lines {
            title: "Time vs image size".into(),
            x_label: "image side (px)".into(),
            y_label: "time (s)".into(),
            log_x: log,
            log_y: log,
            series: vec![
                (
                    "Conv".into(),
                    vec![(256.0, 0.2), (512.0, 0.8), (1024.0, 3.3)],
                ),
                (
                    "Attention".into(),
                    vec![(256.0, 0.05), (512.0, 0.7), (1024.0, 11.0)],
                ),
            ],
        }
    }

    fn hist() -> Histogram {
        Histogram {
            title: "Attention sequence lengths".into(),
            x_label: "sequence length (tokens)".into(),
            y_label: "FLOPs".into(),
            bins: vec![
                ("64".into(), 1e9),
                ("256".into(), 4e11),
                ("1024".into(), 2.5e12),
                ("4096".into(), 9e12),
            ],
        }
    }

    fn prof() -> Profile {
        let pred: Vec<(f64, f64)> = (0..200)
            .map(|i| (f64::from(i), 1e9 + 5e8 * (f64::from(i) / 30.0).sin().abs()))
            .collect();
        let rss: Vec<(f64, f64)> = (0..200)
            .step_by(10)
            .map(|i| {
                (
                    f64::from(i),
                    1.2e9 + 4e8 * (f64::from(i) / 30.0).sin().abs(),
                )
            })
            .collect();
        Profile {
            title: "Memory through the forward pass".into(),
            x_label: "node index".into(),
            y_label: "memory (bytes)".into(),
            series: vec![
                ("predicted live bytes".into(), pred),
                ("measured RSS".into(), rss),
            ],
            marks: vec![
                (0.0, "down".into()),
                (60.0, "mid".into()),
                (64.0, "up 1".into()),
                (120.0, "up 2".into()),
                (500.0, "outside".into()),
            ],
        }
    }

    fn roof() -> Roofline {
        Roofline {
            title: "Roofline".into(),
            roofs: vec![
                ("H200".into(), 989e12, 4.8e12),
                ("laptop CPU".into(), 1.5e12, 80e9),
            ],
            points: vec![
                ("conv 3x3".into(), 180.0, 4e14),
                ("attention".into(), 40.0, 1e14),
                ("norm & act".into(), 0.5, 1e11),
            ],
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(si(1.2e12), "1.2 T");
        assert_eq!(si(3.5e11), "350 G");
        assert_eq!(si(4500.0), "4.5 k");
        assert_eq!(si(999.96), "1 k");
        assert_eq!(si(12.0), "12");
        assert_eq!(si(0.25), "0.25");
        assert_eq!(si(0.0), "0");
        assert_eq!(si(-2e6), "-2 M");
        assert_eq!(si(1.5e-5), "1.5e-5");
        assert_eq!(si(f64::NAN), "NaN");
        assert_eq!(si_unit(989e12, "FLOP/s"), "989 TFLOP/s");
        assert_eq!(si_unit(12.0, "s"), "12 s");
        assert_eq!(bytes(4.0 * KIB.powi(3)), "4 GiB");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(percent(0.425), "42.5%");
        assert_eq!(percent(0.6000000000000001), "60%");
        assert_eq!(color_hex(0), "#0072B2");
    }

    #[test]
    fn ticks_are_nice() {
        let a = Axis::fit([0.0, 0.93], false, true, Fmt::Si, 0.05);
        assert_eq!(a.lo, 0.0);
        assert!(a.hi >= 0.93);
        let (t, _) = a.ticks(Y_TICKS);
        assert!(t.len() >= 3 && t[0] == 0.0, "{t:?}");
        // Bytes step in binary units.
        let b = Axis::fit([0.0, 3.0 * KIB.powi(3)], false, true, Fmt::Bytes, 0.05);
        let labels: Vec<String> = b
            .ticks(Y_TICKS)
            .0
            .iter()
            .map(|&t| b.label(Fmt::Bytes, t))
            .collect();
        assert!(labels.contains(&"1 GiB".to_string()), "{labels:?}");
        // Log: decades over a wide range, finer steps over a narrow one.
        let l = Axis::fit([1.0, 1e6], true, false, Fmt::Si, 0.04);
        let labels: Vec<String> = l
            .ticks(X_TICKS)
            .0
            .iter()
            .map(|&t| l.label(Fmt::Si, t))
            .collect();
        assert!(
            labels.contains(&"1 k".to_string()) && labels.contains(&"1 M".to_string()),
            "{labels:?}"
        );
        let n = Axis::fit([256.0, 1024.0], true, false, Fmt::Si, 0.04);
        assert!(n.ticks(X_TICKS).0.len() >= 3, "{:?}", n.ticks(X_TICKS));
        let tiny = Axis::fit([9.0, 11.0], true, false, Fmt::Si, 0.04);
        assert!(
            tiny.ticks(X_TICKS).0.len() >= 2,
            "{:?}",
            tiny.ticks(X_TICKS)
        );
        let huge = Axis::fit([1e-200, 1e200], true, false, Fmt::Si, 0.04);
        let (b, _) = huge.ticks(X_TICKS);
        assert!((2..=12).contains(&b.len()), "{b:?}");
    }

    #[test]
    fn stacked_bars_typical() {
        let c = stacked();
        let svg = stacked_bars(&c);
        check(
            &svg,
            &[
                "Time by op class",
                "share of time (%)",
                "sd15",
                "sd15 flash",
                "svd",
                "Conv",
                "Attention",
                "GEMM & <norm>",
                "Temporal",
                "100%",
            ],
        );
        assert!(svg.contains("GEMM &amp; &lt;norm&gt;"));
        assert!(!svg.contains("GEMM & <norm>"));
        // The legend names each segment once (bars carry percentages, not names).
        assert_eq!(svg.matches(">\nAttention\n</text>").count(), 1);
        assert_eq!(svg.matches(">\nConv\n</text>").count(), 1);
        // A segment keeps its colour across bars: Attention (second colour) fills its swatch
        // and its segment in each of the three bars; Temporal (fourth) its swatch and one bar.
        let fills = |hex: &str| {
            svg.split("<rect")
                .filter(|r| r.split('>').next().unwrap_or("").contains(hex))
                .count()
        };
        assert_eq!(fills("fill=\"#E69F00\""), 4);
        assert_eq!(fills("fill=\"#D55E00\""), 2);
        assert!(svg.contains("font-family=\"sans-serif\""));
    }

    #[test]
    fn stacked_bars_many_long_labels() {
        let bars = (0..20)
            .map(|i| {
                (
                    format!("model number {i} flash attention"),
                    vec![("Conv".to_string(), 0.5), ("Other".to_string(), 0.5)],
                )
            })
            .collect();
        let c = StackedBars {
            title: "Twenty".into(),
            y_label: "share (%)".into(),
            bars,
        };
        let svg = stacked_bars(&c);
        check(&svg, &["model number 19", "flash attention"]);
        assert!(svg.contains("rotate(270"), "long labels are rotated");
    }

    #[test]
    fn grouped_bars_typical() {
        let svg = grouped_bars(&grouped());
        check(
            &svg,
            &[
                "Flash-attention speedup",
                "speedup (×)",
                "SD",
                "Video",
                "sd15",
                "sdxl",
                "svd",
                "a<b & c",
                "no speedup",
            ],
        );
        assert!(svg.contains("a&lt;b &amp; c"));
    }

    #[test]
    fn lines_typical_linear_and_log() {
        for log in [false, true] {
            let c = lines_data(log);
            let svg = lines(&c);
            check(
                &svg,
                &[
                    "Time vs image size",
                    "image side (px)",
                    "time (s)",
                    "Conv",
                    "Attention",
                ],
            );
        }
    }

    #[test]
    fn histogram_typical() {
        let svg = histogram(&hist());
        check(
            &svg,
            &[
                "Attention sequence lengths",
                "sequence length (tokens)",
                "FLOPs",
                "64",
                "256",
                "1024",
                "4096",
                "9 T",
            ],
        );
    }

    #[test]
    fn profile_typical() {
        let svg = profile(&prof());
        check(
            &svg,
            &[
                "Memory through the forward pass",
                "node index",
                "memory (bytes)",
                "predicted live bytes",
                "measured RSS",
                "down",
                "mid",
                "up 1",
                "up 2",
                "GiB",
            ],
        );
        assert!(
            !svg.contains(">\noutside\n"),
            "marks outside the range are skipped"
        );
    }

    #[test]
    fn roofline_typical() {
        let svg = roofline(&roof());
        check(
            &svg,
            &[
                "Roofline",
                "H200",
                "laptop CPU",
                "989 TFLOP/s",
                "conv 3x3",
                "attention",
                "norm & act",
                "arithmetic intensity (FLOP/byte)",
            ],
        );
    }

    #[test]
    fn empty_data_says_no_data() {
        let svgs = [
            stacked_bars(&StackedBars::default()),
            grouped_bars(&GroupedBars::default()),
            lines(&Lines::default()),
            histogram(&Histogram::default()),
            profile(&Profile::default()),
            roofline(&Roofline::default()),
            // Present but empty inside.
            stacked_bars(&StackedBars {
                bars: vec![("a".into(), vec![])],
                ..Default::default()
            }),
            grouped_bars(&GroupedBars {
                groups: vec![("g".into(), vec![])],
                reference: Some(("ref".into(), 1.0)),
                ..Default::default()
            }),
            lines(&Lines {
                series: vec![("s".into(), vec![])],
                ..Default::default()
            }),
        ];
        for svg in &svgs {
            no_error(svg);
            assert!(svg.contains("no data"));
        }
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let mut s = stacked();
        s.bars[0].1[0].1 = nan;
        s.bars[1].1[1].1 = inf;
        s.bars.push(("all nan".into(), vec![("Conv".into(), nan)]));
        check(&stacked_bars(&s), &["all nan", "Attention"]);

        let mut g = grouped();
        g.groups[0].1[0].1 = nan;
        g.groups[1].1[0].1 = -inf;
        g.reference = Some(("ref".into(), nan));
        check(&grouped_bars(&g), &["sd15", "sdxl"]);

        let mut l = lines_data(false);
        l.series[0].1.push((nan, 1.0));
        l.series[0].1.push((2.0, inf));
        l.series[1].1 = vec![(nan, nan), (inf, -inf)];
        check(&lines(&l), &["Time vs image size"]);

        let mut h = hist();
        h.bins[1].1 = nan;
        check(&histogram(&h), &["256"]);
        let all_nan = Histogram {
            bins: vec![("x".into(), nan)],
            ..hist()
        };
        assert!(histogram(&all_nan).contains("no data"));

        let mut p = prof();
        p.series[0].1[3] = (nan, 1.0);
        p.series[1].1[2] = (5.0, inf);
        p.marks.push((nan, "nan mark".into()));
        check(&profile(&p), &["predicted live bytes"]);

        let mut r = roof();
        r.roofs.push(("bad".into(), nan, 1e12));
        r.points.push(("nan point".into(), nan, 1e12));
        r.points.push(("inf point".into(), 10.0, inf));
        let svg = roofline(&r);
        check(&svg, &["H200"]);
        assert!(!svg.contains("nan point") && !svg.contains("inf point"));
    }

    #[test]
    fn single_points() {
        check(
            &stacked_bars(&StackedBars {
                title: "one".into(),
                y_label: "%".into(),
                bars: vec![("only".into(), vec![("Conv".into(), 1.0)])],
            }),
            &["only", "Conv"],
        );
        check(
            &grouped_bars(&GroupedBars {
                title: "one".into(),
                y_label: "x".into(),
                groups: vec![("g".into(), vec![("m".into(), 0.0)])],
                reference: None,
            }),
            &["m"],
        );
        for log in [false, true] {
            check(
                &lines(&Lines {
                    title: "one".into(),
                    log_x: log,
                    log_y: log,
                    series: vec![("s".into(), vec![(3.0, 7.0)])],
                    ..Default::default()
                }),
                &["one"],
            );
        }
        check(
            &histogram(&Histogram {
                title: "one".into(),
                bins: vec![("b".into(), 0.0)],
                ..Default::default()
            }),
            &["b"],
        );
        check(
            &profile(&Profile {
                title: "one".into(),
                series: vec![("s".into(), vec![(0.0, 5.0)])],
                marks: vec![(0.0, "m".into())],
                ..Default::default()
            }),
            &["one", "m"],
        );
        check(
            &roofline(&Roofline {
                title: "one".into(),
                roofs: vec![],
                points: vec![("p".into(), 10.0, 1e12)],
            }),
            &["p"],
        );
        check(
            &roofline(&Roofline {
                title: "roof only".into(),
                roofs: vec![("hw".into(), 1e12, 1e11)],
                points: vec![],
            }),
            &["hw"],
        );
    }

    #[test]
    fn log_axes_ignore_values_at_or_below_zero() {
        let c = Lines {
            title: "log".into(),
            x_label: "frames".into(),
            y_label: "share".into(),
            log_x: true,
            log_y: true,
            series: vec![
                (
                    "a".into(),
                    vec![(0.0, 1.0), (-1.0, 2.0), (4.0, 0.0), (8.0, 0.5), (16.0, 0.7)],
                ),
                ("b".into(), vec![(0.0, 0.0)]),
            ],
        };
        check(&lines(&c), &["log"]);
        let only_zero = Lines {
            series: vec![("z".into(), vec![(0.0, 0.0), (-3.0, 1.0)])],
            ..c
        };
        let svg = lines(&only_zero);
        no_error(&svg);
        assert!(svg.contains("no data"));
        let r = Roofline {
            title: "r".into(),
            roofs: vec![("zero".into(), 0.0, 1e12), ("hw".into(), 1e12, 1e11)],
            points: vec![
                ("z".into(), 0.0, 1e12),
                ("n".into(), 4.0, -1.0),
                ("ok".into(), 2.0, 1e11),
            ],
        };
        check(&roofline(&r), &["hw", "ok"]);
    }

    #[test]
    fn extreme_values_do_not_break() {
        for v in [f64::MAX, f64::MIN_POSITIVE, 1e-300, 1e299, -1e299, 5e-324] {
            let l = Lines {
                title: "x".into(),
                series: vec![("s".into(), vec![(v, v), (1.0, 1.0)])],
                ..Default::default()
            };
            no_error(&lines(&l));
            no_error(&lines(&Lines {
                log_x: true,
                log_y: true,
                ..l
            }));
            no_error(&histogram(&Histogram {
                bins: vec![("a".into(), v), ("b".into(), 1.0)],
                ..Default::default()
            }));
            no_error(&grouped_bars(&GroupedBars {
                groups: vec![("g".into(), vec![("a".into(), v), ("b".into(), -v)])],
                reference: Some(("r".into(), v)),
                ..Default::default()
            }));
            no_error(&stacked_bars(&StackedBars {
                bars: vec![("a".into(), vec![("s".into(), v)])],
                ..Default::default()
            }));
            no_error(&roofline(&Roofline {
                roofs: vec![("r".into(), v, 1.0), ("q".into(), 1.0, v)],
                points: vec![("p".into(), v, v)],
                ..Default::default()
            }));
            no_error(&profile(&Profile {
                series: vec![("s".into(), vec![(0.0, v), (1.0, 0.0)])],
                marks: vec![(0.5, "m".into())],
                ..Default::default()
            }));
        }
    }

    #[test]
    fn error_svg_is_well_formed() {
        let svg = error_svg("a < b & c", "broken \"thing\"");
        check_xml(&svg);
        assert!(svg.contains("a &lt; b &amp; c"));
    }
}
