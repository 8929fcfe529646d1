//! Retention by size and time, age-based rolling; explicit `now` values, no sleeping.

mod log_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::BrokerError;
use broker::log::{AppendMode, LogConfig};
use log_support::*;

const T0: i64 = 1_700_000_000_000;

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

#[test]
fn size_retention_deletes_oldest_segments_and_advances_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(5000),
        retention_time: None,
        ..small(2000)
    };
    let mut log = open(dir.path(), cfg.clone());
    for i in 0..50u64 {
        log.append(
            &mut batch(0, 2, T0, 300, i),
            AppendMode::AssignOffsets,
            Some(0),
        )
        .unwrap();
    }
    let segs = log.segments();
    let before = log.size_bytes();
    let report = log.enforce_retention(at_ms(T0)).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(log.segments(), segs - report.deleted_segments);
    assert_eq!(log.size_bytes(), before - report.deleted_bytes);
    assert!(log.size_bytes() >= 5000, "never goes below the limit");
    assert!(log.size_bytes() < 5000 + 2000, "deleted all it could");
    assert_eq!(
        data_bytes(dir.path()),
        log.size_bytes(),
        "files are out of the log"
    );
    assert_eq!(report.to_delete.len(), 3 * report.deleted_segments);
    assert!(report.to_delete.iter().all(|p| p.exists()));
    broker::log::remove_deleted(&report.to_delete).unwrap();
    assert!(
        report.to_delete.iter().all(|p| !p.exists()),
        "files are gone"
    );
    let start = log.log_start_offset();
    assert_eq!(report.log_start_offset, start);
    assert!(start > 0);
    assert_eq!(log.read(start, 1).unwrap().first_offset, start);
    match log.read(start - 1, 1) {
        Err(e @ BrokerError::OffsetOutOfRange { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("{start} to 100")), "{msg}");
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // The start survives a reopen.
    drop(log);
    assert_eq!(open(dir.path(), cfg).log_start_offset(), start);
}

#[test]
fn time_retention_deletes_segments_whose_newest_batch_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let cfg = LogConfig {
        retention_time: Some(Duration::from_millis(day as u64)),
        ..small(1000)
    };
    let mut log = open(dir.path(), cfg);
    // Day 0 .. day 9, a few batches each; segments hold ~2 batches.
    for i in 0..20i64 {
        let ts = T0 + (i / 2) * day;
        log.append(
            &mut batch(0, 1, ts, 400, i as u64),
            AppendMode::AssignOffsets,
            Some(0),
        )
        .unwrap();
    }
    // Now = day 5.5: everything with newest timestamp before day 4.5 goes.
    let now = T0 + 5 * day + day / 2;
    let report = log.enforce_retention(at_ms(now)).unwrap();
    // Two 461-byte batches per 1000-byte segment: segment k holds day k. Days 0..=4
    // are wholly older than the cut-off (day 4.5).
    assert_eq!(log.segments(), 5, "10 segments, 5 deleted");
    assert_eq!(report.deleted_segments, 5);
    assert_eq!(log.log_start_offset(), 10);
    let first = log.read(10, 1).unwrap();
    let h = broker::log::batch::validate_batch(&first.bytes).unwrap();
    assert_eq!(h.max_timestamp, T0 + 5 * day);
    // Far in the future everything sealed goes, the active segment stays; files not
    // removed by the caller are removed at the next open.
    let report = log.enforce_retention(at_ms(now + 100 * day)).unwrap();
    assert!(report.to_delete.iter().all(|p| p.exists()));
    assert_eq!(log.segments(), 1);
    assert_eq!(log.log_end_offset(), 20);
    assert!(log.read(log.log_start_offset(), 1).is_ok());
    drop(log);
    let (log, recovered) = broker::log::PartitionLog::open(dir.path(), small(1000)).unwrap();
    assert!(report.to_delete.iter().all(|p| !p.exists()));
    assert!(recovered.orphans_removed >= report.to_delete.len());
    assert_eq!(log.log_start_offset(), 18);
}

#[test]
fn retention_leaves_a_log_within_limits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(1 << 30),
        ..small(1000)
    };
    let mut log = open(dir.path(), cfg);
    for i in 0..10u64 {
        log.append(
            &mut batch(0, 1, T0, 400, i),
            AppendMode::AssignOffsets,
            Some(0),
        )
        .unwrap();
    }
    let report = log.enforce_retention(at_ms(T0 + 1000)).unwrap();
    assert_eq!(report.deleted_segments, 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn age_roll_seals_a_non_empty_active_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_age: Duration::from_secs(3600),
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), cfg);
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert!(
        !log.roll_if_due(later).unwrap(),
        "empty segment does not roll"
    );
    log.append(
        &mut batch(0, 1, T0, 10, 0),
        AppendMode::AssignOffsets,
        Some(0),
    )
    .unwrap();
    assert!(
        !log.roll_if_due(SystemTime::now()).unwrap(),
        "young segment stays"
    );
    assert!(log.roll_if_due(later).unwrap());
    assert_eq!(log.segments(), 2);
    let out = log
        .append(
            &mut batch(0, 1, T0, 10, 1),
            AppendMode::AssignOffsets,
            Some(0),
        )
        .unwrap();
    assert_eq!(out.base_offset, 1);
    assert_eq!(log_files(dir.path()).len(), 2);
    assert!(log_files(dir.path())[1].ends_with(format!("{:020}.log", 1)));
}
