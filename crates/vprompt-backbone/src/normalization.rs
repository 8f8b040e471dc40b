use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// A backbone's input normalisation, `(x - mean) / std` per channel on `[0, 1]` RGB pixels. The
/// backbone owns it: prompts in `Normalized` space are added after it, prompts in `Pixel` space
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics (ResNet, ResNeXt).
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// OpenAI CLIP's statistics: mean (0.48145466, 0.4578275, 0.40821073), std (0.26862954,
    /// 0.26130258, 0.27577711), as the nearest `f32`.
    pub const CLIP: Self = Self {
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
    };

    /// `(x - 0.5) / 0.5`, mapping `[0, 1]` to `[-1, 1]` (EfficientNet-Lite; within 0.4 % of the
    /// TF-Lite models' `(x - 127) / 128`).
    pub const HALF: Self = Self {
        mean: [0.5; 3],
        std: [0.5; 3],
    };

    /// Normalises pixels.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, H, W]` in `[0, 1]`
    /// - output: `[batch, 3, H, W]`
    pub fn apply(&self, pixels: Tensor<4>) -> Tensor<4> {
        if let Some((mean, std)) = self.uniform() {
            return pixels.sub_scalar(mean).div_scalar(std);
        }
        let (scale, shift) = self.affine(&pixels.device());
        pixels * scale + shift
    }

    /// Undoes [`apply`](Self::apply): normalised values back to `[0, 1]` pixels (for showing
    /// prompted images).
    pub fn invert(&self, normalized: Tensor<4>) -> Tensor<4> {
        if let Some((mean, std)) = self.uniform() {
            return normalized.mul_scalar(std).add_scalar(mean);
        }
        let device = normalized.device();
        let std = Tensor::<1>::from_floats(self.std, &device).reshape([1, 3, 1, 1]);
        let mean = Tensor::<1>::from_floats(self.mean, &device).reshape([1, 3, 1, 1]);
        normalized * std + mean
    }

    /// Converts a pixel-space quantity (e.g. a clamp bound) of channel `c` to normalised units.
    pub fn to_normalized(&self, channel: usize, pixel: f32) -> f32 {
        (pixel - self.mean[channel]) / self.std[channel]
    }

    /// Mean and std when all channels share them: a scalar op, no tensors to allocate.
    fn uniform(&self) -> Option<(f32, f32)> {
        let same = |v: [f32; 3]| v[0] == v[1] && v[1] == v[2];
        (same(self.mean) && same(self.std)).then_some((self.mean[0], self.std[0]))
    }

    /// `x / std - mean / std` as `[1, 3, 1, 1]` tensors on `device`.
    fn affine(&self, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let scale = self.std.map(|s| 1.0 / s);
        let shift = [0, 1, 2].map(|c| -self.mean[c] / self.std[c]);
        (
            Tensor::<1>::from_floats(scale, device).reshape([1, 3, 1, 1]),
            Tensor::<1>::from_floats(shift, device).reshape([1, 3, 1, 1]),
        )
    }
}
