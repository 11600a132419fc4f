//! The incarnation counter: every run of a node name gets a larger number than the last.
//!
//! A node's identity is name + incarnation, and peers refuse traffic from an older
//! incarnation, so a restart must never reuse or go below a previous value. The value is
//! `max(last persisted + 1, unix milliseconds now)`, written atomically (temporary file,
//! fsync, rename, fsync of the directory) to `DATA_DIR/incarnation` before the node joins.
//!
//! On Kubernetes the data directory is a volume, so the persisted value survives pod
//! restarts even if the node's clock steps back. Without a volume the file is lost with
//! the pod, and the wall clock alone keeps the value growing (restarts are seconds apart,
//! far more than clock skew between a pod's old and new host in practice).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the counter inside the data directory.
pub const INCARNATION_FILE: &str = "incarnation";

/// Why the next incarnation could not be determined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncarnationError {
    /// The data directory or the counter file could not be read or written.
    #[error("cannot {action} {}: {source}; check that the data directory (--data-dir) is writable", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The counter file does not hold a number.
    #[error("{} does not hold an incarnation number ({content:?}); delete it to fall back to the clock", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its (truncated) content.
        content: String,
    },
    /// The counter reached `u64::MAX`.
    #[error("{} holds the largest possible incarnation; delete it to restart from the clock", path.display())]
    Exhausted {
        /// The file.
        path: PathBuf,
    },
}

/// The incarnation for a new run of the node whose state lives in `data_dir` (created if
/// missing), persisted before it is returned.
///
/// # Errors
/// [`IncarnationError`] if the directory or file cannot be used.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let a = cortex_node::config::next_incarnation(dir.path()).unwrap();
/// let b = cortex_node::config::next_incarnation(dir.path()).unwrap();
/// assert!(b > a);
/// ```
pub fn next_incarnation(data_dir: &Path) -> Result<u64, IncarnationError> {
    // A clock before 1970 is treated as 0: the persisted counter still moves forward.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    next_incarnation_at(data_dir, now_ms)
}

/// [`next_incarnation`] with the clock passed in (unix milliseconds), for tests.
///
/// # Errors
/// [`IncarnationError`] if the directory or file cannot be used.
pub fn next_incarnation_at(data_dir: &Path, now_ms: u64) -> Result<u64, IncarnationError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| IncarnationError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(data_dir).map_err(io("create", data_dir))?;
    let path = data_dir.join(INCARNATION_FILE);
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<u64>()
                .map_err(|_| IncarnationError::Corrupt {
                    path: path.clone(),
                    content: text.chars().take(40).collect(),
                })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read", &path)(e)),
    };
    let next = match last {
        Some(last) => last
            .checked_add(1)
            .ok_or_else(|| IncarnationError::Exhausted { path: path.clone() })?
            .max(now_ms),
        None => now_ms.max(1),
    };
    let tmp = data_dir.join(format!("{INCARNATION_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        writeln!(f, "{next}").map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("rename into", &path))?;
    // The rename is durable only once the directory entry is synced.
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_past_the_persisted_value_even_if_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_incarnation_at(dir.path(), 1_000).unwrap(), 1_000);
        assert_eq!(next_incarnation_at(dir.path(), 500).unwrap(), 1_001);
        assert_eq!(next_incarnation_at(dir.path(), 1_001).unwrap(), 1_002);
        assert_eq!(next_incarnation_at(dir.path(), 5_000).unwrap(), 5_000);
        let text = std::fs::read_to_string(dir.path().join(INCARNATION_FILE)).unwrap();
        assert_eq!(text.trim(), "5000");
        assert!(!dir.path().join("incarnation.tmp").exists());
    }

    #[test]
    fn creates_the_data_dir_and_uses_the_clock_first() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        assert_eq!(next_incarnation_at(&nested, 42).unwrap(), 42);
        assert_eq!(next_incarnation_at(&dir.path().join("c"), 0).unwrap(), 1);
    }

    #[test]
    fn corrupt_and_exhausted_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INCARNATION_FILE), "garbage").unwrap();
        let e = next_incarnation_at(dir.path(), 1).unwrap_err();
        assert!(matches!(e, IncarnationError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("delete it"));
        std::fs::write(dir.path().join(INCARNATION_FILE), u64::MAX.to_string()).unwrap();
        let e = next_incarnation_at(dir.path(), 1).unwrap_err();
        assert!(matches!(e, IncarnationError::Exhausted { .. }), "{e}");
    }

    #[test]
    fn real_clock_values_increase() {
        let dir = tempfile::tempdir().unwrap();
        let a = next_incarnation(dir.path()).unwrap();
        let b = next_incarnation(dir.path()).unwrap();
        assert!(b > a);
    }
}
