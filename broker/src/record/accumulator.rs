//! The producer's record accumulator: groups records into per-partition batches and
//! says when a batch should be sent.
//!
//! ```text
//!  add(p, record, now) ──▶ open batch of p ──(would exceed max_batch_bytes)──▶ sealed ─┐
//!                              │ (created + linger <= now, or memory exhausted)         │
//!                              └──────────────────────────────▶ ready(now) ◀────────────┘
//!                                                                  │ ReadyBatch bytes
//!                                              release(&batch) ◀── sender, once acked or failed
//! ```
//!
//! A plain struct with no clock and no tasks: the async client passes `now` in, sleeps
//! until [`Accumulator::next_ready_at`], and waits (on its own notify) when
//! [`Append::Full`] says the buffer is exhausted. Memory is accounted from `add` until
//! the sender calls [`Accumulator::release`], like Kafka's `buffer.memory`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Record;
use super::codec::{BATCH_HEADER_BYTES, Compression, encode_batch, len_field, varint_len};
use crate::error::{BrokerError, Result};

/// Limits of the accumulator, with Kafka's producer defaults.
///
/// It exists so that the client's batching knobs are validated once, together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccumulatorConfig {
    /// Target size of an encoded batch (Kafka `batch.size`). A batch is sealed before a
    /// record would push it over; a single record larger than this goes alone.
    pub max_batch_bytes: usize,
    /// How long a batch waits for more records after its first one (Kafka `linger.ms`).
    pub linger: Duration,
    /// Bytes of records buffered or in flight before `add` pushes back
    /// (Kafka `buffer.memory`).
    pub buffer_memory: usize,
    /// Codec of the batches; must be supported by this build.
    pub compression: Compression,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        AccumulatorConfig {
            max_batch_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory: 32 * 1024 * 1024,
            compression: Compression::None,
        }
    }
}

impl AccumulatorConfig {
    /// Checks the rules across fields and returns the config if it is usable.
    pub fn validate(self) -> Result<Self> {
        let min = BATCH_HEADER_BYTES + 8;
        if self.max_batch_bytes < min {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "max_batch_bytes {} is too small to hold a record; use at least {min}",
                    self.max_batch_bytes
                ),
            });
        }
        if self.buffer_memory < self.max_batch_bytes {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "buffer_memory {} is smaller than max_batch_bytes {}; raise buffer_memory",
                    self.buffer_memory, self.max_batch_bytes
                ),
            });
        }
        self.compression.require_supported()?;
        Ok(self)
    }
}

/// What [`Accumulator::add`] did with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Full record was not buffered and must be retried"]
pub enum Append {
    /// Buffered. `batch_sealed` is true when this add sealed a batch (full, or an
    /// oversize record alone), so the sender should call `ready` now, not at linger.
    Added {
        /// A batch became ready because of this add.
        batch_sealed: bool,
    },
    /// The buffer is full: the record is handed back untouched and nothing changed
    /// except that open batches are now ready at once (so sending can free memory).
    /// Retry after a [`Accumulator::release`].
    Full(Record),
}

/// An encoded batch ready to send to a partition's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyBatch {
    /// The partition it is for.
    pub partition: i32,
    /// RecordBatch v2 bytes, base offset 0.
    pub bytes: Bytes,
    /// How many records it holds.
    pub record_count: usize,
    /// Buffer memory it holds until [`Accumulator::release`] (its size estimate, an
    /// upper bound of `bytes.len()`).
    pub reserved: usize,
}

/// A batch taken out of the accumulator but not encoded yet. It exists so that the
/// caller can encode outside whatever lock guards the accumulator: encoding is the
/// costly part, and adds of other records need not wait for it.
#[derive(Debug)]
pub struct SealedBatch {
    partition: i32,
    records: Vec<Record>,
    reserved: usize,
}

impl SealedBatch {
    /// The partition it is for.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// How many records it holds.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Buffer memory it holds until released.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Encodes it as one RecordBatch v2. Headers were checked when the records were
    /// added, so an uncompressed batch does not fail here.
    pub fn encode(self, compression: Compression) -> Result<ReadyBatch> {
        Ok(ReadyBatch {
            partition: self.partition,
            bytes: encode_batch(&self.records, compression)?,
            record_count: self.records.len(),
            reserved: self.reserved,
        })
    }
}

#[derive(Debug)]
struct OpenBatch {
    records: Vec<Record>,
    /// Sum over records of their size bound, timestamp delta excluded.
    body_bytes: usize,
    min_ts: i64,
    max_ts: i64,
    created: Instant,
}

impl OpenBatch {
    fn estimate(&self) -> usize {
        batch_estimate(
            self.body_bytes,
            self.records.len(),
            self.min_ts,
            self.max_ts,
        )
    }
}

#[derive(Debug)]
struct Sealed {
    partition: i32,
    batch: OpenBatch,
}

/// Per-partition batching with linger, size limit and a memory cap.
#[derive(Debug)]
pub struct Accumulator {
    config: AccumulatorConfig,
    open: BTreeMap<i32, OpenBatch>,
    sealed: VecDeque<Sealed>,
    /// Bytes reserved: estimates of open and sealed batches plus encoded bytes handed
    /// out by `ready` and not yet released.
    used: usize,
    /// Set when an add was refused for memory: every open batch is ready at once.
    exhausted: bool,
}

impl Accumulator {
    /// An empty accumulator; the config is validated here.
    pub fn new(config: AccumulatorConfig) -> Result<Self> {
        Ok(Accumulator {
            config: config.validate()?,
            open: BTreeMap::new(),
            sealed: VecDeque::new(),
            used: 0,
            exhausted: false,
        })
    }

    /// The validated config.
    pub fn config(&self) -> &AccumulatorConfig {
        &self.config
    }

    /// Bytes currently reserved (buffered plus handed out and not yet released).
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Adds a record to `partition`'s open batch at time `now`.
    ///
    /// Errors (nothing buffered): a record that alone exceeds `buffer_memory` (it could
    /// never fit), or a record with a repeated header key (it could not be encoded).
    pub fn add(&mut self, partition: i32, record: Record, now: Instant) -> Result<Append> {
        check_headers(&record)?;
        let alone = batch_estimate(
            record_bound(&record, 0),
            1,
            record.timestamp_ms,
            record.timestamp_ms,
        );
        if alone > self.config.buffer_memory {
            return Err(BrokerError::RecordLargerThanBuffer {
                size: alone,
                buffer_memory: self.config.buffer_memory,
            });
        }

        // Work out the reservation first, so that a Full changes no batch.
        let (delta, seal_current, seal_new) = match self.open.get(&partition) {
            Some(b) => {
                let body = b.body_bytes + record_bound(&record, b.records.len());
                let grown = batch_estimate(
                    body,
                    b.records.len() + 1,
                    b.min_ts.min(record.timestamp_ms),
                    b.max_ts.max(record.timestamp_ms),
                );
                if grown <= self.config.max_batch_bytes {
                    (grown - b.estimate(), false, false)
                } else {
                    (alone, true, alone > self.config.max_batch_bytes)
                }
            }
            None => (alone, false, alone > self.config.max_batch_bytes),
        };
        if self.used + delta > self.config.buffer_memory {
            if !self.exhausted {
                tracing::debug!(
                    partition,
                    used_bytes = self.used,
                    buffer_memory = self.config.buffer_memory,
                    "producer buffer full; sending open batches now and holding new records"
                );
            }
            self.exhausted = true;
            return Ok(Append::Full(record));
        }

        if seal_current && let Some(b) = self.open.remove(&partition) {
            self.sealed.push_back(Sealed {
                partition,
                batch: b,
            });
        }
        self.used += delta;
        let batch = self.open.entry(partition).or_insert_with(|| OpenBatch {
            records: Vec::new(),
            body_bytes: 0,
            min_ts: record.timestamp_ms,
            max_ts: record.timestamp_ms,
            created: now,
        });
        batch.body_bytes += record_bound(&record, batch.records.len());
        batch.min_ts = batch.min_ts.min(record.timestamp_ms);
        batch.max_ts = batch.max_ts.max(record.timestamp_ms);
        batch.records.push(record);
        if seal_new && let Some(b) = self.open.remove(&partition) {
            // Larger than a batch on its own: it goes alone, now.
            self.sealed.push_back(Sealed {
                partition,
                batch: b,
            });
        }
        Ok(Append::Added {
            batch_sealed: seal_current || seal_new,
        })
    }

    /// Batches to send at `now`: every sealed batch, and every open batch whose linger
    /// has passed (all of them while memory is exhausted). Sealed batches come first,
    /// in the order they were sealed, so a partition's batches leave in record order.
    pub fn ready(&mut self, now: Instant) -> Result<Vec<ReadyBatch>> {
        let compression = self.config.compression;
        self.take_ready(now)
            .into_iter()
            .map(|b| b.encode(compression))
            .collect()
    }

    /// As [`Accumulator::ready`], without encoding: the caller encodes each batch.
    pub fn take_ready(&mut self, now: Instant) -> Vec<SealedBatch> {
        let linger = self.config.linger;
        let exhausted = std::mem::take(&mut self.exhausted);
        let due: Vec<i32> = self
            .open
            .iter()
            .filter(|(_, b)| exhausted || now.saturating_duration_since(b.created) >= linger)
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            if let Some(batch) = self.open.remove(&partition) {
                self.sealed.push_back(Sealed { partition, batch });
            }
        }
        self.take_sealed()
    }

    /// Every buffered record, as batches, regardless of linger: for `flush` and close.
    pub fn drain_all(&mut self) -> Result<Vec<ReadyBatch>> {
        let compression = self.config.compression;
        self.take_all()
            .into_iter()
            .map(|b| b.encode(compression))
            .collect()
    }

    /// As [`Accumulator::drain_all`], without encoding: the caller encodes each batch.
    pub fn take_all(&mut self) -> Vec<SealedBatch> {
        self.exhausted = false;
        let open = std::mem::take(&mut self.open);
        self.sealed.extend(
            open.into_iter()
                .map(|(partition, batch)| Sealed { partition, batch }),
        );
        self.take_sealed()
    }

    /// Gives back the memory of a batch that `ready`/`drain_all` returned, once the
    /// broker acknowledged it or it failed for good. Call it exactly once per batch.
    pub fn release(&mut self, batch: &ReadyBatch) {
        self.release_reserved(batch.reserved);
    }

    /// Gives back memory reserved by a batch that never became a [`ReadyBatch`] (its
    /// encoding failed): see [`SealedBatch::reserved`].
    pub fn release_reserved(&mut self, reserved: usize) {
        self.used = self.used.saturating_sub(reserved);
    }

    /// When the next batch becomes ready without another add: now-or-past if a batch is
    /// sealed or memory is exhausted, else the earliest linger deadline; `None` when
    /// nothing is buffered. The sender sleeps until then.
    pub fn next_ready_at(&self) -> Option<Instant> {
        let earliest_open = self.open.values().map(|b| b.created).min();
        if let Some(s) = self.sealed.front() {
            return Some(s.batch.created);
        }
        if self.exhausted {
            return earliest_open;
        }
        earliest_open.map(|c| c + self.config.linger)
    }

    /// Whether any record is buffered and not yet handed out.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty()
    }

    fn take_sealed(&mut self) -> Vec<SealedBatch> {
        self.sealed
            .drain(..)
            .map(|Sealed { partition, batch }| SealedBatch {
                partition,
                reserved: batch.estimate(),
                records: batch.records,
            })
            .collect()
    }
}

fn check_headers(record: &Record) -> Result<()> {
    for (i, (k, _)) in record.headers.iter().enumerate() {
        if record.headers[..i].iter().any(|(other, _)| other == k) {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "record has header {k:?} more than once; give each header a distinct key"
                ),
            });
        }
    }
    Ok(())
}

/// Upper bound of the encoded size of `record` at `index` in its batch, leaving out
/// the timestamp delta (which depends on the whole batch; see `batch_estimate`).
fn record_bound(record: &Record, index: usize) -> usize {
    let mut body = 1 // attributes
        + varint_len(index as i64)
        + len_field(record.key.as_ref())
        + len_field(record.value.as_ref())
        + varint_len(record.headers.len() as i64);
    for (k, v) in &record.headers {
        body += varint_len(k.len() as i64) + k.len() + len_field(v.as_ref());
    }
    // The length prefix covers the body plus a timestamp delta of at most 10 bytes.
    body + varint_len((body + 10) as i64)
}

/// Upper bound of a batch's encoded size: every timestamp delta is at most
/// `max_ts - min_ts`, so each takes at most that many varint bytes.
fn batch_estimate(body_bytes: usize, count: usize, min_ts: i64, max_ts: i64) -> usize {
    BATCH_HEADER_BYTES + body_bytes + count * varint_len(max_ts.wrapping_sub(min_ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_batch_bytes: usize, linger_ms: u64, buffer_memory: usize) -> AccumulatorConfig {
        AccumulatorConfig {
            max_batch_bytes,
            linger: Duration::from_millis(linger_ms),
            buffer_memory,
            compression: Compression::None,
        }
    }

    fn rec(i: usize, value_len: usize) -> Record {
        Record::new(vec![b'v'; value_len], 1_700_000_000_000 + i as i64)
            .with_key(format!("key-{i}"))
            .with_header("h", Some(Bytes::from_static(b"x")))
    }

    fn added(a: Append) -> bool {
        match a {
            Append::Added { batch_sealed } => batch_sealed,
            Append::Full(_) => panic!("unexpected Full"),
        }
    }

    #[test]
    fn varint_len_matches_zigzag_encoding_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(-65), 2);
        assert_eq!(varint_len(i64::MAX), 10);
        assert_eq!(varint_len(i64::MIN), 10);
    }

    #[test]
    fn batch_waits_for_linger_then_is_ready() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(config(16 * 1024, 10, 1 << 20)).unwrap();
        assert!(!added(acc.add(0, rec(0, 10), t0).unwrap()));
        assert!(!added(
            acc.add(0, rec(1, 10), t0 + Duration::from_millis(5))
                .unwrap()
        ));
        assert!(acc.ready(t0 + Duration::from_millis(9)).unwrap().is_empty());
        assert_eq!(acc.next_ready_at(), Some(t0 + Duration::from_millis(10)));
        let ready = acc.ready(t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].partition, 0);
        assert_eq!(ready[0].record_count, 2);
        let decoded = crate::record::decode_batches(&ready[0].bytes).unwrap();
        assert_eq!(decoded[1].key.as_deref(), Some(&b"key-1"[..]));
        assert!(acc.is_empty());
        assert_eq!(acc.next_ready_at(), None);
    }

    #[test]
    fn full_batch_is_ready_before_linger_and_stays_within_max_batch_bytes() {
        let t0 = Instant::now();
        let max = 1024;
        let mut acc = Accumulator::new(config(max, 60_000, 1 << 20)).unwrap();
        let mut sealed_at = None;
        for i in 0..50 {
            if added(acc.add(3, rec(i, 40), t0).unwrap()) {
                sealed_at.get_or_insert(i);
            }
        }
        assert!(
            sealed_at.is_some(),
            "50 x ~60 B must overflow a 1 KiB batch"
        );
        let ready = acc.ready(t0).unwrap();
        assert!(!ready.is_empty());
        let mut offsets_seen = 0;
        for b in &ready {
            assert!(b.bytes.len() <= max, "batch of {} > {max}", b.bytes.len());
            // Tight packing: one more record (~60 B) would not have fitted.
            assert!(
                b.bytes.len() > max - 70,
                "batch of {} is loosely packed",
                b.bytes.len()
            );
            offsets_seen += b.record_count;
        }
        // The still-open tail waits for linger; the rest hold the earliest records.
        let rest = acc.drain_all().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(offsets_seen + rest[0].record_count, 50);
        let values: Vec<_> = ready
            .iter()
            .chain(&rest)
            .flat_map(|b| crate::record::decode_batches(&b.bytes).unwrap())
            .map(|r| r.key.unwrap())
            .collect();
        let expected: Vec<_> = (0..50).map(|i| Bytes::from(format!("key-{i}"))).collect();
        assert_eq!(values, expected, "records keep their order across batches");
    }

    #[test]
    fn oversize_record_goes_alone_in_its_own_batch() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(config(512, 60_000, 1 << 20)).unwrap();
        assert!(!added(acc.add(1, rec(0, 10), t0).unwrap()));
        assert!(added(acc.add(1, rec(1, 4000), t0).unwrap()));
        assert!(!added(acc.add(1, rec(2, 10), t0).unwrap()));
        let ready = acc.ready(t0).unwrap();
        assert_eq!(
            ready.iter().map(|b| b.record_count).collect::<Vec<_>>(),
            vec![1, 1],
            "the small batch before it, then the big record alone"
        );
        assert!(ready[1].bytes.len() > 4000);
        let after = acc.drain_all().unwrap();
        assert_eq!(after.len(), 1);
        let keys: Vec<_> = ready
            .iter()
            .chain(&after)
            .flat_map(|b| crate::record::decode_batches(&b.bytes).unwrap())
            .map(|r| r.key.unwrap())
            .collect();
        assert_eq!(keys, vec!["key-0", "key-1", "key-2"]);
    }

    #[test]
    fn memory_cap_pushes_back_until_a_batch_is_released() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(config(1024, 60_000, 2048)).unwrap();
        let mut i = 0;
        let refused = loop {
            match acc.add(i % 4, rec(i as usize, 100), t0).unwrap() {
                Append::Added { .. } => i += 1,
                Append::Full(r) => break r,
            }
            assert!(i < 100, "the cap never pushed back");
        };
        assert_eq!(
            refused,
            rec(i as usize, 100),
            "the refused record comes back intact"
        );
        assert!(acc.used_bytes() <= 2048);
        // Refusal makes every open batch ready now, though linger is a minute away.
        let ready = acc.ready(t0).unwrap();
        assert_eq!(
            ready.iter().map(|b| b.record_count).sum::<usize>(),
            i as usize
        );
        // Handed out but not released: still counted, still full.
        assert!(matches!(
            acc.add(0, refused.clone(), t0).unwrap(),
            Append::Full(_)
        ));
        let _ = acc.ready(t0).unwrap();
        for b in &ready {
            acc.release(b);
        }
        assert_eq!(acc.used_bytes(), 0);
        assert!(matches!(
            acc.add(0, refused, t0).unwrap(),
            Append::Added { .. }
        ));
    }

    #[test]
    fn record_larger_than_buffer_memory_is_an_error_not_a_wait() {
        let mut acc = Accumulator::new(config(256, 0, 1024)).unwrap();
        let err = acc.add(0, rec(0, 5000), Instant::now()).unwrap_err();
        assert!(matches!(
            err,
            BrokerError::RecordLargerThanBuffer {
                buffer_memory: 1024,
                ..
            }
        ));
        assert!(acc.is_empty());
        assert_eq!(acc.used_bytes(), 0);
    }

    #[test]
    fn repeated_header_key_is_refused_at_add() {
        let mut acc = Accumulator::new(AccumulatorConfig::default()).unwrap();
        let r = rec(0, 1).with_header("h", None);
        let msg = acc.add(0, r, Instant::now()).unwrap_err().to_string();
        assert!(msg.contains("\"h\" more than once"), "{msg}");
        assert!(acc.is_empty());
    }

    #[test]
    fn config_validate_rejects_buffer_smaller_than_batch() {
        let msg = config(4096, 0, 1024).validate().unwrap_err().to_string();
        assert!(msg.contains("buffer_memory 1024"), "{msg}");
    }

    #[test]
    fn config_validate_rejects_unsupported_compression() {
        let c = AccumulatorConfig {
            compression: Compression::Zstd,
            ..AccumulatorConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(matches!(err, BrokerError::UnsupportedCompression { .. }));
    }

    #[test]
    fn estimate_is_an_upper_bound_even_with_out_of_order_timestamps() {
        let t0 = Instant::now();
        let mut acc = Accumulator::new(config(1 << 20, 0, 1 << 24)).unwrap();
        let stamps = [5_000_000_000i64, 1, -1, i64::MAX / 4, 42];
        for (i, ts) in stamps.iter().enumerate() {
            let mut r = rec(i, 3);
            r.timestamp_ms = *ts;
            let _ = acc.add(0, r, t0).unwrap();
        }
        let estimate = acc.used_bytes();
        let ready = acc.ready(t0).unwrap();
        assert!(
            ready[0].bytes.len() <= estimate,
            "{} > {estimate}",
            ready[0].bytes.len()
        );
        assert_eq!(acc.used_bytes(), ready[0].reserved);
    }
}
