//! A broker's claim on its data directory: a marker file (`meridian.json`) naming the
//! node that owns it, and an exclusive lock (`.lock`) held while the broker runs. A
//! directory with foreign content, one of another node, or one held by a running broker
//! is refused before anything in it is touched.
//!
//! The broker's metadata (topics, placement, leaders, group offsets) lives in the
//! controller's replicated sled store under `controller/`; partition logs live in
//! `<topic>-<partition>/`.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// Name of the marker file that makes a directory a Meridian data directory.
pub const MARKER_FILE: &str = "meridian.json";
const LOCK_FILE: &str = ".lock";
const FORMAT_VERSION: u32 = 1;

/// What the marker file records, so a data directory is never reused by another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataDirMarker {
    /// On-disk format version.
    pub format: u32,
    /// `REGION/NAME` of the node that owns the directory.
    pub node: String,
}

/// A claimed data directory; the claim (the lock) lasts as long as this value.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
    path: PathBuf,
}

impl DataDir {
    /// Claims `dir` for `node`, creating it if missing.
    pub fn claim(dir: &Path, node: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BrokerError::io(dir, e))?;
        let marker_path = dir.join(MARKER_FILE);
        if marker_path.exists() {
            let text = std::fs::read_to_string(&marker_path)
                .map_err(|e| BrokerError::io(&marker_path, e))?;
            let marker: DataDirMarker =
                serde_json::from_str(&text).map_err(|e| BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!("{} is unreadable: {e}", marker_path.display()),
                })?;
            if marker.node != node {
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!("it belongs to node {}, not {node}", marker.node),
                });
            }
            if marker.format != FORMAT_VERSION {
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!(
                        "its format version is {}, this build reads {FORMAT_VERSION}",
                        marker.format
                    ),
                });
            }
        } else {
            let mut entries = std::fs::read_dir(dir).map_err(|e| BrokerError::io(dir, e))?;
            if let Some(entry) = entries.next() {
                let entry = entry.map_err(|e| BrokerError::io(dir, e))?;
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!(
                        "it is not empty ({} is there) and has no {MARKER_FILE}",
                        entry.file_name().to_string_lossy()
                    ),
                });
            }
        }

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BrokerError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BrokerError::DataDirLocked {
                    path: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(BrokerError::io(&lock_path, e)),
        }

        if !marker_path.exists() {
            let marker = DataDirMarker {
                format: FORMAT_VERSION,
                node: node.to_owned(),
            };
            let text =
                serde_json::to_string_pretty(&marker).map_err(|e| BrokerError::Metadata {
                    reason: e.to_string(),
                })?;
            write_durably(&marker_path, text.as_bytes())?;
        }
        Ok(Self {
            _lock: lock,
            path: dir.to_owned(),
        })
    }

    /// The claimed directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a small file so that it is either absent or complete after a crash.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| BrokerError::io(&tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| BrokerError::io(&tmp, e))?;
    file.sync_all().map_err(|e| BrokerError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BrokerError::io(path, e))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| BrokerError::io(parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_that_is_not_meridians() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("photos.jpg"), b"x").unwrap();
        let err = DataDir::claim(dir.path(), "r/b1").unwrap_err();
        assert!(matches!(err, BrokerError::NotADataDir { .. }), "{err}");
        assert!(err.to_string().contains("photos.jpg"), "{err}");
    }

    #[test]
    fn refuses_a_directory_locked_by_a_running_broker() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDir::claim(dir.path(), "r/b1").unwrap();
        let err = DataDir::claim(dir.path(), "r/b1").unwrap_err();
        assert!(matches!(err, BrokerError::DataDirLocked { .. }), "{err}");
    }

    #[test]
    fn refuses_a_directory_of_another_node() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::claim(dir.path(), "r/b1").unwrap());
        let err = DataDir::claim(dir.path(), "r/b2").unwrap_err();
        assert!(err.to_string().contains("belongs to node r/b1"), "{err}");
    }

    #[test]
    fn a_claim_is_released_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::claim(dir.path(), "r/b1").unwrap());
        assert!(DataDir::claim(dir.path(), "r/b1").is_ok());
    }
}
