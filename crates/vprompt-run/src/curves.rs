//! A run's curves, drawn from the engine's epoch records ([`Curves`], [`draw_run_curves`]), and
//! the line plots beneath them and experiment figures ([`line_plot`]).
//!
//! Line plots are PNG, through `plotters` with a font compiled into the binary (Ubuntu Light, from
//! egui's `epaint_default_fonts`), so drawing works offline and on machines without fonts: a
//! title, axis labels, tick labels, and a legend naming each line.
//!
//! Text is set by [`TextBackend`] around plotters' bitmap backend: plotters 0.3.7's `ab_glyph`
//! renderer places each glyph at the pen position without the glyph's own offset (its side
//! bearing), which left gaps inside words ("ep och").

use std::path::Path;
use std::sync::{LazyLock, Once};

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingBackend, DrawingErrorKind};

use vprompt_train::{EpochObserver, EpochRecord};

use crate::error::{Result, RunError, io};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
const FONT: &str = "sans-serif";
/// Line colours, in series order (matplotlib's first four).
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The colour of the `i`-th series of a [`line_plot`], in words (for reports that list the
/// lines beside the figure).
pub fn color_name(i: usize) -> &'static str {
    ["blue", "red", "green", "purple"][i % COLORS.len()]
}

/// One line: a legend name and `(x, y)` points (non-finite points are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// An axis: its label, and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// What the axis shows, with its unit.
    pub label: String,
    /// Logarithmic (points at `x <= 0` are left out).
    pub log: bool,
    /// Whole numbers only (epochs): ticks at integers.
    pub integer: bool,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            log: false,
            integer: false,
        }
    }

    /// A linear axis of whole numbers (ticks at integers).
    pub fn integer(label: impl Into<String>) -> Self {
        Self {
            integer: true,
            ..Self::linear(label)
        }
    }

    /// A logarithmic axis.
    pub fn log(label: impl Into<String>) -> Self {
        Self {
            log: true,
            ..Self::linear(label)
        }
    }
}

static TEXT_FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT).expect("the bundled font parses")
});

/// Plotters' bitmap backend with text set by `ab_glyph` directly (see the module docs).
struct TextBackend<'a>(BitMapBackend<'a>);

/// The glyphs of `text` at `size` px: each glyph's coverage at pixel offsets from the text's top
/// left corner, and the text's width and height.
fn set_text(text: &str, size: f64, mut pixel: impl FnMut(i32, i32, f32)) -> (i32, i32) {
    // The same scale as plotters' own renderer, so sizes match what it lays out.
    let font = TEXT_FONT.as_scaled(PxScale::from(size as f32));
    let (mut pen, mut previous) = (0.0f32, None);
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(previous) = previous {
            pen += font.kern(previous, id);
        }
        let glyph = id.with_scale_and_position(font.scale(), point(pen, font.ascent()));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                pixel(
                    bounds.min.x as i32 + x as i32,
                    bounds.min.y as i32 + y as i32,
                    coverage,
                )
            });
        }
        pen += font.h_advance(id);
        previous = Some(id);
    }
    (pen.ceil() as i32, (font.ascent() - font.descent()).ceil() as i32)
}

impl DrawingBackend for TextBackend<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vertices, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> std::result::Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        let (width, height) = set_text(text, style.size(), |_, _, _| {});
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        let mut result = Ok(());
        set_text(text, style.size(), |x, y, coverage| {
            let (x, y) = transform.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if result.is_ok() && x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h && coverage > 0.0 {
                let color = BackendColor {
                    alpha: color.alpha * coverage.min(1.0) as f64,
                    rgb: color.rgb,
                };
                result = self.0.draw_pixel((x, y), color);
            }
        });
        result
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> std::result::Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (width, height) = set_text(text, style.size(), |_, _, _| {});
        Ok((width as u32, height as u32))
    }
}

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .unwrap_or_else(|_| panic!("the bundled font parses"));
    });
}

fn plot_error(path: &Path, error: impl std::fmt::Display) -> RunError {
    RunError::Io {
        action: "draw",
        path: path.to_path_buf(),
        source: std::io::Error::other(error.to_string()),
    }
}

/// The range `[lo, hi]` of `values`, widened when empty or flat.
fn span(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    match (lo.is_finite(), log) {
        (false, false) => (0.0, 1.0),
        (false, true) => (1.0, 10.0),
        (true, false) if hi - lo < 1e-12 => (lo - 0.5, hi + 0.5),
        (true, true) if hi / lo < 1.0 + 1e-9 => (lo / 2.0, hi * 2.0),
        (true, false) => {
            let pad = 0.05 * (hi - lo);
            (lo - pad, hi + pad)
        }
        (true, true) => (lo / 1.2, hi * 1.2),
    }
}

/// Draws `series` (`x` against `y`) under `title` and writes a 640 x 400 PNG to `path`.
pub fn line_plot(path: &Path, title: &str, x: &Axis, y: &Axis, series: &[Series]) -> Result<()> {
    register_font();
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|&(a, b)| a.is_finite() && b.is_finite() && (!x.log || a > 0.0))
                .collect()
        })
        .collect();
    let all = || points.iter().flatten();
    let (x0, x1) = span(all().map(|p| p.0), x.log);
    let (y0, y1) = span(all().map(|p| p.1), false);
    let legend = quietest_corner(all().copied(), (x0, x1, x.log), (y0, y1));
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = TextBackend(BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT))).into_drawing_area();
        let drawn = if x.log {
            draw(
                &root,
                title,
                (x0..x1).log_scale(),
                y0..y1,
                x,
                y,
                series,
                &points,
                legend,
                (x0, x1),
            )
        } else {
            draw(
                &root,
                title,
                x0..x1,
                y0..y1,
                x,
                y,
                series,
                &points,
                legend,
                (x0, x1),
            )
        };
        drawn.map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).expect("a buffer of the image's size");
    // Replaced atomically: two processes merging an experiment's shards may draw it at once.
    vprompt_core::fs::replace_with(path, |tmp| {
        image
            .save_with_format(tmp, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .map_err(io("write", path))
}

/// Draws a run's curves from its epoch records into `dir`: `loss.png` and `accuracy.png`
/// (training and validation against epochs) and, for black-box runs,
/// `accuracy-vs-queries.png` (validation top-1 against training queries on a log axis).
pub fn draw_run_curves(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let series = |name: &str, f: &dyn Fn(&EpochRecord) -> Option<f64>| Series {
        name: name.into(),
        points: records
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect(),
    };
    let epochs = Axis::integer("epoch");
    line_plot(
        &dir.join("loss.png"),
        "Loss",
        &epochs,
        &Axis::linear("mean cross-entropy"),
        &[
            series("training", &|r| Some(r.train_loss)),
            series("validation", &|r| r.valid_loss),
        ],
    )?;
    line_plot(
        &dir.join("accuracy.png"),
        "Accuracy",
        &epochs,
        &Axis::linear("top-1 accuracy (%)"),
        &[
            series("training", &|r| Some(100.0 * r.train_top1)),
            series("validation", &|r| r.valid_top1.map(|v| 100.0 * v)),
        ],
    )?;
    if records.iter().any(|r| r.queries.is_some()) {
        let points = records
            .iter()
            .filter_map(|r| Some((r.queries? as f64, 100.0 * r.valid_top1?)))
            .collect();
        line_plot(
            &dir.join("accuracy-vs-queries.png"),
            "Validation accuracy against queries",
            &Axis::log("training queries"),
            &Axis::linear("validation top-1 (%)"),
            &[Series {
                name: "validation top-1".into(),
                points,
            }],
        )?;
    }
    Ok(())
}

/// The engine's observer that redraws a run's curves ([`draw_run_curves`]) in its directory
/// after every epoch; what every [`Run`](crate::Run) trains with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Curves;

impl EpochObserver for Curves {
    fn epoch_recorded(
        &self,
        history: &[EpochRecord],
        run_dir: Option<&Path>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match run_dir {
            Some(dir) => Ok(draw_run_curves(dir, history)?),
            None => Ok(()),
        }
    }
}

/// The corner of the plot (a quarter of each axis) with the fewest points, for the legend.
fn quietest_corner(
    points: impl Iterator<Item = (f64, f64)>,
    (x0, x1, log): (f64, f64, bool),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let fraction = |v: f64, lo: f64, hi: f64| (v - lo) / (hi - lo);
    let mut counts = [0usize; 4]; // upper right, upper left, lower right, lower left
    for (x, y) in points {
        let fx = if log {
            fraction(x.ln(), x0.ln(), x1.ln())
        } else {
            fraction(x, x0, x1)
        };
        let fy = fraction(y, y0, y1);
        let (right, left, upper, lower) = (fx > 0.6, fx < 0.4, fy > 0.7, fy < 0.3);
        for (k, inside) in [right && upper, left && upper, right && lower, left && lower]
            .into_iter()
            .enumerate()
        {
            counts[k] += usize::from(inside);
        }
    }
    let corners = [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ];
    let best = (0..4).min_by_key(|&k| counts[k]).expect("four corners");
    corners[best].clone()
}

#[allow(clippy::too_many_arguments)]
fn draw<X>(
    root: &DrawingArea<TextBackend<'_>, Shift>,
    title: &str,
    x_range: X,
    y_range: std::ops::Range<f64>,
    x: &Axis,
    y: &Axis,
    series: &[Series],
    points: &[Vec<(f64, f64)>],
    legend: SeriesLabelPosition,
    x_span: (f64, f64),
) -> std::result::Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| e.to_string())?;
    let whole = |v: &f64| format!("{v:.0}");
    let decimal = |v: &f64| {
        let magnitude = v.abs();
        if magnitude != 0.0 && !(1e-2..1e5).contains(&magnitude) {
            format!("{v:.0e}")
        } else if magnitude >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
    };
    let mut mesh = chart.configure_mesh();
    if x.integer {
        // One label per whole number (at most 10): plotters places labels at round values, so
        // with as many labels as integers in the range they fall on the integers.
        let (lo, hi) = (x_span.0.ceil(), x_span.1.floor());
        mesh.x_labels(((hi - lo) as usize + 1).clamp(2, 10))
            .x_label_formatter(&whole);
    } else {
        mesh.x_label_formatter(&decimal);
    }
    mesh.y_label_formatter(&decimal)
        .x_desc(x.label.as_str())
        .y_desc(y.label.as_str())
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(246, 246, 246))
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, (s, points)) in series.iter().zip(points).enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name.as_str())
            .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 18, py)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(legend)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
