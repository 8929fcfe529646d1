//! The truncation warning names file, position, offset and bytes dropped. Alone in its
//! own test binary: tracing's per-callsite interest cache races with other tests logging
//! on other threads of the same process, which made this check flaky.

mod log_support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use broker::log::{AppendMode, LogConfig, PartitionLog};
use log_support::*;

/// Appends `n` batches of 3 offsets each and returns their bytes.
fn fill(dir: &Path, config: LogConfig, n: u64) -> Vec<Vec<u8>> {
    let mut log = open(dir, config);
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = batch(0, 3, 100 + i as i64, 100 + (i as usize % 7) * 40, i);
        log.append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap();
        out.push(b);
    }
    log.sync().unwrap();
    out
}

fn last_log(dir: &Path) -> std::path::PathBuf {
    log_files(dir).pop().unwrap()
}

/// Collects formatted log output for assertions.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cut_tail_is_logged_with_file_position_and_bytes_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let batches = fill(dir.path(), LogConfig::default(), 4);
    let path = last_log(dir.path());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0x55; 37]).unwrap();
    drop(f);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("truncating"))
        .unwrap_or_else(|| panic!("no warn line in:\n{text}"));
    let whole: usize = batches.iter().map(Vec::len).sum();
    assert!(line.contains("bytes_dropped=37"), "{line}");
    assert!(line.contains(&format!("position={whole}")), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("next_offset=12"), "{line}");
}
