//! Start-up recovery: torn and corrupt tails are cut exactly, indexes are rebuilt.

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

#[test]
fn torn_tail_is_cut_to_the_last_whole_batch_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let batches = fill(dir.path(), LogConfig::default(), 30);
    let path = last_log(dir.path());
    let whole: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let last_len = batches.last().unwrap().len() as u64;
    // Cut the last batch in the middle.
    let torn = whole - last_len / 2;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(torn)
        .unwrap();
    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, torn - (whole - last_len));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole - last_len);
    assert_eq!(log.log_end_offset(), 29 * 3);
    assert_eq!(read_all(&log), batches[..29].concat());
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let batches = fill(dir.path(), LogConfig::default(), 10);
    let path = last_log(dir.path());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    let (mut log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, 100);
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(read_all(&log), batches.concat());
    // Appends continue cleanly after the cut.
    let mut b = batch(0, 1, 1, 10, 99);
    assert_eq!(
        log.append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap()
            .base_offset,
        30
    );
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), [batches.concat(), b].concat());
}

#[test]
fn a_flipped_byte_in_the_last_batch_drops_exactly_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let batches = fill(dir.path(), LogConfig::default(), 10);
    let path = last_log(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    data[n - 3] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, batches[9].len() as u64);
    assert_eq!(log.log_end_offset(), 27);
    assert_eq!(read_all(&log), batches[..9].concat());
}

#[test]
fn deleted_indexes_are_rebuilt_identically_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(2048);
    let batches = fill(dir.path(), cfg.clone(), 60);
    let indexes: Vec<_> = files_with(dir.path(), "index")
        .into_iter()
        .chain(files_with(dir.path(), "timeindex"))
        .collect();
    assert!(indexes.len() > 6);
    let before: Vec<Vec<u8>> = indexes.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before.iter().any(|b| !b.is_empty()), "indexes have entries");
    for p in &indexes {
        std::fs::remove_file(p).unwrap();
    }
    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(report.rebuilt_indexes, report.segments);
    assert_eq!(report.truncated_bytes, 0);
    let after: Vec<Vec<u8>> = indexes.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(after, before, "rebuilt indexes equal the originals");
    assert_eq!(read_all(&log), batches.concat());
    for off in (0..180).step_by(7) {
        let r = log.read(off, 1).unwrap();
        assert!(r.first_offset <= off && off < r.next_offset);
    }
}

#[test]
fn corrupt_indexes_are_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(2048);
    let batches = fill(dir.path(), cfg.clone(), 60);
    let idx = files_with(dir.path(), "index");
    let sealed = &idx[1];
    let good = std::fs::read(sealed).unwrap();
    assert!(good.len() >= 16, "sealed index has two entries or more");
    // Swap two entries: no longer increasing.
    let mut bad = good.clone();
    bad[..8].copy_from_slice(&good[8..16]);
    bad[8..16].copy_from_slice(&good[..8]);
    std::fs::write(sealed, &bad).unwrap();
    // The active segment's index: an entry pointing beyond the file.
    let active = idx.last().unwrap();
    let mut f = OpenOptions::new().append(true).open(active).unwrap();
    f.write_all(&[0x7f, 0, 0, 0, 0x7f, 0, 0, 0]).unwrap();
    drop(f);
    // A time index of the wrong size.
    let tidx = files_with(dir.path(), "timeindex");
    let mut f = OpenOptions::new().append(true).open(&tidx[2]).unwrap();
    f.write_all(&[1, 2, 3]).unwrap();
    drop(f);
    let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(report.rebuilt_indexes, 3);
    assert_eq!(std::fs::read(sealed).unwrap(), good);
    assert_eq!(read_all(&log), batches.concat());
}

#[test]
fn orphan_index_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogConfig::default(), 3);
    let orphan = dir.path().join(format!("{:020}.index", 12345));
    std::fs::write(&orphan, [0u8; 8]).unwrap();
    let (_log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.orphans_removed, 1);
    assert!(!orphan.exists());
}

#[test]
fn an_empty_or_missing_directory_opens_as_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders-0");
    let (log, report) = PartitionLog::open(&path, LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(report.segments, 1);
    assert!(log.read(0, 100).unwrap().bytes.is_empty());
}
