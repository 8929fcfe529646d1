//! RecordBatch v2 bytes: encoding a producer's records into one batch, and decoding the
//! concatenated batches a fetch returns.
//!
//! The record layout itself is the kafka-protocol crate's (`RecordBatchEncoder`,
//! `RecordBatchDecoder`); this file adds what it lacks for us: the batch framing walk
//! (so a trailing partial batch from a `max_bytes` cut is ignored and a bad CRC names
//! its batch's offset), our error type, and a compression enum that only claims the
//! codecs this build really has.
//!
//! Batch header (61 bytes, big-endian), for reference:
//! ```text
//!  0 base offset i64 | 8 batch length i32 | 12 partition leader epoch i32 | 16 magic i8 (=2)
//! 17 crc u32 (CRC-32C of bytes 21..) | 21 attributes i16 | 23 last offset delta i32
//! 27 first timestamp i64 | 35 max timestamp i64 | 43 producer id i64 | 51 producer epoch i16
//! 53 base sequence i32 | 57 record count i32 | 61 records...
//! ```

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    self as kr, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{Record, StoredRecord};
use crate::error::{BrokerError, Result};

/// Bytes before a batch's length field ends: base offset (8) + batch length (4).
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, records excluded.
pub(crate) const BATCH_HEADER_BYTES: usize = 61;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const FIRST_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
const CONTROL_FLAG: i16 = 1 << 5;

/// The compression codec of a batch, numbered as Kafka's attribute bits 0–2.
///
/// All of Kafka's codecs are named so that batches from other producers can be
/// described and refused clearly; only [`Compression::SUPPORTED`] can be encoded or
/// decoded by this build. Switching a codec on means enabling its kafka-protocol
/// feature in the root Cargo.toml and adding it to `SUPPORTED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression: the default, and the only codec this build supports today.
    #[default]
    None,
    /// gzip (attribute value 1).
    Gzip,
    /// Snappy (attribute value 2).
    Snappy,
    /// LZ4 frame (attribute value 3).
    Lz4,
    /// Zstandard (attribute value 4).
    Zstd,
}

impl Compression {
    /// The codecs compiled into this build (kafka-protocol is built without its
    /// compression features, which need a C compiler and add build time).
    pub const SUPPORTED: &'static [Compression] = &[Compression::None];

    /// The name operators type and logs print (Kafka's `compression.type` values).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Whether this build can encode and decode batches with this codec.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// Returns `self` if supported, else the error that names the supported codecs, so
    /// every entry point refuses an unsupported codec with the same sentence.
    pub fn require_supported(self) -> Result<Self> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(BrokerError::UnsupportedCompression {
                codec: self.name().to_owned(),
                supported: supported_list(),
            })
        }
    }

    /// The codec for Kafka's attribute bits, or `None` for a value Kafka never defined.
    fn from_attribute(bits: i16) -> Option<Self> {
        match bits {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    fn to_kafka(self) -> kr::Compression {
        match self {
            Compression::None => kr::Compression::None,
            Compression::Gzip => kr::Compression::Gzip,
            Compression::Snappy => kr::Compression::Snappy,
            Compression::Lz4 => kr::Compression::Lz4,
            Compression::Zstd => kr::Compression::Zstd,
        }
    }
}

fn supported_list() -> String {
    Compression::SUPPORTED
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = BrokerError;

    /// Parses a `compression.type` name. A known but unsupported codec parses (so the
    /// caller can decide); an unknown name is an error listing the valid ones.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(BrokerError::InvalidRequest {
                reason: format!(
                    "unknown compression {s:?}; use one of none, gzip, snappy, lz4, zstd"
                ),
            }),
        }
    }
}

/// The batch-level fields of an encoded batch.
///
/// It exists because plain producers want Kafka's "no producer" defaults, while
/// idempotent producers (and tests simulating a log) need to set the producer id,
/// epoch, base sequence and base offset explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Offset of the first record. Producers send 0; the leader rewrites it.
    pub base_offset: i64,
    /// Idempotent producer id, or -1 for none.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1 for none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1 for none.
    pub base_sequence: i32,
    /// The leader epoch field; producers send -1.
    pub partition_leader_epoch: i32,
    /// The compression codec of the batch.
    pub compression: Compression,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            base_offset: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            partition_leader_epoch: -1,
            compression: Compression::None,
        }
    }
}

/// Encodes `records` as one RecordBatch v2 with a plain producer's header (base offset
/// 0, producer id/epoch/sequence -1, CRC-32C over the batch).
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Bytes> {
    encode_batch_with(
        records,
        &BatchOptions {
            compression,
            ..BatchOptions::default()
        },
    )
}

/// Encodes `records` as one RecordBatch v2 with the given batch-level fields.
///
/// Records get consecutive offsets from `base_offset` and, when `base_sequence` is not
/// -1, consecutive sequence numbers. Errors: no records, an unsupported codec, or two
/// headers of one record with the same key (the underlying codec keeps headers in a
/// map, so a repeated key would be silently dropped; refusing is the honest choice).
pub fn encode_batch_with(records: &[Record], options: &BatchOptions) -> Result<Bytes> {
    if records.is_empty() {
        return Err(BrokerError::InvalidRequest {
            reason: "cannot encode an empty record batch; add at least one record".to_owned(),
        });
    }
    options.compression.require_supported()?;
    let count = i32::try_from(records.len()).map_err(|_| BrokerError::InvalidRequest {
        reason: format!(
            "{} records do not fit in one batch; split them",
            records.len()
        ),
    })?;
    let mut kafka_records = Vec::with_capacity(records.len());
    for (i, r) in (0..count).zip(records) {
        kafka_records.push(to_kafka_record(r, i, options)?);
    }
    // Sized up front: growing the buffer while encoding copied every batch several times
    // (12% of the producer's instructions for 1-KiB records, BENCHMARKS.md).
    let body: usize = records
        .iter()
        .map(|r| {
            let headers: usize = r
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 10)
                .sum();
            r.key.as_ref().map_or(0, Bytes::len)
                + r.value.as_ref().map_or(0, Bytes::len)
                + headers
                + 32
        })
        .sum();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + body);
    RecordBatchEncoder::encode(
        &mut buf,
        kafka_records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: options.compression.to_kafka(),
        },
    )
    .map_err(|e| BrokerError::InvalidBatch {
        reason: format!("cannot encode batch: {e}"),
    })?;
    Ok(buf.freeze())
}

fn to_kafka_record(r: &Record, index: i32, options: &BatchOptions) -> Result<kr::Record> {
    let mut out = kr::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: options.partition_leader_epoch,
        producer_id: options.producer_id,
        producer_epoch: options.producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: options.base_offset + i64::from(index),
        // The encoder keeps records in one batch only while offset - sequence is constant,
        // so sequences advance with offsets even when there is no producer (-1, 0, 1...);
        // the batch header then carries base_sequence exactly as given.
        sequence: options.base_sequence.wrapping_add(index),
        timestamp: r.timestamp_ms,
        key: r.key.clone(),
        value: r.value.clone(),
        headers: Default::default(),
    };
    for (k, v) in &r.headers {
        let previous = out
            .headers
            .insert(StrBytes::from_string(k.clone()), v.clone());
        if previous.is_some() {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "record {index} has header {k:?} more than once; give each header a distinct key"
                ),
            });
        }
    }
    Ok(out)
}

/// Decodes one or more concatenated batches (as a fetch returns them) into records
/// with absolute offsets, in order.
///
/// A trailing partial batch (a fetch's `max_bytes` cut it) is ignored, as Kafka
/// consumers do. Control batches (transaction markers) carry no application records
/// and are skipped. A batch with a bad CRC, wrong magic byte or undecodable records is
/// an error naming its base offset; a batch with an unsupported codec is an
/// `UnsupportedCompression` error.
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<StoredRecord>> {
    decode_batches_from(Bytes::copy_from_slice(bytes))
}

/// As [`decode_batches`], without copying: the returned keys, values and header values
/// share `bytes`.
pub fn decode_batches_from(bytes: Bytes) -> Result<Vec<StoredRecord>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= LOG_OVERHEAD {
        let base_offset = read_i64(&bytes[pos..]);
        let length = read_i32(&bytes[pos + 8..]);
        let min_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;
        if length < min_length {
            return Err(corrupt(
                base_offset,
                format!("batch length {length} is below the {min_length}-byte v2 batch header"),
            ));
        }
        let end = pos + LOG_OVERHEAD + length as usize;
        if end > bytes.len() {
            // A partial batch can only be the last thing in the buffer.
            break;
        }
        let batch = bytes.slice(pos..end);
        decode_one(base_offset, batch, &mut out)?;
        pos = end;
    }
    Ok(out)
}

fn decode_one(base_offset: i64, batch: Bytes, out: &mut Vec<StoredRecord>) -> Result<()> {
    let magic = batch[MAGIC_OFFSET] as i8;
    if magic != 2 {
        return Err(corrupt(
            base_offset,
            format!("magic byte is {magic}, expected 2 (only RecordBatch v2 is supported)"),
        ));
    }
    let stored_crc = u32::from_be_bytes(
        batch[CRC_OFFSET..CRC_OFFSET + 4]
            .try_into()
            .expect("4-byte slice"),
    );
    let actual_crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    if stored_crc != actual_crc {
        return Err(corrupt(
            base_offset,
            format!("CRC-32C mismatch (stored {stored_crc:#010x}, computed {actual_crc:#010x})"),
        ));
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]]);
    let bits = attributes & COMPRESSION_MASK;
    let compression = Compression::from_attribute(bits)
        .ok_or_else(|| corrupt(base_offset, format!("unknown compression attribute {bits}")))?;
    compression.require_supported()?;
    if attributes & CONTROL_FLAG != 0 {
        return Ok(());
    }
    let records_len = batch.len() - BATCH_HEADER_BYTES;
    let first_ts = read_i64(&batch[FIRST_TIMESTAMP_OFFSET..]);
    // LogAppendTime: the broker's append time, kept once as the batch's max timestamp,
    // is every record's timestamp (Kafka ignores the per-record deltas then).
    let log_append_ts =
        (attributes & LOG_APPEND_TIME_FLAG != 0).then(|| read_i64(&batch[MAX_TIMESTAMP_OFFSET..]));
    let mut buf = batch;
    let set =
        RecordBatchDecoder::decode(&mut buf).map_err(|e| corrupt(base_offset, e.to_string()))?;
    out.reserve(set.records.len());
    let mut decoded_len = 0;
    for r in set.records {
        decoded_len += record_size(
            r.offset - base_offset,
            r.timestamp - first_ts,
            r.key.as_ref(),
            r.value.as_ref(),
            r.headers.iter().map(|(k, v)| (k.len(), v.as_ref())),
        );
        out.push(StoredRecord {
            offset: r.offset,
            timestamp_ms: log_append_ts.unwrap_or(r.timestamp),
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect(),
        });
    }
    // The codec keeps headers in a map, so a record with a repeated header key (legal
    // in Kafka) would come back with a header silently missing, and bytes after the
    // last record would be ignored. Re-measuring what was decoded catches both.
    if compression == Compression::None && decoded_len != records_len {
        return Err(corrupt(
            base_offset,
            format!(
                "its records take {records_len} bytes but decode to {decoded_len}; a record repeats a header key (not supported by this client) or the batch has trailing bytes"
            ),
        ));
    }
    Ok(())
}

/// Bytes a zigzag varint of `v` takes, as Kafka encodes record fields.
pub(crate) fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes of a nullable length-prefixed field (key, value, header value).
pub(crate) fn len_field(b: Option<&Bytes>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

/// Exact encoded size of one record, length prefix included.
fn record_size<'a>(
    offset_delta: i64,
    timestamp_delta: i64,
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: impl ExactSizeIterator<Item = (usize, Option<&'a Bytes>)>,
) -> usize {
    let mut body = 1
        + varint_len(timestamp_delta)
        + varint_len(offset_delta)
        + len_field(key)
        + len_field(value)
        + varint_len(headers.len() as i64);
    for (key_len, v) in headers {
        body += varint_len(key_len as i64) + key_len + len_field(v);
    }
    body + varint_len(body as i64)
}

fn corrupt(offset: i64, reason: String) -> BrokerError {
    BrokerError::CorruptBatch { offset, reason }
}

fn read_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8-byte slice"))
}

fn read_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().expect("4-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                key: Some(Bytes::from_static(b"user-1")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![
                    ("trace".to_owned(), Some(Bytes::from_static(b"abc"))),
                    ("empty".to_owned(), Some(Bytes::new())),
                    ("nothing".to_owned(), None),
                ],
                timestamp_ms: 1_700_000_000_123,
            },
            Record {
                key: None,
                value: None,
                headers: vec![],
                timestamp_ms: 1_700_000_000_100,
            },
            Record {
                key: Some(Bytes::new()),
                value: Some(Bytes::from(vec![0u8, 255, 7])),
                headers: vec![("ü-key".to_owned(), Some(Bytes::from_static(b"\x00\x01")))],
                timestamp_ms: 1_700_000_009_999,
            },
        ]
    }

    fn assert_same(stored: &[StoredRecord], sent: &[Record], first_offset: i64) {
        assert_eq!(stored.len(), sent.len());
        for (i, (s, r)) in stored.iter().zip(sent).enumerate() {
            assert_eq!(s.offset, first_offset + i as i64);
            assert_eq!(s.timestamp_ms, r.timestamp_ms, "record {i}");
            assert_eq!(s.key, r.key, "record {i}");
            assert_eq!(s.value, r.value, "record {i}");
            assert_eq!(s.headers, r.headers, "record {i}");
        }
    }

    /// Rewrites a batch's base offset the way a leader does when it appends it.
    fn at_offset(batch: &Bytes, base: i64) -> Vec<u8> {
        let mut b = batch.to_vec();
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn round_trip_keeps_keys_values_nulls_headers_and_timestamps() {
        let records = sample();
        let bytes = encode_batch(&records, Compression::None).unwrap();
        assert_eq!(bytes[MAGIC_OFFSET], 2);
        assert_eq!(read_i64(&bytes), 0, "producers send base offset 0");
        assert_eq!(read_i32(&bytes[8..]) as usize, bytes.len() - LOG_OVERHEAD);
        assert_same(&decode_batches(&bytes).unwrap(), &records, 0);
    }

    #[test]
    fn header_carries_no_producer_by_default() {
        let bytes = encode_batch(&sample(), Compression::None).unwrap();
        assert_eq!(read_i64(&bytes[43..]), -1, "producer id");
        assert_eq!(
            i16::from_be_bytes([bytes[51], bytes[52]]),
            -1,
            "producer epoch"
        );
        assert_eq!(read_i32(&bytes[53..]), -1, "base sequence");
        assert_eq!(read_i32(&bytes[57..]), 3, "record count");
        assert_eq!(read_i32(&bytes[23..]), 2, "last offset delta");
    }

    #[test]
    fn encode_batch_with_sets_idempotence_fields() {
        let opts = BatchOptions {
            base_offset: 1000,
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: 41,
            ..BatchOptions::default()
        };
        let records = sample();
        let bytes = encode_batch_with(&records, &opts).unwrap();
        assert_eq!(read_i64(&bytes), 1000);
        assert_eq!(read_i64(&bytes[43..]), 77);
        assert_eq!(i16::from_be_bytes([bytes[51], bytes[52]]), 3);
        assert_eq!(read_i32(&bytes[53..]), 41);
        assert_eq!(read_i32(&bytes[57..]), 3, "still one batch of three");
        assert_same(&decode_batches(&bytes).unwrap(), &records, 1000);
    }

    #[test]
    fn flipped_byte_fails_the_crc_and_names_the_batch_offset() {
        let bytes = encode_batch(&sample(), Compression::None).unwrap();
        let good = at_offset(&bytes, 10);
        let mut log = good.clone();
        let mut bad = at_offset(&bytes, 13);
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        log.extend_from_slice(&bad);
        let err = decode_batches(&log).unwrap_err();
        assert!(
            matches!(err, BrokerError::CorruptBatch { offset: 13, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("offset 13") && msg.contains("CRC"), "{msg}");
        assert_eq!(err.code(), crate::ErrorCode::CorruptMessage);
    }

    #[test]
    fn wrong_magic_byte_is_refused_with_its_offset() {
        let mut bytes = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        bytes[MAGIC_OFFSET] = 1;
        let msg = decode_batches(&bytes).unwrap_err().to_string();
        assert!(
            msg.contains("offset 0") && msg.contains("magic byte is 1"),
            "{msg}"
        );
    }

    #[test]
    fn concatenated_batches_decode_with_absolute_offsets() {
        let a = encode_batch(&sample(), Compression::None).unwrap();
        let b = encode_batch(&sample()[..1], Compression::None).unwrap();
        // A log with a gap: 3 records at 500.., then 1 record at 900.
        let mut log = at_offset(&a, 500);
        log.extend(at_offset(&b, 900));
        let got = decode_batches(&log).unwrap();
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![500, 501, 502, 900]);
        assert_same(&got[..3], &sample(), 500);
    }

    #[test]
    fn trailing_partial_batch_is_ignored() {
        let a = encode_batch(&sample(), Compression::None).unwrap();
        let b = at_offset(&a, 3);
        for cut in [
            1,
            LOG_OVERHEAD - 1,
            LOG_OVERHEAD,
            LOG_OVERHEAD + 5,
            b.len() - 1,
        ] {
            let mut fetch = a.to_vec();
            fetch.extend_from_slice(&b[..cut]);
            let got = decode_batches(&fetch).unwrap();
            assert_eq!(got.len(), 3, "cut at {cut}");
        }
        assert!(decode_batches(&[]).unwrap().is_empty());
    }

    #[test]
    fn impossible_batch_length_is_corrupt_not_partial() {
        let mut bytes = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        bytes[8..12].copy_from_slice(&5i32.to_be_bytes());
        let err = decode_batches(&bytes).unwrap_err();
        assert!(
            matches!(err, BrokerError::CorruptBatch { offset: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unsupported_compression_is_refused_on_encode_and_decode() {
        let err = encode_batch(&sample(), Compression::Gzip).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gzip") && msg.contains("supported: none"),
            "{msg}"
        );
        assert_eq!(err.code(), crate::ErrorCode::UnsupportedCompressionType);

        // A batch from another producer that says zstd, with its CRC made valid.
        let mut bytes = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        bytes[ATTRIBUTES_OFFSET + 1] |= 4;
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let err = decode_batches(&bytes).unwrap_err();
        assert!(
            matches!(&err, BrokerError::UnsupportedCompression { codec, .. } if codec == "zstd"),
            "{err:?}"
        );
    }

    #[test]
    fn control_batches_yield_no_records() {
        let mut bytes = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        bytes[ATTRIBUTES_OFFSET + 1] |= CONTROL_FLAG as u8;
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let mut log = bytes;
        log.extend(at_offset(
            &encode_batch(&sample(), Compression::None).unwrap(),
            3,
        ));
        let got = decode_batches(&log).unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }

    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn repeated_header_key_from_another_producer_is_an_error_not_a_silent_loss() {
        let r = Record::new("v", 5)
            .with_header("hA", Some(Bytes::from_static(b"1")))
            .with_header("hB", Some(Bytes::from_static(b"2")));
        let mut bytes = encode_batch(&[r], Compression::None).unwrap().to_vec();
        // Rename header "hB" to "hA" in place, as a Java producer may legally send.
        let at = bytes.windows(2).rposition(|w| w == b"hB").unwrap();
        bytes[at + 1] = b'A';
        fix_crc(&mut bytes);
        let err = decode_batches(&at_offset(&Bytes::from(bytes), 70)).unwrap_err();
        assert!(
            matches!(err, BrokerError::CorruptBatch { offset: 70, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("repeats a header key"), "{err}");
    }

    #[test]
    fn log_append_time_batches_give_every_record_the_batch_max_timestamp() {
        let mut bytes = encode_batch(&sample(), Compression::None).unwrap().to_vec();
        bytes[ATTRIBUTES_OFFSET + 1] |= LOG_APPEND_TIME_FLAG as u8;
        let broker_time = 1_800_000_000_000i64;
        bytes[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&broker_time.to_be_bytes());
        fix_crc(&mut bytes);
        let got = decode_batches(&bytes).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|r| r.timestamp_ms == broker_time), "{got:?}");
    }

    #[test]
    fn empty_batch_and_repeated_header_are_refused() {
        assert!(encode_batch(&[], Compression::None).is_err());
        let r = Record::new("v", 0)
            .with_header("a", None)
            .with_header("a", Some(Bytes::from_static(b"2")));
        let msg = encode_batch(&[r], Compression::None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"a\" more than once"), "{msg}");
    }

    #[test]
    fn compression_names_parse_and_print() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        let msg = "brotli".parse::<Compression>().unwrap_err().to_string();
        assert!(msg.contains("brotli") && msg.contains("zstd"), "{msg}");
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            arb_bytes(),
            arb_bytes(),
            proptest::collection::btree_map("[a-zA-Z0-9_.ü-]{0,12}", arb_bytes(), 0..4),
            // Real timestamps, plus the -1 "none" marker, in one batch.
            prop_oneof![Just(-1i64), 0i64..4_102_444_800_000],
        )
            .prop_map(|(key, value, headers, timestamp_ms)| Record {
                key,
                value,
                headers: headers.into_iter().collect(),
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_records_round_trip(
            records in proptest::collection::vec(arb_record(), 1..20),
            base in 0i64..(1 << 40),
        ) {
            let bytes = encode_batch(&records, Compression::None).unwrap();
            let got = decode_batches(&at_offset(&bytes, base)).unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (i, (s, r)) in got.iter().zip(&records).enumerate() {
                prop_assert_eq!(s.offset, base + i as i64);
                prop_assert_eq!(s.timestamp_ms, r.timestamp_ms);
                prop_assert_eq!(&s.key, &r.key);
                prop_assert_eq!(&s.value, &r.value);
                prop_assert_eq!(&s.headers, &r.headers);
            }
        }
    }
}
