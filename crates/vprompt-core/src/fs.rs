//! Replacing files so that a crash never leaves half of one: the one way vprompt writes a file that
//! something reads back (run records, checkpoints' small files, experiment results, caches,
//! figures).
//!
//! The new content goes to a temporary file beside the target (same directory, so the rename
//! cannot cross file systems; a name of this process and call, so two processes or threads never
//! share it), is synced to disk, and is renamed over the target; then the directory is synced, so
//! that the rename itself survives a power cut. A reader sees the old file or the new one, never a
//! mixture, and a killed writer leaves at most a stray `*.tmp-*` file.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically and durably (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
}

/// Replaces `path` with what `write` puts in the temporary file whose path it is given (a
/// streamed cache, a drawn figure): `write` creates that file; it is synced, renamed over `path`,
/// and the directory synced. On an error the temporary file is removed and `path` is untouched.
pub fn replace_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temporary_beside(path);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        sync_dir(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        );
    }
    result
}

/// Syncs a directory's entries (after a rename into it), best effort: some file systems cannot.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A temporary name beside `path`, unique to this process and call: `NAME.tmp-PID-N`.
pub fn temporary_beside(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write_atomic(&path, b"old").unwrap();
        let err = replace_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_differ_between_calls() {
        let path = Path::new("dir/file.txt");
        let (a, b) = (temporary_beside(path), temporary_beside(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("dir")));
        assert!(
            a.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("file.txt.tmp-")
        );
    }
}
