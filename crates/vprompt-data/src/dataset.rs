use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

use crate::error::{DataError, Result};

/// A decoded image: `height x width` pixels, 1 (grey) or 3 (RGB) interleaved `u8` channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major, channels interleaved (`HWC`).
    pub pixels: Vec<u8>,
}

/// What a reader does with a file it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with the file's error (the default).
    #[default]
    Fail,
    /// Leave the file out and record it in [`Dataset::skipped`].
    Skip,
}

/// A file a reader left out under [`OnError::Skip`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The error it gave.
    pub reason: String,
}

/// Labelled images, decoded but not yet resized: what a reader returns. Splits and samples keep
/// the class list, so labels stay comparable.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where the data came from (for messages and run logs).
    pub source: String,
    /// The images.
    pub images: Vec<RawImage>,
    /// One label per image, in `0..classes.len()`.
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// Files left out under [`OnError::Skip`].
    pub skipped: Vec<SkippedFile>,
}

/// A dataset's official splits.
#[derive(Debug, Clone)]
pub struct Splits {
    /// The training split.
    pub train: Dataset,
    /// The test split: evaluate on it once, at the end; select models on a validation split cut
    /// from `train` ([`Dataset::split_validation`]).
    pub test: Dataset,
}

impl Splits {
    /// The two splits, after checking that they have the same class names in the same order
    /// ([`Dataset::check_same_classes`]): labels are indices into the class list, so a test
    /// folder with a class more, a class less or another order would otherwise be scored against
    /// the wrong labels.
    pub fn new(train: Dataset, test: Dataset) -> Result<Self> {
        train.check_same_classes(&test)?;
        Ok(Self { train, test })
    }
}

impl Dataset {
    /// Checks that `other` has the same class names in the same order, naming the classes only
    /// one side has (or the first position where they differ) otherwise.
    ///
    /// # Errors
    /// [`DataError::ClassMismatch`].
    pub fn check_same_classes(&self, other: &Dataset) -> Result<()> {
        if self.classes == other.classes {
            return Ok(());
        }
        let missing = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter()
                .filter(|c| !b.contains(c))
                .map(|c| format!("`{c}`"))
                .collect()
        };
        let (only_self, only_other) = (
            missing(&self.classes, &other.classes),
            missing(&other.classes, &self.classes),
        );
        let mut parts = Vec::new();
        if !only_self.is_empty() {
            parts.push(format!("only {} has {}", self.source, only_self.join(", ")));
        }
        if !only_other.is_empty() {
            parts.push(format!("only {} has {}", other.source, only_other.join(", ")));
        }
        if parts.is_empty() {
            let (i, (a, b)) = self
                .classes
                .iter()
                .zip(&other.classes)
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .expect("equal sets of different order differ somewhere");
            parts.push(format!(
                "the same names in another order (label {i} is `{a}` in one, `{b}` in the other)"
            ));
        }
        Err(DataError::ClassMismatch {
            first: self.source.clone(),
            second: other.source.clone(),
            difference: parts.join("; "),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order, as a new dataset with the same classes.
    pub fn subset(&self, indices: &[usize], what: &str) -> Dataset {
        Dataset {
            source: format!("{} ({what})", self.source),
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            skipped: Vec::new(),
        }
    }

    /// Indices of each class's images, in dataset order.
    fn by_class(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.classes.len()];
        for (i, &label) in self.labels.iter().enumerate() {
            groups[label].push(i);
        }
        groups
    }

    /// Holds out a seeded, stratified validation split: from every class, `round(fraction * n)`
    /// of its `n` images (at least one when `n >= 2`, never all). Returns `(train, validation)`,
    /// disjoint, each in dataset order. The same seed gives the same split.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::InvalidSplit(format!(
                "the validation fraction must be in (0, 1), got {fraction}"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for mut members in self.by_class() {
            let n = members.len();
            let take =
                ((fraction * n as f64).round() as usize).clamp(usize::from(n >= 2), n.saturating_sub(1));
            members.shuffle(&mut rng);
            valid.extend_from_slice(&members[..take]);
            train.extend_from_slice(&members[take..]);
        }
        if valid.is_empty() {
            return Err(DataError::InvalidSplit(format!(
                "{} has too few images per class for a validation split",
                self.source
            )));
        }
        train.sort_unstable();
        valid.sort_unstable();
        Ok((
            self.subset(&train, "train part"),
            self.subset(&valid, "validation part"),
        ))
    }

    /// Seeded few-shot sample: `shots` images of every class (the paper's N in {1, 2, 4, 8, 16}),
    /// in dataset order. Fails if a class has fewer than `shots` images.
    pub fn few_shot(&self, shots: usize, seed: u64) -> Result<Dataset> {
        if shots == 0 {
            return Err(DataError::InvalidSplit(
                "few-shot sampling needs at least 1 shot".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut chosen = Vec::with_capacity(shots * self.classes.len());
        for (class, mut members) in self.by_class().into_iter().enumerate() {
            if members.len() < shots {
                return Err(DataError::InvalidSplit(format!(
                    "class {class} ({}) of {} has {} images, fewer than {shots} shots",
                    self.classes[class],
                    self.source,
                    members.len()
                )));
            }
            members.shuffle(&mut rng);
            chosen.extend_from_slice(&members[..shots]);
        }
        chosen.sort_unstable();
        Ok(self.subset(&chosen, &format!("{shots}-shot")))
    }

    /// Checks labels against the classes and that the dataset is not empty.
    pub(crate) fn validated(self) -> Result<Self> {
        if self.images.is_empty() {
            return Err(DataError::Empty {
                what: self.source.clone(),
            });
        }
        debug_assert_eq!(self.images.len(), self.labels.len());
        Ok(self)
    }
}
