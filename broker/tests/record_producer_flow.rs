//! The producer and consumer paths of `broker::record` driven together, the way
//! `broker::client` drives them, against a simulated partition log: records are
//! partitioned, batched by the accumulator, "appended" by a fake leader that rewrites
//! each batch's base offset, then fetched back in `max_bytes`-cut chunks and decoded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::record::{
    Accumulator, AccumulatorConfig, Append, Compression, Partitioner, ReadyBatch, Record,
    StoredRecord, decode_batches, partition_for_key,
};
use bytes::Bytes;

const PARTITIONS: i32 = 3;

/// A partition log as the leader keeps it: concatenated batches at absolute offsets.
#[derive(Default)]
struct FakeLog {
    bytes: Vec<u8>,
    /// (byte position, base offset) of each batch, for fetch-by-offset.
    index: Vec<(usize, i64)>,
    end_offset: i64,
}

impl FakeLog {
    fn append(&mut self, batch: &ReadyBatch) {
        let mut b = batch.bytes.to_vec();
        b[..8].copy_from_slice(&self.end_offset.to_be_bytes());
        self.index.push((self.bytes.len(), self.end_offset));
        self.bytes.extend_from_slice(&b);
        self.end_offset += batch.record_count as i64;
    }

    /// Stored bytes from the batch holding `offset`, cut at `max_bytes` like a fetch.
    fn fetch(&self, offset: i64, max_bytes: usize) -> &[u8] {
        let pos = self
            .index
            .iter()
            .rev()
            .find(|(_, base)| *base <= offset)
            .map_or(self.bytes.len(), |(pos, _)| *pos);
        let end = (pos + max_bytes).min(self.bytes.len());
        &self.bytes[pos..end]
    }
}

fn record(i: usize, keyed: bool) -> Record {
    let mut r = Record::new(format!("value-{i}"), 1_700_000_000_000 + i as i64)
        .with_header("seq", Some(Bytes::from(i.to_string())))
        .with_header("null-header", None);
    if keyed {
        r = r.with_key(format!("customer-{}", i % 17));
    }
    r
}

/// Sends every batch the accumulator has ready, as the client's sender task would.
fn send(
    ready: Vec<ReadyBatch>,
    acc: &mut Accumulator,
    partitioner: &mut Partitioner,
    logs: &mut BTreeMap<i32, FakeLog>,
    sent: &mut Vec<i32>,
) {
    for batch in ready {
        partitioner.on_batch_ready(batch.partition, PARTITIONS);
        logs.entry(batch.partition).or_default().append(&batch);
        sent.push(batch.partition);
        acc.release(&batch);
    }
}

/// A consumer loop: fetch from the next offset with a small max_bytes, decode, advance.
fn consume_all(log: &FakeLog, max_bytes: usize) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut next = 0;
    while next < log.end_offset {
        let chunk = log.fetch(next, max_bytes);
        let records = decode_batches(chunk).unwrap();
        assert!(
            !records.is_empty(),
            "max_bytes {max_bytes} is below one batch; a real fetch returns it whole"
        );
        out.extend(records.into_iter().filter(|r| r.offset >= next));
        next = out.last().unwrap().offset + 1;
    }
    out
}

#[test]
fn produced_records_come_back_per_partition_in_order_on_kafkas_partitions() {
    let config = AccumulatorConfig {
        max_batch_bytes: 1024,
        linger: Duration::from_millis(5),
        // Three partitions' open batches cannot all fill up: backpressure must kick in.
        buffer_memory: 2048,
        compression: Compression::None,
    };
    let mut acc = Accumulator::new(config).unwrap();
    let mut partitioner = Partitioner::new(42);
    let mut logs: BTreeMap<i32, FakeLog> = BTreeMap::new();
    let mut sent = Vec::new();
    let mut expected: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut pushed_back = 0;
    let t0 = Instant::now();

    for i in 0..2_000 {
        let now = t0 + Duration::from_micros(i as u64 * 10);
        let mut r = record(i, i % 3 != 0);
        let p = partitioner.partition(r.key.as_deref(), PARTITIONS).unwrap();
        if let Some(k) = &r.key {
            assert_eq!(p, partition_for_key(k, PARTITIONS).unwrap());
        }
        expected.entry(p).or_default().push(r.clone());
        loop {
            match acc.add(p, r, now).unwrap() {
                Append::Added { .. } => break,
                Append::Full(back) => {
                    // Backpressure: send what is ready (all of it, now), then retry.
                    r = back;
                    pushed_back += 1;
                    let ready = acc.ready(now).unwrap();
                    assert!(
                        !ready.is_empty(),
                        "Full with nothing to send would deadlock"
                    );
                    send(ready, &mut acc, &mut partitioner, &mut logs, &mut sent);
                }
            }
        }
        let ready = acc.ready(now).unwrap();
        send(ready, &mut acc, &mut partitioner, &mut logs, &mut sent);
    }
    let rest = acc.drain_all().unwrap();
    send(rest, &mut acc, &mut partitioner, &mut logs, &mut sent);
    assert!(acc.is_empty());
    assert_eq!(acc.used_bytes(), 0, "every sent batch released its memory");
    assert!(pushed_back > 0, "the memory cap never pushed back");

    for (p, want) in &expected {
        let log = &logs[p];
        for max_bytes in [1024, 1500, 64 * 1024] {
            let got = consume_all(log, max_bytes);
            assert_eq!(
                got.len(),
                want.len(),
                "partition {p}, max_bytes {max_bytes}"
            );
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g.offset, i as i64, "offsets are dense from 0");
                assert_eq!(g.key, w.key);
                assert_eq!(g.value, w.value);
                assert_eq!(g.headers, w.headers);
                assert_eq!(g.timestamp_ms, w.timestamp_ms);
            }
        }
    }
    assert!(
        sent.len() > 3,
        "2,000 records of ~60 B must take several 1 KiB batches"
    );
}

#[test]
fn unkeyed_records_fill_one_partition_batch_before_moving_on() {
    let config = AccumulatorConfig {
        max_batch_bytes: 2048,
        linger: Duration::from_secs(60),
        buffer_memory: 1 << 20,
        compression: Compression::None,
    };
    let mut acc = Accumulator::new(config).unwrap();
    let mut partitioner = Partitioner::new(7);
    let mut logs: BTreeMap<i32, FakeLog> = BTreeMap::new();
    let mut sent = Vec::new();
    let t0 = Instant::now();
    for i in 0..600 {
        let r = record(i, false);
        let p = partitioner.partition(None, PARTITIONS).unwrap();
        let _ = acc.add(p, r, t0).unwrap();
        let ready = acc.ready(t0).unwrap();
        send(ready, &mut acc, &mut partitioner, &mut logs, &mut sent);
    }
    let sealed = sent.len();
    assert!(
        sealed >= 5,
        "600 x ~60 B fill several 2 KiB batches, got {sealed}"
    );
    // Linger is a minute: only full batches were sent, so each is near 2 KiB, and
    // consecutive batches went to different partitions (sticky moved after each).
    for (a, b) in sent.iter().zip(sent.iter().skip(1)) {
        assert_ne!(
            a, b,
            "sticky partitioner stayed after its batch was sent: {sent:?}"
        );
    }
    for log in logs.values() {
        for w in log.index.windows(2) {
            let batch_len = w[1].0 - w[0].0;
            assert!(
                batch_len > 2048 - 100 && batch_len <= 2048,
                "batch of {batch_len} B"
            );
        }
    }
}
