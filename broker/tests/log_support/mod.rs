//! Shared helpers for the partition log integration tests: batch builders and files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use broker::log::batch::{self, HEADER_LEN, LOG_OVERHEAD};
use broker::log::{LogConfig, PartitionLog};

/// A valid RecordBatch v2 with `count` record slots and an opaque body derived from
/// `seed` (the log never decodes records, so the body need not be real records).
pub fn batch(base: i64, count: i32, ts: i64, body_len: usize, seed: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + body_len);
    b.extend_from_slice(&base.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body_len) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&ts.to_be_bytes()); // base timestamp
    b.extend_from_slice(&ts.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes()); // record count
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..body_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.push(x as u8);
    }
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Base offset and last offset of the batch at the start of `bytes`.
pub fn span(bytes: &[u8]) -> (i64, i64) {
    let h = batch::validate_batch(bytes).expect("stored batch is valid");
    (h.base_offset, h.last_offset())
}

/// Every batch in a read slice: (base, last).
pub fn spans(mut bytes: &[u8]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = batch::validate_batch(bytes).expect("stored batch is valid");
        out.push((h.base_offset, h.last_offset()));
        bytes = &bytes[h.total_len()..];
    }
    out
}

/// A config with tiny segments so tests cross many of them.
pub fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Opens a log, panicking with the error on failure.
pub fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open log").0
}

/// Segment data files in the directory, sorted.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "log")
}

/// Files with an extension, sorted.
pub fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Total size of the segment data files.
pub fn data_bytes(dir: &Path) -> u64 {
    log_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Reads the whole log from its start, returning all bytes in order.
pub fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    loop {
        let r = log.read(at, 4096).expect("read");
        if r.bytes.is_empty() {
            return out;
        }
        out.extend_from_slice(&r.bytes);
        at = r.next_offset;
    }
}
