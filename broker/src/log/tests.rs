//! Unit tests of the log driven through real files in temp dirs.

use super::batch::tests::make_batch;
use super::*;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

#[test]
fn assign_offsets_continue_from_log_end_and_stamp_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut b = make_batch(999, 4, 10, b"abc");
    let out = log
        .append(&mut b, AppendMode::AssignOffsets, Some(3))
        .unwrap();
    assert_eq!((out.base_offset, out.last_offset), (0, 4));
    let mut b = make_batch(0, 0, 10, b"d");
    let out = log
        .append(&mut b, AppendMode::AssignOffsets, Some(3))
        .unwrap();
    assert_eq!((out.base_offset, out.last_offset), (5, 5));
    assert_eq!(log.log_end_offset(), 6);
    let r = log.read(5, 1 << 20).unwrap();
    let h = batch::validate_batch(&r.bytes).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (5, 3));
}

#[test]
fn rolls_when_segment_would_exceed_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    for _ in 0..20 {
        let mut b = make_batch(0, 0, 1, &[7u8; 200]);
        log.append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap();
    }
    assert!(log.segments() >= 5, "segments = {}", log.segments());
    for s in &log.sealed {
        assert!(s.data.size <= 1024);
    }
}

#[test]
fn invalid_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 40,
        ..LogConfig::default()
    };
    let err = PartitionLog::open(dir.path(), cfg).unwrap_err();
    assert!(err.to_string().contains("segment_bytes"), "{err}");
    assert_eq!(err.code(), crate::ErrorCode::InvalidConfig);
    let zero_interval = LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let err = zero_interval.validate().unwrap_err();
    assert!(err.to_string().contains("index_interval_bytes"), "{err}");
    assert!(LogConfig::default().validate().is_ok());
}

#[test]
fn empty_log_takes_base_of_first_kept_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut b = make_batch(1000, 1, 5, b"x");
    log.append(&mut b, AppendMode::KeepOffsets, Some(0))
        .unwrap();
    assert_eq!(log.log_start_offset(), 1000);
    assert_eq!(log.log_end_offset(), 1002);
    assert!(matches!(
        log.read(0, 100),
        Err(BrokerError::OffsetOutOfRange {
            start: 1000,
            end: 1002,
            ..
        })
    ));
}

#[test]
fn flush_due_follows_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Interval(Duration::from_secs(5)),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), cfg).unwrap();
    let t0 = Instant::now();
    assert!(
        !log.flush_due(t0 + Duration::from_secs(10)),
        "nothing to flush"
    );
    let mut b = make_batch(0, 0, 1, b"x");
    log.append(&mut b, AppendMode::AssignOffsets, Some(0))
        .unwrap();
    assert!(log.flush_due(Instant::now() + Duration::from_secs(6)));
    log.sync().unwrap();
    assert!(!log.flush_due(Instant::now() + Duration::from_secs(6)));
}

#[test]
fn a_gap_beyond_u32_relative_offsets_rolls_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append(
        &mut make_batch(0, 0, 1, b"a"),
        AppendMode::KeepOffsets,
        Some(0),
    )
    .unwrap();
    let far = 3_000_000_000i64;
    log.append(
        &mut make_batch(far, 1, 2, b"b"),
        AppendMode::KeepOffsets,
        Some(0),
    )
    .unwrap();
    assert_eq!(log.segments(), 2);
    assert_eq!(log.log_end_offset(), far + 2);
    assert_eq!(log.read(1, 100).unwrap().first_offset, far);
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.read(far + 1, 100).unwrap().first_offset, far);
}

#[test]
fn keep_offsets_refuses_overlapping_batches_within_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut req = [make_batch(0, 4, 1, b"a"), make_batch(3, 0, 1, b"b")].concat();
    let err = log
        .append(&mut req, AppendMode::KeepOffsets, Some(0))
        .unwrap_err();
    assert!(err.to_string().contains("overlapping"), "{err}");
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn leader_epochs_are_recorded_persisted_truncated_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    for epoch in [1, 1, 2] {
        log.append(
            &mut make_batch(0, 1, 1, b"x"),
            AppendMode::AssignOffsets,
            Some(epoch),
        )
        .unwrap();
    }
    log.start_epoch(4).unwrap();
    // A follower's copy keeps the leader's epoch (here 4, at offset 6).
    let mut copied = make_batch(0, 0, 1, b"y");
    batch::set_offset_and_epoch(&mut copied, 6, 4);
    log.append(&mut copied, AppendMode::KeepOffsets, None)
        .unwrap();
    assert_eq!(log.end_offset_for_epoch(1), (1, 4));
    assert_eq!(log.end_offset_for_epoch(3), (2, 6));
    assert_eq!(log.end_offset_for_epoch(4), (4, 7));
    drop(log);

    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        log.latest_epoch(),
        Some(4),
        "the checkpoint survives a restart"
    );
    log.truncate_to(6).unwrap();
    assert_eq!(
        log.latest_epoch(),
        Some(2),
        "epochs past the cut go with it"
    );
    drop(log);

    std::fs::write(dir.path().join(epochs::CHECKPOINT_FILE), "garbage").unwrap();
    let (log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(
        log.end_offset_for_epoch(1),
        (1, 4),
        "rebuilt from the batches"
    );
    assert_eq!(log.latest_epoch(), Some(2));
}

#[test]
fn a_leaders_offset_preserving_append_stamps_its_own_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut mirrored = make_batch(0, 0, 1, b"z");
    batch::set_offset_and_epoch(&mut mirrored, 0, 77);
    log.append(&mut mirrored, AppendMode::KeepOffsets, Some(3))
        .unwrap();
    let h = batch::validate_batch(&log.read(0, 1 << 20).unwrap().bytes).unwrap();
    assert_eq!(
        h.partition_leader_epoch, 3,
        "the source cluster's epoch means nothing here"
    );
    assert_eq!(log.latest_epoch(), Some(3));
}

#[test]
fn a_retried_idempotent_batch_is_not_written_twice_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let idempotent = |seq: i32| {
        let mut b = make_batch(0, 1, 1, b"p");
        b[43..51].copy_from_slice(&77i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    };
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    let first = log
        .append(&mut idempotent(0), AppendMode::AssignOffsets, Some(1))
        .unwrap();
    assert_eq!((first.base_offset, first.duplicate), (0, false));
    let retry = log
        .append(&mut idempotent(0), AppendMode::AssignOffsets, Some(1))
        .unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.duplicate),
        (0, 1, true)
    );
    assert_eq!(log.log_end_offset(), 2, "nothing written for the retry");
    let gap = log
        .append(&mut idempotent(5), AppendMode::AssignOffsets, Some(1))
        .unwrap_err();
    assert_eq!(gap.code(), crate::ErrorCode::OutOfOrderSequenceNumber);
    log.append(&mut idempotent(2), AppendMode::AssignOffsets, Some(1))
        .unwrap();
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), small_config()).unwrap();
    let retry = log
        .append(&mut idempotent(2), AppendMode::AssignOffsets, Some(1))
        .unwrap();
    assert!(
        retry.duplicate,
        "the state is rebuilt from the log at start-up"
    );
    assert_eq!(log.log_end_offset(), 4);
}
