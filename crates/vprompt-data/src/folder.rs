//! Image folders (one sub-folder per class) and CSV lists of `path,label`, decoded with the `image`
//! crate (PNG and JPEG).

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, OnError, RawImage, SkippedFile};
use crate::error::{DataError, Result, io};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The most memory decoding one image may allocate (512 MiB): a tiny file whose header claims a
/// huge image is an error naming the file, not an abort.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// Decodes a PNG or JPEG file: grey images stay 1-channel, everything else becomes RGB. A
/// truncated file is an error, and so is one that would need more than [`MAX_DECODED_BYTES`].
pub fn decode_image(path: impl AsRef<Path>) -> Result<RawImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io(path))?;
    // A JPEG cut short decodes "successfully" into made-up grey pixels: its entropy-coded data
    // cannot contain the end-of-image marker, so a file whose tail lacks it is truncated.
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        && !bytes[bytes.len().saturating_sub(4096)..]
            .windows(2)
            .any(|w| w == [0xFF, 0xD9])
    {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "truncated JPEG: no end-of-image marker".into(),
        });
    }
    // Whatever size the header claims, decoding allocates at most MAX_DECODED_BYTES.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let decode_error = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(e.to_string()))?;
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| decode_error(e.to_string()))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (channels, pixels) = match decoded.color() {
        image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8 | image::ColorType::La16 => {
            (1, decoded.into_luma8().into_raw())
        }
        _ => (3, decoded.into_rgb8().into_raw()),
    };
    Ok(RawImage {
        width,
        height,
        channels,
        pixels,
    })
}

/// Writes an RGB image of `[0, 1]` values (clamped) as a PNG file.
///
/// # Shapes
/// - image: `[3, height, width]`
pub fn save_image(image: burn::tensor::Tensor<3>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let [channels, height, width] = image.dims();
    if channels != 3 {
        return Err(DataError::InvalidConfig(format!(
            "an RGB image has 3 channels, this one {channels}"
        )));
    }
    let values = image
        .clamp(0.0, 1.0)
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 pixels");
    let plane = height * width;
    let rgb: Vec<u8> = (0..plane)
        .flat_map(|k| (0..3).map(move |c| (c, k)))
        .map(|(c, k)| (values[c * plane + k] * 255.0).round() as u8)
        .collect();
    image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .expect("a buffer of the image's size")
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// Decodes files in parallel, in order, applying the error policy.
fn decode_all(
    files: Vec<(PathBuf, usize)>,
    on_error: OnError,
) -> Result<(Vec<RawImage>, Vec<usize>, Vec<SkippedFile>)> {
    use rayon::prelude::*;
    let decoded: Vec<(PathBuf, usize, Result<RawImage>)> = files
        .into_par_iter()
        .map(|(path, label)| {
            let image = decode_image(&path);
            (path, label, image)
        })
        .collect();
    let (mut images, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (path, label, image) in decoded {
        match (image, on_error) {
            (Ok(image), _) => {
                images.push(image);
                labels.push(label);
            }
            (Err(e), OnError::Fail) => return Err(e),
            (Err(e), OnError::Skip) => skipped.push(SkippedFile {
                path,
                reason: e.to_string(),
            }),
        }
    }
    Ok((images, labels, skipped))
}

/// Reads an image folder: every sub-folder of `dir` is a class (sorted by name, label = position),
/// holding `.png`, `.jpg` or `.jpeg` files. Other files are an error ([`DataError::Decode`]) unless
/// `on_error` is [`OnError::Skip`]; an empty class folder is always an error.
pub fn image_folder(dir: impl AsRef<Path>, on_error: OnError) -> Result<Dataset> {
    let dir = dir.as_ref();
    let class_dirs: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::Empty {
            what: format!("{} (no class sub-folders)", dir.display()),
        });
    }
    let mut files = Vec::new();
    let mut classes = Vec::new();
    for (label, class_dir) in class_dirs.iter().enumerate() {
        classes.push(
            class_dir
                .file_name()
                .expect("entries have names")
                .to_string_lossy()
                .into_owned(),
        );
        let members: Vec<PathBuf> = sorted_entries(class_dir)?
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        if !members.iter().any(|p| is_image_name(p)) {
            return Err(DataError::EmptyClass {
                path: class_dir.clone(),
            });
        }
        files.extend(members.into_iter().map(|p| (p, label)));
    }
    let (images, labels, skipped) = decode_all(files, on_error)?;
    Dataset {
        source: dir.display().to_string(),
        images,
        labels,
        classes,
        skipped,
    }
    .validated()
}

/// Reads a CSV list of `path,label` lines (an optional `path,label` header; paths relative to
/// `root`; labels integers in `0..classes.len()`).
pub fn csv_list(
    list: impl AsRef<Path>,
    root: impl AsRef<Path>,
    classes: &[String],
    on_error: OnError,
) -> Result<Dataset> {
    let (list, root) = (list.as_ref(), root.as_ref());
    let text = std::fs::read_to_string(list).map_err(io(list))?;
    let mut files = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || (number == 1 && line.eq_ignore_ascii_case("path,label")) {
            continue;
        }
        let format = |reason: String| DataError::Format {
            path: list.to_path_buf(),
            reason: format!("line {number}: {reason}"),
        };
        let (path, label) = line
            .rsplit_once(',')
            .ok_or_else(|| format(format!("expected `path,label`, found `{line}`")))?;
        let label: i64 = label
            .trim()
            .parse()
            .map_err(|_| format(format!("label `{}` is not an integer", label.trim())))?;
        if label < 0 || label as usize >= classes.len() {
            return Err(DataError::LabelOutOfRange {
                path: list.to_path_buf(),
                index: number,
                label,
                classes: classes.len(),
            });
        }
        files.push((root.join(path.trim()), label as usize));
    }
    let (images, labels, skipped) = decode_all(files, on_error)?;
    Dataset {
        source: list.display().to_string(),
        images,
        labels,
        classes: classes.to_vec(),
        skipped,
    }
    .validated()
}
