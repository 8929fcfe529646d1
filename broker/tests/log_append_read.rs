//! Append/read behaviour of the partition log through real segment files.

mod log_support;

use broker::BrokerError;
use broker::log::{AppendMode, LogConfig, PartitionLog};
use log_support::*;

#[test]
fn reads_at_any_offset_return_the_batch_containing_it_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(2048));
    let mut expected = Vec::new(); // (base, last, bytes)
    for i in 0..200u64 {
        let count = 1 + (i % 5) as i32;
        let mut b = batch(0, count, 1_000 + i as i64, 50 + (i as usize * 37) % 300, i);
        let out = log
            .append(&mut b, AppendMode::AssignOffsets, Some(7))
            .unwrap();
        assert_eq!(out.last_offset - out.base_offset + 1, i64::from(count));
        expected.push((out.base_offset, out.last_offset, b));
    }
    assert!(
        log.segments() > 10,
        "expected many segments, got {}",
        log.segments()
    );
    assert_eq!(log.log_end_offset(), expected.last().unwrap().1 + 1);
    for (base, last, bytes) in &expected {
        for off in *base..=*last {
            let r = log.read(off, 1).unwrap();
            assert_eq!(r.first_offset, *base, "offset {off}");
            assert_eq!(
                &r.bytes[..],
                &bytes[..],
                "offset {off} returns the stored batch"
            );
            assert_eq!(r.next_offset, last + 1);
        }
    }
    // Reading everything batch by batch gives every byte in order.
    let all: Vec<u8> = expected.iter().flat_map(|(_, _, b)| b.clone()).collect();
    assert_eq!(read_all(&log), all);
    // Reopen: same data.
    drop(log);
    let log = open(dir.path(), small(2048));
    assert_eq!(read_all(&log), all);
}

#[test]
fn read_returns_whole_batches_up_to_max_bytes_but_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let mut sizes = Vec::new();
    for i in 0..10 {
        let mut b = batch(0, 1, 1, 500, i);
        sizes.push(b.len());
        log.append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap();
    }
    let r = log.read(0, 10).unwrap();
    assert_eq!(
        spans(&r.bytes),
        vec![(0, 0)],
        "one batch even above max_bytes"
    );
    let r = log.read(2, sizes[0] * 3 + 10).unwrap();
    assert_eq!(spans(&r.bytes), vec![(2, 2), (3, 3), (4, 4)]);
    assert_eq!(r.next_offset, 5);
    let r = log.read(10, 1000).unwrap();
    assert!(r.bytes.is_empty());
    assert_eq!(r.next_offset, 10);
    match log.read(11, 1000) {
        Err(BrokerError::OffsetOutOfRange {
            requested: 11,
            start: 0,
            end: 10,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn several_batches_in_one_request_get_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(1024));
    let mut req: Vec<u8> = (0..6).flat_map(|i| batch(0, 3, 5, 300, i)).collect();
    let out = log
        .append(&mut req, AppendMode::AssignOffsets, Some(1))
        .unwrap();
    assert_eq!((out.base_offset, out.last_offset, out.batches), (0, 17, 6));
    assert!(log.segments() >= 2, "the request spans segments");
    assert_eq!(
        read_all(&log),
        req,
        "stored bytes are the (rewritten) request"
    );
}

#[test]
fn keep_offsets_leaves_a_gap_that_reads_step_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(4096));
    let mut a = batch(0, 10, 1, 100, 1);
    log.append(&mut a, AppendMode::KeepOffsets, Some(0))
        .unwrap();
    let mut b = batch(50, 5, 2, 100, 2);
    let out = log
        .append(&mut b, AppendMode::KeepOffsets, Some(0))
        .unwrap();
    assert_eq!((out.base_offset, out.last_offset), (50, 54));
    assert_eq!(log.log_end_offset(), 55);
    for off in 10..50 {
        let r = log.read(off, 1).unwrap();
        assert_eq!(spans(&r.bytes), vec![(50, 54)], "offset {off} in the gap");
    }
    let r = log.read(5, 1 << 20).unwrap();
    assert_eq!(spans(&r.bytes), vec![(0, 9), (50, 54)]);
    // The gap survives a reopen.
    drop(log);
    let log = open(dir.path(), small(4096));
    assert_eq!(log.log_end_offset(), 55);
    assert_eq!(spans(&log.read(20, 1).unwrap().bytes), vec![(50, 54)]);
}

#[test]
fn idempotent_resend_is_a_duplicate_and_different_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(1024));
    let batches: Vec<Vec<u8>> = (0..8).map(|i| batch(i * 4, 4, 10, 200, i as u64)).collect();
    for b in &batches {
        log.append(&mut b.clone(), AppendMode::KeepOffsets, Some(0))
            .unwrap();
    }
    let before = read_all(&log);
    let size = data_bytes(dir.path());
    // Re-send of stored batches, one and several (across a segment boundary).
    let out = log
        .append(&mut batches[2].clone(), AppendMode::KeepOffsets, Some(0))
        .unwrap();
    assert!(out.duplicate);
    let mut several: Vec<u8> = batches[3..7].concat();
    assert!(
        log.append(&mut several, AppendMode::KeepOffsets, Some(0))
            .unwrap()
            .duplicate
    );
    // A different leader epoch does not make it different.
    let mut other_epoch = batches[1].clone();
    other_epoch[12..16].copy_from_slice(&9i32.to_be_bytes());
    assert!(
        log.append(&mut other_epoch, AppendMode::KeepOffsets, Some(0))
            .unwrap()
            .duplicate
    );
    // Different bytes at a stored offset are refused.
    let mut changed = batch(8, 4, 10, 200, 999);
    let err = log
        .append(&mut changed, AppendMode::KeepOffsets, Some(0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::OffsetBelowEnd {
                base: 8,
                last: 11,
                end: 32
            }
        ),
        "{err}"
    );
    // Overlapping but not aligned with a stored batch is refused too.
    let mut shifted = batch(6, 4, 10, 200, 2);
    assert!(
        log.append(&mut shifted, AppendMode::KeepOffsets, Some(0))
            .is_err()
    );
    // A re-send followed by new data appends only the new batch.
    let mut mixed = [batches[7].clone(), batch(32, 2, 10, 50, 77)].concat();
    let out = log
        .append(&mut mixed, AppendMode::KeepOffsets, Some(0))
        .unwrap();
    assert!(!out.duplicate);
    assert_eq!(log.log_end_offset(), 34);
    assert_eq!(
        read_all(&log)[..before.len()],
        before[..],
        "stored data unchanged"
    );
    assert_eq!(
        data_bytes(dir.path()),
        size + batch(32, 2, 10, 50, 77).len() as u64
    );
}

fn assert_rejected(log: &mut PartitionLog, dir: &std::path::Path, mut bytes: Vec<u8>, want: &str) {
    let leo = log.log_end_offset();
    let size = data_bytes(dir);
    let err = log
        .append(&mut bytes, AppendMode::AssignOffsets, Some(0))
        .unwrap_err();
    assert!(
        err.to_string().contains(want),
        "error {err:?} should mention {want:?}"
    );
    assert_eq!(log.log_end_offset(), leo, "LEO unchanged");
    assert_eq!(data_bytes(dir), size, "files unchanged");
}

#[test]
fn invalid_batches_are_refused_and_nothing_of_the_request_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_message_bytes: 2000,
        ..small(1 << 20)
    };
    let mut log = open(dir.path(), cfg);
    log.append(
        &mut batch(0, 1, 1, 10, 0),
        AppendMode::AssignOffsets,
        Some(0),
    )
    .unwrap();
    let good = batch(0, 2, 1, 100, 1);

    let mut bad_crc = batch(0, 2, 1, 100, 2);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xff;
    assert_rejected(
        &mut log,
        dir.path(),
        [good.clone(), bad_crc].concat(),
        "CRC",
    );

    let mut bad_magic = batch(0, 2, 1, 100, 3);
    bad_magic[16] = 1;
    assert_rejected(
        &mut log,
        dir.path(),
        [good.clone(), bad_magic].concat(),
        "magic",
    );

    let truncated = batch(0, 2, 1, 100, 4);
    let cut = truncated[..truncated.len() - 5].to_vec();
    assert_rejected(
        &mut log,
        dir.path(),
        [good.clone(), cut].concat(),
        "truncated",
    );
    assert_rejected(
        &mut log,
        dir.path(),
        [good.clone(), vec![0; 20]].concat(),
        "header",
    );

    let big = batch(0, 1, 1, 3000, 5);
    let mut buf = [good.clone(), big].concat();
    let err = log
        .append(&mut buf, AppendMode::AssignOffsets, Some(0))
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::RecordTooLarge { max: 2000, .. }),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 1);

    assert_rejected(&mut log, dir.path(), Vec::new(), "no record batch");
    let mut negative_delta = batch(0, 1, 1, 10, 6);
    negative_delta[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    assert_rejected(&mut log, dir.path(), negative_delta, "lastOffsetDelta");
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(1500));
    // Timestamps rise by 10 per batch, with one out-of-order batch.
    let mut ts_of = Vec::new();
    for i in 0..60i64 {
        let ts = if i == 30 { 5 } else { 1000 + i * 10 };
        let out = log
            .append(
                &mut batch(0, 2, ts, 120, i as u64),
                AppendMode::AssignOffsets,
                Some(0),
            )
            .unwrap();
        ts_of.push((out.base_offset, ts));
    }
    assert!(log.segments() > 3);
    for target in [0, 999, 1000, 1001, 1290, 1305, 1590] {
        let want = ts_of.iter().find(|(_, ts)| *ts >= target).copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            want,
            "ts {target}"
        );
    }
    assert_eq!(log.offset_for_timestamp(1591).unwrap(), None);
    drop(log);
    let log = open(dir.path(), small(1500));
    assert_eq!(log.offset_for_timestamp(1305).unwrap(), Some((62, 1310)));
}

#[test]
fn truncate_to_drops_everything_from_the_offset_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small(1024));
    let mut all = Vec::new();
    for i in 0..40u64 {
        let mut b = batch(0, 3, 1, 150, i);
        log.append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap();
        all.push(b);
    }
    let segs = log.segments();
    // Inside a batch (offset 31 is in batch 30..=32): the whole batch goes.
    log.truncate_to(31).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    assert!(log.segments() < segs);
    assert_eq!(read_all(&log), all[..10].concat());
    assert!(log.read(31, 100).is_err());
    // Appends continue at the new end, and survive a reopen.
    let mut b = batch(0, 1, 1, 10, 100);
    assert_eq!(
        log.append(&mut b, AppendMode::AssignOffsets, Some(1))
            .unwrap()
            .base_offset,
        30
    );
    drop(log);
    let mut log = open(dir.path(), small(1024));
    assert_eq!(log.log_end_offset(), 31);
    assert_eq!(read_all(&log), [all[..10].concat(), b].concat());
    // At a batch boundary on a segment boundary, and below the start.
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log), all[0]);
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.segments(), 1);
}

#[test]
fn batches_from_the_kafka_encoder_are_stored_byte_for_byte() {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..5)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(bytes::Bytes::from(format!("key-{i}"))),
            value: Some(bytes::Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
    let mut bytes = buf.to_vec();
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    log.append(
        &mut batch(0, 10, 1, 10, 0),
        AppendMode::AssignOffsets,
        Some(0),
    )
    .unwrap();
    let out = log
        .append(&mut bytes, AppendMode::AssignOffsets, Some(4))
        .unwrap();
    assert_eq!((out.base_offset, out.last_offset), (10, 14));
    assert_eq!(out.max_timestamp, 1_700_000_000_004);
    // (The encoder may split the records into several batches.)
    let r = log.read(10, 1 << 20).unwrap();
    assert_eq!(&r.bytes[..], &bytes[..]);
    let mut back = r.bytes.clone();
    let mut decoded = Vec::new();
    while !back.is_empty() {
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut back).unwrap();
        decoded.extend(set.records);
    }
    let offsets: Vec<i64> = decoded.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
    assert_eq!(decoded[3].value.as_deref(), Some(&b"value-3"[..]));
}

#[test]
fn readers_share_the_log_behind_a_rwlock_while_a_writer_appends() {
    use std::sync::{Arc, RwLock};
    fn shareable<T: Send + Sync>() {}
    shareable::<PartitionLog>();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RwLock::new(open(dir.path(), small(4096))));
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..300u64 {
                let mut b = batch(0, 2, 1, 200, i);
                log.write()
                    .unwrap()
                    .append(&mut b, AppendMode::AssignOffsets, Some(0))
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut at = 0;
                while at < 600 {
                    let r = log.read().unwrap().read(at, 1000).unwrap();
                    for (base, last) in spans(&r.bytes) {
                        assert_eq!(base, at, "batches arrive in order without holes");
                        at = last + 1;
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}
