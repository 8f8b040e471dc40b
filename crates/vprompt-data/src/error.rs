use std::path::PathBuf;

/// Everything that can go wrong when reading, splitting, preparing or batching a dataset. Errors
/// about a file name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the expected format (wrong magic number, dimensions, size).
    #[error("{path}: {reason}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image file could not be decoded (truncated, corrupt, or not an image).
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The file involved.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// Image and label files hold different numbers of items.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels.
        label_count: usize,
    },
    /// A label is not one of the dataset's classes.
    #[error("{path}: item {index} has label {label}, but there are only {classes} classes (0..{classes})")]
    LabelOutOfRange {
        /// The file involved.
        path: PathBuf,
        /// Item index (or line number for CSV files).
        index: usize,
        /// The label found.
        label: i64,
        /// Number of classes.
        classes: usize,
    },
    /// A class folder holds no images.
    #[error("{path}: class folder holds no images (PNG or JPEG)")]
    EmptyClass {
        /// The folder.
        path: PathBuf,
    },
    /// A dataset has no items at all.
    #[error("{what} is empty")]
    Empty {
        /// What is empty.
        what: String,
    },
    /// Two splits do not have the same class names in the same order, so their labels do not
    /// mean the same classes.
    #[error("{first} and {second} have different classes: {difference}")]
    ClassMismatch {
        /// The first split's source.
        first: String,
        /// The second split's source.
        second: String,
        /// What differs: the classes only one side has, or the first position where the order differs.
        difference: String,
    },
    /// A split or sampling request cannot be met.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// A preprocessing or batching setting is invalid.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
}

/// `Result` with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
