//! File plumbing shared by the CA, issuance and loading: the TLS directory layout and
//! writes that never leave a half-written file behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CertsError, Result};

/// The deployment CA certificate inside a CA directory or a TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key inside a CA directory (never copied into TLS directories).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// A node's certificate inside its TLS directory.
pub const CERT_FILE: &str = "cert.pem";
/// A node's private key inside its TLS directory.
pub const KEY_FILE: &str = "key.pem";

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Writes `content` to `path` through a temporary file and a rename, so that a process
/// watching `path` (a reloading resolver) sees either the old or the new file, never a
/// partial one. `mode` is applied at creation: keys are never readable by others, even
/// for an instant.
pub(crate) fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and per call, so that concurrent writers never share a
    // temporary file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Reads a file that must exist, turning "not found" into an error that names the file
/// and says how a TLS directory is made.
pub(crate) fn read_required(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CertsError::MissingFile {
            path: path.to_owned(),
        }),
        Err(e) => Err(CertsError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}
