//! Client-side records: building and decoding RecordBatch v2 bytes, and choosing
//! partitions the way Kafka's default partitioner does.
//!
//! ```text
//!  app ──Record──▶ Partitioner ──partition──▶ Accumulator ──ready(now)──▶ ReadyBatch bytes ──▶ Produce
//!                  (murmur2 / sticky)          (linger, size, memory)     (encode_batch)
//!  Fetch bytes ──▶ decode_batches ──▶ StoredRecord { offset, timestamp, key, value, headers }
//! ```
//!
//! Everything here is plain data and plain functions: no sockets, no clock, no tasks.
//! The async `broker::client` drives these pieces; the broker itself never decodes
//! records (it stores and serves batch bytes as they arrived), so this module is the
//! one place that turns application records into wire bytes and back.

mod accumulator;
mod codec;
mod partitioner;

pub use accumulator::{Accumulator, AccumulatorConfig, Append, ReadyBatch, SealedBatch};
pub use codec::{
    BatchOptions, Compression, decode_batches, decode_batches_from, encode_batch, encode_batch_with,
};
pub use partitioner::{Partitioner, StickyPartitioner, murmur2, partition_for_key, to_positive};

use bytes::Bytes;

use crate::error::{BrokerError, Result};

/// A record as an application produces it, before it has an offset.
///
/// It exists apart from [`StoredRecord`] because a producer does not know, and must not
/// pretend to know, the offset the leader will assign.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The key: decides the partition (murmur2) and is kept with the record. `None` is
    /// Kafka's null key, distinct from an empty key.
    pub key: Option<Bytes>,
    /// The payload. `None` is a null value (a tombstone in compacted topics).
    pub value: Option<Bytes>,
    /// Headers in order. Keys are UTF-8 (as in Kafka); a header value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time in milliseconds since the Unix epoch (Kafka `CreateTime`).
    pub timestamp_ms: i64,
}

impl Record {
    /// A record with only a value, for the common case; the other fields can be set
    /// afterwards or with the `with_*` helpers.
    pub fn new(value: impl Into<Bytes>, timestamp_ms: i64) -> Self {
        Record {
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms,
        }
    }

    /// Sets the key, so that the record lands on the partition Kafka would choose.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends one header; kept in order.
    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((key.into(), value));
        self
    }
}

/// A record read back from a partition, with the absolute offset the log gave it.
///
/// It exists so that consumers (CLI, mirror, tests) see offsets and timestamps exactly
/// as stored, without knowing the batch layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute offset in the partition: the batch's base offset plus the record's delta.
    pub offset: i64,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, `None` for a null key.
    pub key: Option<Bytes>,
    /// The value, `None` for a null value.
    pub value: Option<Bytes>,
    /// Headers in stored order; a value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Parses one `--header` argument of the CLI, `KEY=VALUE`, into a record header.
///
/// It exists so that `meridian produce --header k=v` and any script share one rule:
/// the first `=` splits key from value (the value may contain `=`), `k=` is an empty
/// value, and the key must not be empty. A header without `=` is refused rather than
/// guessed at, because a typo would otherwise silently produce a null header.
pub fn parse_header(arg: &str) -> Result<(String, Option<Bytes>)> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "header {arg:?} has no '='; write it as KEY=VALUE (or KEY= for an empty value)"
            ),
        });
    };
    if key.is_empty() {
        return Err(BrokerError::InvalidRequest {
            reason: format!("header {arg:?} has an empty key; write it as KEY=VALUE"),
        });
    }
    Ok((
        key.to_owned(),
        Some(Bytes::copy_from_slice(value.as_bytes())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_header_splits_at_the_first_equals_sign() {
        let (k, v) = parse_header("trace=a=b").unwrap();
        assert_eq!(k, "trace");
        assert_eq!(v, Some(Bytes::from_static(b"a=b")));
    }

    #[test]
    fn parse_header_reads_key_with_nothing_after_equals_as_empty_value() {
        let (k, v) = parse_header("k=").unwrap();
        assert_eq!(k, "k");
        assert_eq!(v, Some(Bytes::new()));
    }

    #[test]
    fn parse_header_rejects_missing_equals_and_says_how_to_fix_it() {
        let err = parse_header("justakey").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"justakey\""), "{msg}");
        assert!(msg.contains("KEY=VALUE"), "{msg}");
    }

    #[test]
    fn parse_header_rejects_empty_key() {
        let msg = parse_header("=v").unwrap_err().to_string();
        assert!(msg.contains("empty key"), "{msg}");
    }
}
