//! CIFAR-10 and CIFAR-100 binary batches ("binary version" from the CIFAR page).
//!
//! A record is the label byte(s) (CIFAR-10: the label; CIFAR-100: coarse then fine label) followed
//! by 3,072 bytes: the 32 x 32 red plane, then green, then blue.

use std::path::Path;

use crate::dataset::{Dataset, RawImage, Splits};
use crate::error::{DataError, Result, io};

/// CIFAR-10's class names (`batches.meta.txt`), by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const PLANE: usize = 32 * 32;

/// Which CIFAR binary format a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarFormat {
    /// One label byte per record.
    Cifar10,
    /// Coarse and fine label bytes per record; the fine label (100 classes) is used.
    Cifar100,
}

impl CifarFormat {
    fn label_bytes(self) -> usize {
        match self {
            CifarFormat::Cifar10 => 1,
            CifarFormat::Cifar100 => 2,
        }
    }
}

/// Reads one CIFAR binary batch file with the given class names.
pub fn read_cifar_file(path: impl AsRef<Path>, format: CifarFormat, classes: &[String]) -> Result<Dataset> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io(path))?;
    let record = format.label_bytes() + 3 * PLANE;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of {record}-byte {format:?} records",
                bytes.len()
            ),
        });
    }
    let mut images = Vec::with_capacity(bytes.len() / record);
    let mut labels = Vec::with_capacity(bytes.len() / record);
    for (index, chunk) in bytes.chunks_exact(record).enumerate() {
        let label = chunk[format.label_bytes() - 1] as usize;
        if label >= classes.len() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: label as i64,
                classes: classes.len(),
            });
        }
        let planes = &chunk[format.label_bytes()..];
        let pixels = (0..PLANE)
            .flat_map(|k| [planes[k], planes[PLANE + k], planes[2 * PLANE + k]])
            .collect();
        images.push(RawImage {
            width: 32,
            height: 32,
            channels: 3,
            pixels,
        });
        labels.push(label);
    }
    Ok(Dataset {
        source: path.display().to_string(),
        images,
        labels,
        classes: classes.to_vec(),
        skipped: Vec::new(),
    })
}

fn concat(parts: Vec<Dataset>, source: String) -> Dataset {
    let classes = parts[0].classes.clone();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for part in parts {
        images.extend(part.images);
        labels.extend(part.labels);
    }
    Dataset {
        source,
        images,
        labels,
        classes,
        skipped: Vec::new(),
    }
}

/// The class names in `path` (one per line), which must be `expected` many: a short or long names
/// file is its own error, not a label out of range in the first batch file.
fn class_names(path: &Path, fallback: &[&str], expected: usize) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() != expected {
                return Err(DataError::Format {
                    path: path.to_path_buf(),
                    reason: format!("names {} classes, the dataset has {expected}", names.len()),
                });
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !fallback.is_empty() => {
            Ok(fallback.iter().map(|c| c.to_string()).collect())
        }
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// CIFAR-10 from `cifar-10-batches-bin/` (`data_batch_1.bin` .. `data_batch_5.bin`,
/// `test_batch.bin`, optional `batches.meta.txt`): 50,000 train and 10,000 test images.
pub fn cifar10(dir: impl AsRef<Path>) -> Result<Splits> {
    let dir = dir.as_ref();
    let classes = class_names(
        &dir.join("batches.meta.txt"),
        &CIFAR10_CLASSES,
        CIFAR10_CLASSES.len(),
    )?;
    let train = (1..=5)
        .map(|k| {
            read_cifar_file(
                dir.join(format!("data_batch_{k}.bin")),
                CifarFormat::Cifar10,
                &classes,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Splits {
        train: concat(train, format!("{} (train)", dir.display())),
        test: read_cifar_file(dir.join("test_batch.bin"), CifarFormat::Cifar10, &classes)?,
    })
}

/// CIFAR-100 from `cifar-100-binary/` (`train.bin`, `test.bin`, `fine_label_names.txt`), fine
/// labels: 50,000 train and 10,000 test images of 100 classes.
pub fn cifar100(dir: impl AsRef<Path>) -> Result<Splits> {
    let dir = dir.as_ref();
    let classes = class_names(&dir.join("fine_label_names.txt"), &[], 100)?;
    Ok(Splits {
        train: read_cifar_file(dir.join("train.bin"), CifarFormat::Cifar100, &classes)?,
        test: read_cifar_file(dir.join("test.bin"), CifarFormat::Cifar100, &classes)?,
    })
}
