//! Preprocessing to a backbone's input, done once: resize (and optionally centre-crop) every image
//! to the input size and keep the result as `u8`, so that epochs never decode or resize again.

use std::io::{Read, Write};
use std::path::Path;

use rayon::prelude::*;
use vprompt_core::{Quiet, Task};

use crate::dataset::{Dataset, RawImage};
use crate::error::{DataError, Result, io};
use crate::resample;

/// Resampling filter, computed exactly as Pillow's `Image.resize` does (see `resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Nearest neighbour (Pillow's `NEAREST`).
    Nearest,
    /// Bilinear, antialiased when shrinking (Pillow's `BILINEAR`).
    Bilinear,
    /// Bicubic, `a = -0.5`, antialiased when shrinking (Pillow's `BICUBIC`, used by CLIP).
    #[default]
    Bicubic,
}

/// How an image is brought to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Resize to exactly the target size (aspect ratio not kept): small square datasets such as
    /// Fashion-MNIST upsampled to 224, as the paper does with CIFAR.
    Stretch,
    /// Resize the shorter side to `shorter_side`, then take the centre `height x width` crop
    /// (torchvision's `Resize(256) -> CenterCrop(224)`; CLIP's `Resize(224) -> CenterCrop(224)`).
    CenterCrop {
        /// Length of the shorter side after resizing, at least the target size.
        shorter_side: usize,
    },
}

/// Preprocessing settings: the result is `[N, 3, height, width]` `u8` pixels (grey datasets are
/// kept as one plane and repeated into RGB when batched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// Target `[height, width]`: the backbone's input size (or a prompt's `input_size`).
    pub size: [usize; 2],
    /// Resampling filter.
    pub filter: Filter,
    /// Stretch or centre-crop.
    pub fit: Fit,
}

impl Preprocess {
    /// Stretch to `size` with a bicubic filter.
    pub fn stretch(size: [usize; 2]) -> Self {
        Self {
            size,
            filter: Filter::Bicubic,
            fit: Fit::Stretch,
        }
    }

    /// Resize the shorter side to `shorter_side`, centre-crop `size`, bicubic.
    pub fn center_crop(size: [usize; 2], shorter_side: usize) -> Self {
        Self {
            size,
            filter: Filter::Bicubic,
            fit: Fit::CenterCrop { shorter_side },
        }
    }

    /// With another filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let [h, w] = self.size;
        if h == 0 || w == 0 {
            return Err(DataError::InvalidConfig(format!(
                "target size {h}x{w} has an empty side"
            )));
        }
        if let Fit::CenterCrop { shorter_side } = self.fit
            && shorter_side < h.max(w)
        {
            return Err(DataError::InvalidConfig(format!(
                "centre crop: the shorter side is resized to {shorter_side}, smaller than the {h}x{w} crop"
            )));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{:?}", self)
    }
}

/// A dataset resized once to a fixed size and kept as `u8`: what batches are cut from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDataset {
    /// Where the data came from.
    pub source: String,
    /// `[height, width]` of every image.
    pub size: [usize; 2],
    /// Stored planes per image: 1 for an all-grey dataset (repeated into RGB when batched), else 3.
    pub channels: usize,
    /// `len * channels * height * width` bytes, each image channels-first (`CHW`).
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl PreparedDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per stored image.
    pub fn image_bytes(&self) -> usize {
        self.channels * self.size[0] * self.size[1]
    }

    /// The stored planes of image `index` (`channels x height x width`).
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.pixels[index * n..(index + 1) * n]
    }
}

/// The most pixels an image is resized to before cropping (64 Mi: 192 MiB of RGB). Centre
/// cropping resizes the whole image so that its shorter side is the crop's; an image of extreme
/// aspect ratio (100,000 x 1) would otherwise ask for gigabytes.
pub const MAX_RESIZED_PIXELS: usize = 1 << 26;

/// `[width, height]` an image is resized to before cropping.
fn resized_size(image: &RawImage, p: &Preprocess) -> (usize, usize) {
    let [h, w] = p.size;
    match p.fit {
        Fit::Stretch => (w, h),
        Fit::CenterCrop { shorter_side } => {
            let scale = shorter_side as f64 / image.width.min(image.height) as f64;
            let (rw, rh) = (
                (image.width as f64 * scale).round() as usize,
                (image.height as f64 * scale).round() as usize,
            );
            (rw.max(w), rh.max(h))
        }
    }
}

fn resize_one(image: &RawImage, p: &Preprocess, channels: usize) -> Vec<u8> {
    let [h, w] = p.size;
    let (rw, rh) = resized_size(image, p);
    let (left, top) = ((rw - w) / 2, (rh - h) / 2);
    let resized = resample::resize(
        &image.pixels,
        [image.width, image.height],
        image.channels,
        [rw, rh],
        p.filter,
    );
    // Crop, and go from interleaved HWC to planar CHW; grey becomes three planes only when the
    // dataset also holds colour images.
    let plane = h * w;
    let mut chw = vec![0u8; channels * plane];
    for y in 0..h {
        for x in 0..w {
            let at = ((top + y) * rw + left + x) * image.channels;
            for c in 0..channels {
                chw[c * plane + y * w + x] = resized[at + c.min(image.channels - 1)];
            }
        }
    }
    chw
}

/// Resizes every image of `dataset` once, in parallel.
pub fn prepare(dataset: &Dataset, preprocess: &Preprocess) -> Result<PreparedDataset> {
    prepare_with(dataset, preprocess, &mut Quiet)
}

/// Images resized between two reports of progress.
const PROGRESS_CHUNK: usize = 256;

/// [`prepare`], advancing `task` by the images resized.
pub fn prepare_with(
    dataset: &Dataset,
    preprocess: &Preprocess,
    task: &mut dyn Task,
) -> Result<PreparedDataset> {
    preprocess.validate()?;
    if dataset.is_empty() {
        return Err(DataError::Empty {
            what: dataset.source.clone(),
        });
    }
    let channels = if dataset.images.iter().all(|i| i.channels == 1) {
        1
    } else {
        3
    };
    for (index, image) in dataset.images.iter().enumerate() {
        let (rw, rh) = resized_size(image, preprocess);
        if rw.saturating_mul(rh) > MAX_RESIZED_PIXELS {
            return Err(DataError::Format {
                path: dataset.source.clone().into(),
                reason: format!(
                    "image {index} is {}x{}: {:?} would resize it to {rw}x{rh} pixels, more than the \
                     bound of {MAX_RESIZED_PIXELS} (MAX_RESIZED_PIXELS); crop it or leave it out",
                    image.width, image.height, preprocess.fit
                ),
            });
        }
    }
    let mut resized: Vec<Vec<u8>> = Vec::with_capacity(dataset.len());
    for chunk in dataset.images.chunks(PROGRESS_CHUNK) {
        resized.par_extend(
            chunk
                .par_iter()
                .map(|image| resize_one(image, preprocess, channels)),
        );
        task.advance(chunk.len() as u64, &String::new);
    }
    Ok(PreparedDataset {
        source: dataset.source.clone(),
        size: preprocess.size,
        channels,
        pixels: resized.concat(),
        labels: dataset.labels.clone(),
        classes: dataset.classes.clone(),
    })
}

/// The cache key: a hash of every pixel, label and class name of the source dataset and of the
/// preprocessing settings. The same data prepared the same way gives the same key wherever it was
/// read from; any change to either gives another.
pub fn cache_key(dataset: &Dataset, preprocess: &Preprocess) -> u64 {
    use vprompt_core::fingerprint::{OFFSET, fnv1a};
    let mut hash = fnv1a(OFFSET, preprocess.describe().as_bytes());
    for (image, &label) in dataset.images.iter().zip(&dataset.labels) {
        for v in [image.width, image.height, image.channels, label] {
            hash = fnv1a(hash, &(v as u64).to_le_bytes());
        }
        hash = fnv1a(hash, &image.pixels);
    }
    for class in &dataset.classes {
        hash = fnv1a(hash, class.as_bytes());
        hash = fnv1a(hash, &[0]);
    }
    hash
}

const CACHE_MAGIC: &[u8; 8] = b"VPCACHE1";

/// [`prepare`] with a disk cache in `dir`: a file named by [`cache_key`] is read if present and
/// intact, else written (through a temporary file and a rename). A damaged cache file is
/// rebuilt, not trusted. Returns the dataset and whether it came from the cache.
pub fn prepare_cached(
    dataset: &Dataset,
    preprocess: &Preprocess,
    dir: impl AsRef<Path>,
) -> Result<(PreparedDataset, bool)> {
    prepare_cached_with(dataset, preprocess, dir, &mut Quiet)
}

/// [`prepare_cached`], advancing `task` by the images resized (none when the cache has them).
pub fn prepare_cached_with(
    dataset: &Dataset,
    preprocess: &Preprocess,
    dir: impl AsRef<Path>,
    task: &mut dyn Task,
) -> Result<(PreparedDataset, bool)> {
    preprocess.validate()?;
    let dir = dir.as_ref();
    let key = cache_key(dataset, preprocess);
    let path = dir.join(format!("{key:016x}.vpcache"));
    if let Some(prepared) = read_cache(&path, key, dataset) {
        return Ok((prepared, true));
    }
    let prepared = prepare_with(dataset, preprocess, task)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_cache(&path, key, &prepared)?;
    Ok((prepared, false))
}

fn write_cache(path: &Path, key: u64, p: &PreparedDataset) -> Result<()> {
    vprompt_core::fs::replace_with(path, |tmp| -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        let mut header = Vec::new();
        header.extend_from_slice(CACHE_MAGIC);
        for v in [
            key,
            p.len() as u64,
            p.size[0] as u64,
            p.size[1] as u64,
            p.channels as u64,
        ] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        file.write_all(&header)?;
        for &label in &p.labels {
            file.write_all(&(label as u32).to_le_bytes())?;
        }
        file.write_all(&p.pixels)?;
        file.flush()
    })
    .map_err(io(path))
}

fn read_cache(path: &Path, key: u64, dataset: &Dataset) -> Option<PreparedDataset> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
    if bytes.len() < 48 || &bytes[..8] != CACHE_MAGIC {
        return None;
    }
    let word =
        |i: usize| u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes")) as usize;
    let (stored_key, n, h, w, c) = (word(0) as u64, word(1), word(2), word(3), word(4));
    if stored_key != key || n != dataset.len() || !(c == 1 || c == 3) {
        return None;
    }
    let labels_end = 48 + 4 * n;
    if bytes.len() != labels_end + n * c * h * w {
        return None;
    }
    let labels: Vec<usize> = bytes[48..labels_end]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .collect();
    if labels != dataset.labels {
        return None;
    }
    Some(PreparedDataset {
        source: dataset.source.clone(),
        size: [h, w],
        channels: c,
        pixels: bytes[labels_end..].to_vec(),
        labels,
        classes: dataset.classes.clone(),
    })
}
