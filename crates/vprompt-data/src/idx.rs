//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.
//!
//! Images: big-endian `u32 0x00000803, u32 n, u32 rows, u32 cols`, then `n * rows * cols` bytes.
//! Labels: `u32 0x00000801, u32 n`, then `n` bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, RawImage, Splits};
use crate::error::{DataError, Result, io};

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// MNIST's class names, by label.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Reads a file, gunzipping it when it starts with the gzip magic number.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(io(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                reason: format!("corrupt gzip data: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(path: &Path, bytes: &[u8], magic: u32, words: usize) -> Result<Vec<usize>> {
    let format = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 * words {
        return Err(format(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        )));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if word(0) != magic {
        return Err(format(format!(
            "IDX magic number is {:#010x}, expected {magic:#010x} ({})",
            word(0),
            if magic == 0x803 {
                "u8 images, 3 dimensions"
            } else {
                "u8 labels, 1 dimension"
            }
        )));
    }
    Ok((1..words).map(|i| word(i) as usize).collect())
}

/// Reads an IDX image file and its label file into a dataset with the given class names.
pub fn read_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>, classes: &[&str]) -> Result<Dataset> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let image_bytes = read_maybe_gz(images)?;
    let dims = header(images, &image_bytes, 0x803, 4)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::Format {
            path: images.to_path_buf(),
            reason: format!("image dimensions {rows}x{cols} have an empty side"),
        });
    }
    // A header's sizes are untrusted: their product may not fit in memory, or in a usize.
    let Some(expected) = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .and_then(|n| n.checked_add(16))
    else {
        return Err(DataError::Format {
            path: images.to_path_buf(),
            reason: format!(
                "header promises {count} images of {rows}x{cols}, more bytes than any file can hold (a damaged header?)"
            ),
        });
    };
    if image_bytes.len() != expected {
        return Err(DataError::Format {
            path: images.to_path_buf(),
            reason: format!(
                "header promises {count} images of {rows}x{cols} ({expected} bytes), the file has {} bytes",
                image_bytes.len()
            ),
        });
    }
    let label_bytes = read_maybe_gz(labels)?;
    let label_count = header(labels, &label_bytes, 0x801, 2)?[0];
    if label_bytes.len() != 8 + label_count {
        return Err(DataError::Format {
            path: labels.to_path_buf(),
            reason: format!(
                "header promises {label_count} labels, the file has {} label bytes",
                label_bytes.len() - 8
            ),
        });
    }
    if label_count != count {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: count,
            labels: labels.to_path_buf(),
            label_count,
        });
    }
    let mut dataset_labels = Vec::with_capacity(count);
    for (index, &label) in label_bytes[8..].iter().enumerate() {
        if label as usize >= classes.len() {
            return Err(DataError::LabelOutOfRange {
                path: labels.to_path_buf(),
                index,
                label: label.into(),
                classes: classes.len(),
            });
        }
        dataset_labels.push(label as usize);
    }
    let images_out = image_bytes[16..]
        .chunks_exact(rows * cols)
        .map(|pixels| RawImage {
            width: cols,
            height: rows,
            channels: 1,
            pixels: pixels.to_vec(),
        })
        .collect();
    Dataset {
        source: images.display().to_string(),
        images: images_out,
        labels: dataset_labels,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        skipped: Vec::new(),
    }
    .validated()
}

/// Finds `<prefix>-images-idx3-ubyte[.gz]` and its labels in `dir`.
fn pair(dir: &Path, prefix: &str) -> Result<(PathBuf, PathBuf)> {
    let find = |kind: &str| -> Result<PathBuf> {
        let stem = format!("{prefix}-{kind}");
        for name in [format!("{stem}.gz"), stem.clone()] {
            let path = dir.join(name);
            if path.exists() {
                return Ok(path);
            }
        }
        Err(DataError::Io {
            path: dir.join(format!("{stem}[.gz]")),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })
    };
    Ok((find("images-idx3-ubyte")?, find("labels-idx1-ubyte")?))
}

/// Reads a directory in the MNIST layout (`train-` and `t10k-images-idx3-ubyte[.gz]` with their
/// labels; the committed fixture's `test-` prefix is accepted too) with the official train/test
/// split.
pub fn read_idx_dir(dir: impl AsRef<Path>, classes: &[&str]) -> Result<Splits> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            reason: "no such directory: MNIST-layout data is a directory holding \
                     train-images-idx3-ubyte[.gz] and its labels (Debian's `dataset-fashion-mnist` \
                     installs Fashion-MNIST in /usr/share/datasets/fashion-mnist)"
                .into(),
        });
    }
    let (train_images, train_labels) = pair(dir, "train")?;
    let (test_images, test_labels) = pair(dir, "t10k").or_else(|_| pair(dir, "test"))?;
    Ok(Splits {
        train: read_idx(train_images, train_labels, classes)?,
        test: read_idx(test_images, test_labels, classes)?,
    })
}

/// Fashion-MNIST from a directory in the MNIST layout, e.g. Debian's `dataset-fashion-mnist`
/// package (`/usr/share/datasets/fashion-mnist`: 60,000 train and 10,000 test images, 28 x 28 grey).
pub fn fashion_mnist(dir: impl AsRef<Path>) -> Result<Splits> {
    read_idx_dir(dir, &FASHION_MNIST_CLASSES)
}

/// MNIST from a directory in the MNIST layout.
pub fn mnist(dir: impl AsRef<Path>) -> Result<Splits> {
    read_idx_dir(dir, &MNIST_CLASSES)
}
