//! Full disks: a broker's data directory on its own small tmpfs, which a fault fills to
//! the last byte with a filler file and later empties again, as when a log volume fills
//! up in production (a runaway retention setting, a neighbour's files).
//!
//! Mounting needs root; [`SmallDisk::available`] says whether this machine can, and the
//! run then records the fault as skipped. Dropping the value unmounts (lazily, so a
//! process still holding files does not keep the mount alive forever).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ChaosError, io};

/// The filler's name inside the mount.
const FILLER: &str = "chaos-filler";

/// A mounted size-limited filesystem holding one broker's data.
#[derive(Debug)]
pub struct SmallDisk {
    mount: PathBuf,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

impl SmallDisk {
    /// Whether this machine can mount a tmpfs (root), and if not, why.
    pub fn available() -> Result<(), String> {
        let uid = Command::new("id").arg("-u").output();
        match uid {
            Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "0" => Ok(()),
            _ => Err("mounting a small filesystem needs root".into()),
        }
    }

    /// Mounts a tmpfs of `megabytes` at `dir` (created if missing).
    pub fn mount(dir: &Path, megabytes: u32) -> Result<Self, ChaosError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let size = format!("size={megabytes}m");
        let target = dir.display().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &size, "chaos-disk", &target],
        )
        .map_err(|why| ChaosError::Io {
            what: format!("mount a {megabytes} MiB tmpfs at {target}"),
            source: std::io::Error::other(why),
        })?;
        Ok(Self {
            mount: dir.to_owned(),
        })
    }

    /// Unmounts whatever a crashed earlier run left mounted under `dir`.
    pub fn unmount_leftovers(dir: &Path) {
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
            return;
        };
        let prefix = dir.display().to_string();
        for line in mounts.lines() {
            if let Some(point) = line.split_whitespace().nth(1)
                && point.starts_with(&prefix)
            {
                let _ = run("umount", &["-l", point]);
            }
        }
    }

    /// Writes a filler file until the filesystem refuses (ENOSPC); returns its size.
    pub fn fill(&self) -> Result<u64, ChaosError> {
        let path = self.mount.join(FILLER);
        let mut file =
            std::fs::File::create(&path).map_err(io(format!("create {}", path.display())))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => {
                    return Err(ChaosError::Io {
                        what: format!("fill {}", path.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(written)
    }

    /// Deletes the filler: the broker has room again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.mount.join(FILLER));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.free();
        let _ = run("umount", &["-l", &self.mount.display().to_string()]);
    }
}
