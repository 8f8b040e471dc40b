//! Small line plots of training curves as PNG, drawn directly (no plotting dependency): axes, a
//! light grid, one coloured polyline per series with its legend swatch, and the value range written
//! with a built-in 3 x 5 pixel font.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, TrainError};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
const LEFT: u32 = 60;
const RIGHT: u32 = 20;
const TOP: u32 = 30;
const BOTTOM: u32 = 40;
const COLORS: [[u8; 3]; 4] = [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189]];

/// The colour of the `i`-th series of a [`line_plot`], in words (the PNG has no text legend, so
/// reports name the lines by colour).
pub fn color_name(i: usize) -> &'static str {
    ["blue", "red", "green", "purple"][i % COLORS.len()]
}

/// One curve: a name and `(x, y)` points (non-finite `y` values are skipped).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// 3 x 5 glyphs for digits and the few characters the axis labels need; each row is 3 bits.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

/// Writes `text` with its top-left corner at `(x, y)`, each font pixel `scale` wide.
fn text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32) {
    for (i, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (x + (i as u32 * 4 + col) * scale + dx, y + r as u32 * scale + dy);
                            if px < WIDTH && py < HEIGHT {
                                img.put_pixel(px, py, Rgb([0, 0, 0]));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3]) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for k in 0..=steps {
        let t = k as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < WIDTH && (py as u32) < HEIGHT {
                img.put_pixel(px as u32, py as u32, Rgb(color));
            }
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws `series` against the x axis (epochs) and writes a PNG.
pub fn line_plot(path: &Path, series: &[Series]) -> Result<()> {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let finite: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &finite {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if finite.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let (pw, ph) = ((WIDTH - LEFT - RIGHT) as f64, (HEIGHT - TOP - BOTTOM) as f64);
    let to_px = |(x, y): (f64, f64)| {
        (
            LEFT as f64 + (x - x0) / (x1 - x0) * pw,
            TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph,
        )
    };
    for k in 0..=4 {
        let y = TOP as f64 + ph * k as f64 / 4.0;
        line(&mut img, (LEFT as f64, y), (LEFT as f64 + pw, y), [225, 225, 225]);
    }
    line(
        &mut img,
        (LEFT as f64, TOP as f64),
        (LEFT as f64, TOP as f64 + ph),
        [0, 0, 0],
    );
    line(
        &mut img,
        (LEFT as f64, TOP as f64 + ph),
        (LEFT as f64 + pw, TOP as f64 + ph),
        [0, 0, 0],
    );
    text(&mut img, 4, TOP - 4, &label(y1), 2);
    text(&mut img, 4, HEIGHT - BOTTOM - 8, &label(y0), 2);
    text(&mut img, LEFT, HEIGHT - BOTTOM + 8, &label(x0), 2);
    text(&mut img, WIDTH - RIGHT - 40, HEIGHT - BOTTOM + 8, &label(x1), 2);
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        for pair in points.windows(2) {
            line(&mut img, to_px(pair[0]), to_px(pair[1]), color);
        }
        if let [only] = points.as_slice() {
            let (x, y) = to_px(*only);
            line(&mut img, (x - 2.0, y), (x + 2.0, y), color);
        }
        // Legend: a swatch per series, in series order, top right.
        let y = TOP as f64 + 6.0 + 10.0 * k as f64;
        for dy in 0..3 {
            line(
                &mut img,
                (WIDTH as f64 - 120.0, y + dy as f64),
                (WIDTH as f64 - 100.0, y + dy as f64),
                color,
            );
        }
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}
