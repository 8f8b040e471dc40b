//! Showing a learned prompt as an image (the paper's figure 10).

use std::path::Path;

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

use crate::error::{PromptError, Result};
use crate::space::Phase;
use crate::visual_prompt::VisualPrompt;

/// Maps a perturbation to 8-bit pixels with one symmetric scale for all channels:
/// `pixel = round(255 * (0.5 + 0.5 * delta / max|delta|))`. Zero (everything outside the prompt)
/// is mid-grey (128), the largest positive value is 255 and the largest negative value 0; colours
/// keep their relative strength because the channels share the scale. An all-zero prompt is
/// uniformly grey.
///
/// Returns the pixels in `[C, H, W]` order and the scale `max|delta|`.
pub fn symmetric_scale(delta: &[f32]) -> (Vec<u8>, f32) {
    let scale = delta.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let pixels = delta
        .iter()
        .map(|&v| {
            let unit = if scale > 0.0 { 0.5 + 0.5 * v / scale } else { 0.5 };
            (255.0 * unit).round().clamp(0.0, 255.0) as u8
        })
        .collect();
    (pixels, scale)
}

/// Writes the perturbation a prompt adds at evaluation (`Phase::Eval { batch: 0 }`) as a PNG, with
/// [`symmetric_scale`]. One- and three-channel prompts become grey and RGB images; other channel
/// counts show their first channel in grey. Returns the scale, `max|delta|`, so a caption can
/// state it.
pub fn save_png<P: VisualPrompt>(prompt: &P, path: impl AsRef<Path>) -> Result<f32> {
    let path = path.as_ref();
    let delta = prompt.perturbation(Phase::Eval { batch: 0 });
    let [_, channels, height, width] = delta.dims();
    let values = delta
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("float tensors convert to f32");
    let (pixels, scale) = symmetric_scale(&values);
    let plane = height * width;
    let image = if channels == 3 {
        let interleaved = (0..plane)
            .flat_map(|k| [pixels[k], pixels[plane + k], pixels[2 * plane + k]])
            .collect();
        DynamicImage::ImageRgb8(
            RgbImage::from_raw(width as u32, height as u32, interleaved).expect("sized buffer"),
        )
    } else {
        let first = pixels[..plane].to_vec();
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(width as u32, height as u32, first).expect("sized buffer"),
        )
    };
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|source| PromptError::Png {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(scale)
}
