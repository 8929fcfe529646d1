//! The Kafka RecordBatch v2 header: parse and validate it without decoding records.
//!
//! The log stores producers' bytes as they arrived, so it only needs the 61-byte header
//! (offsets, length, timestamps) and the CRC-32C, which covers everything from
//! `attributes` to the end of the batch. The base offset (bytes 0..8) and the partition
//! leader epoch (bytes 12..16) are outside the CRC, which is why the leader may rewrite
//! them in place.
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordCount i32 | 61 records...
//! ```

/// Size of the fixed batch header in bytes; the smallest possible batch.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD: usize = 12;
/// The only record format the log accepts.
pub const MAGIC_V2: i8 = 2;
/// Offset of the CRC field; the CRC covers `[CRC_START..]`.
pub(crate) const CRC_OFFSET: usize = 17;
/// First byte covered by the CRC (the attributes field).
pub const CRC_START: usize = 21;
/// Byte range of the partition leader epoch, which comparisons of stored data ignore.
pub const EPOCH_RANGE: std::ops::Range<usize> = 12..16;

/// The fields of a RecordBatch v2 header, so that the log can place, index and look up
/// batches without touching the records inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record in the batch.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field; the whole batch is `batch_length + 12`.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Record format version; always 2 once validated.
    pub magic: i8,
    /// CRC-32C of `attributes..end` as stored in the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Last offset in the batch minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch; time index and retention use it.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records actually present (a compacted batch may hold fewer than the
    /// offset span).
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Reads the header fields from the first 61 bytes of `buf`. Checks only that the
    /// bytes are there; [`validate_batch`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, String> {
        if buf.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes left, a batch header needs {HEADER_LEN}",
                buf.len()
            ));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[CRC_OFFSET..CRC_OFFSET + 4].try_into().expect("4")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        })
    }

    /// Whole size of the batch on disk, including the 12 bytes of offset and length.
    pub fn total_len(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the last record slot in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Checks what can be checked from the header alone: length, magic and the offset
    /// and record-count fields. Returns the whole batch size.
    pub fn check_shape(&self) -> Result<usize, String> {
        if (self.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(format!(
                "batchLength {} is below the {} bytes of a v2 header",
                self.batch_length,
                HEADER_LEN - LOG_OVERHEAD
            ));
        }
        if self.magic != MAGIC_V2 {
            return Err(format!(
                "magic {} is not supported; only RecordBatch v2 (magic 2) is accepted",
                self.magic
            ));
        }
        if self.last_offset_delta < 0 {
            return Err(format!(
                "lastOffsetDelta {} is negative",
                self.last_offset_delta
            ));
        }
        if self.record_count < 0
            || i64::from(self.record_count) > i64::from(self.last_offset_delta) + 1
        {
            return Err(format!(
                "recordCount {} does not fit lastOffsetDelta {} (must be 0..={})",
                self.record_count,
                self.last_offset_delta,
                i64::from(self.last_offset_delta) + 1
            ));
        }
        Ok(self.total_len())
    }
}

/// CRC-32C over the bytes the batch CRC covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Parses and fully validates the batch at the start of `buf` (length, magic, offsets,
/// record count, CRC). Returns the header; the batch is `buf[..header.total_len()]`.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(buf)?;
    let len = header.check_shape()?;
    if buf.len() < len {
        return Err(format!(
            "batch declares {len} bytes but only {} are present (truncated)",
            buf.len()
        ));
    }
    let actual = compute_crc(&buf[..len]);
    if actual != header.crc {
        return Err(format!(
            "CRC mismatch: batch says {:#010x}, contents give {actual:#010x}",
            header.crc
        ));
    }
    Ok(header)
}

/// Writes a new base offset and partition leader epoch into a batch in place. Neither is
/// covered by the CRC, so the batch stays valid.
pub fn set_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[EPOCH_RANGE].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps an idempotent producer's id, epoch and base sequence into a batch in place and
/// recomputes the CRC (the three fields are covered by it). The producer stamps a batch
/// when it first sends it, so a retry carries the same stamp and is recognised.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_stamped_batch_carries_the_producer_and_stays_valid() {
        let mut batch = make_batch(0, 2, 1_000, b"three records' bytes");
        set_producer(&mut batch, 77 << 44, 3, 41);
        let header = validate_batch(&batch).expect("still valid");
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (77 << 44, 3, 41)
        );
    }

    /// A valid batch with opaque record bytes, for unit tests of the log.
    pub(crate) fn make_batch(base: i64, delta: i32, ts: i64, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&delta.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(delta + 1).to_be_bytes());
        b.extend_from_slice(body);
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn valid_batch_parses_with_its_fields() {
        let b = make_batch(7, 3, 1000, b"abc");
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.base_offset, 7);
        assert_eq!(h.last_offset(), 10);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.max_timestamp, 1000);
        assert_eq!(h.record_count, 4);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = make_batch(0, 0, 1, b"hello");
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(validate_batch(&b).unwrap_err().contains("CRC"));
    }

    #[test]
    fn rewriting_offset_and_epoch_keeps_crc_valid() {
        let mut b = make_batch(0, 2, 1, b"x");
        set_offset_and_epoch(&mut b, 1234, 9);
        let h = validate_batch(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 9));
    }

    #[test]
    fn wrong_magic_truncation_and_bad_counts_are_named() {
        let mut b = make_batch(0, 0, 1, b"x");
        b[16] = 1;
        assert!(validate_batch(&b).unwrap_err().contains("magic"));
        let b = make_batch(0, 0, 1, b"xyz");
        assert!(
            validate_batch(&b[..b.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(validate_batch(&b[..10]).unwrap_err().contains("header"));
        let mut b = make_batch(0, 1, 1, b"x");
        b[57..61].copy_from_slice(&5i32.to_be_bytes());
        assert!(validate_batch(&b).unwrap_err().contains("recordCount"));
    }
}
