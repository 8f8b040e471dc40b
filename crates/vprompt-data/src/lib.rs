//! Datasets and the input pipeline for visual prompting: read once, resize once, batch fast.
//!
//! # Feature flags
//! - `flex` (default), `wgpu`, `cuda`, `cpu`: backends, forwarded to burn (batches are created on
//!   the device you pass).
//!
//! # Flow
//! 1. **Read** a [`Dataset`] (decoded `u8` images of any size, labels, class names):
//!    [`fashion_mnist`] / [`mnist`] / [`read_idx`] (IDX, gzip or raw), [`cifar10`] / [`cifar100`]
//!    (binary batches), [`image_folder`] (one sub-folder per class, PNG / JPEG), [`csv_list`]
//!    (`path,label`). Official train/test splits come back as [`Splits`]. Unreadable files are a
//!    typed error naming the file, or, with [`OnError::Skip`], left out and listed.
//! 2. **Split**: [`Dataset::split_validation`] (seeded, stratified: select models on it, never on
//!    the test split) and [`Dataset::few_shot`] (seeded, N per class).
//! 3. **Prepare** once to the backbone's input size: [`prepare`] / [`prepare_cached`] (resize,
//!    optional centre crop, kept as `u8`; grey stays one plane until batching).
//! 4. **Batch**: [`BatchLoader`], seeded shuffling as a function of `(seed, epoch)` and background
//!    prefetch; batches are `[B, 3, H, W]` pixels in `[0, 1]`.
//!
//! ```
//! use std::sync::Arc;
//! use burn::prelude::*;
//! use vprompt_data::*;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/fashion-mnist");
//! let splits = fashion_mnist(dir)?;                        // 1,000 train, 1,000 test (fixture)
//! let (train, valid) = splits.train.split_validation(0.1, 42)?;
//! let train = Arc::new(prepare(&train, &Preprocess::stretch([64, 64]))?);
//! let loader = BatchLoader::new(train, 32)?.shuffled(0);
//! let batch = loader.epoch(0, 0, &Device::flex()).next().unwrap();
//! assert_eq!(batch.images.dims(), [32, 3, 64, 64]);
//! assert_eq!(valid.len(), 100);
//! # Ok::<(), DataError>(())
//! ```

mod batch;
mod cifar;
mod dataset;
mod error;
mod folder;
mod idx;
mod prepare;
mod resample;

pub use batch::{Batch, BatchIter, BatchLoader, HostBatch};
pub use cifar::{CIFAR10_CLASSES, CifarFormat, cifar10, cifar100, read_cifar_file};
pub use dataset::{Dataset, OnError, RawImage, SkippedFile, Splits};
pub use error::{DataError, Result};
pub use folder::{MAX_DECODED_BYTES, csv_list, decode_image, image_folder, save_image};
pub use idx::{FASHION_MNIST_CLASSES, MNIST_CLASSES, fashion_mnist, mnist, read_idx, read_idx_dir};
pub use prepare::{
    Filter, Fit, MAX_RESIZED_PIXELS, PreparedDataset, Preprocess, cache_key, prepare, prepare_cached,
    prepare_cached_with, prepare_with,
};
