//! Idempotent producers (Kafka's KIP-98 without transactions): each producer id stamps
//! its batches with an epoch and consecutive sequence numbers per partition, and the
//! partition remembers the last five batches of every producer. A retried batch (the
//! producer did not see the first answer) is recognised and answered with the offsets
//! it was first written at, instead of being written twice; a gap in the sequence
//! means a lost batch and is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), so the producer
//! cannot silently reorder or skip.
//!
//! Plain struct: the log calls [`ProducerStates::check`] before appending and
//! [`ProducerStates::record`] after; it is rebuilt from the batches at start-up.

use std::collections::{HashMap, VecDeque};

use crate::error::{BrokerError, Result};
use crate::log::batch::BatchHeader;

/// How many recent batches per producer are kept for duplicate detection (Kafka's
/// producers keep at most five requests in flight).
const KEPT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Written>,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it (not idempotent, or the next batch in sequence).
    Append,
    /// Already written at these offsets: answer with them, write nothing.
    Duplicate {
        /// Where the batch was first written.
        base_offset: i64,
        /// Its last offset.
        last_offset: i64,
    },
}

/// The idempotent producers of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

fn last_sequence(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as Kafka's do.
    let span = i64::from(h.last_offset_delta);
    ((i64::from(h.base_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerStates {
    /// Whether `h` (a batch about to be appended with new offsets) is new, a retry of a
    /// batch already written, or out of sequence.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck> {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            // A producer this partition has no state for (new, or its batches aged out
            // of the log): start from what it sends.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < p.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(BrokerError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_sequence(h);
        if let Some(w) = p
            .recent
            .iter()
            .find(|w| w.first_sequence == h.base_sequence && w.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: w.base_offset,
                last_offset: w.last_offset,
            });
        }
        let expected = p.recent.back().map_or(0, |w| {
            if w.last_sequence == i32::MAX {
                0
            } else {
                w.last_sequence + 1
            }
        });
        if h.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(BrokerError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// Whether `h` is ahead of its producer's sequence in this partition (a later
    /// pipelined request that overtook an earlier one on the way): the gap may still
    /// fill. False for non-idempotent batches, unknown producers and other epochs.
    pub fn is_ahead(&self, h: &BatchHeader) -> bool {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return false;
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return false;
        };
        let Some(last) = p.recent.back() else {
            return false;
        };
        if h.producer_epoch != p.epoch || last.last_sequence == i32::MAX {
            return false;
        }
        let expected = last.last_sequence + 1;
        // Far ahead is a hole, not a request still on its way.
        h.base_sequence > expected && h.base_sequence - expected < 1 << 24
    }

    /// [`Self::check`] for the batches of one request in order: a batch that follows an
    /// earlier batch of the same producer in the request is judged against that one, as
    /// if it had been written already (the request is written whole or not at all).
    pub fn check_run<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
    ) -> Result<Vec<SequenceCheck>> {
        // producer id -> (epoch, last sequence) of its latest new batch in this request
        let mut ahead: HashMap<i64, (i16, i32)> = HashMap::new();
        let mut checks = Vec::new();
        for h in headers {
            let check = match ahead.get(&h.producer_id) {
                Some(&(epoch, last)) if h.producer_epoch == epoch => {
                    let expected = if last == i32::MAX { 0 } else { last + 1 };
                    if h.base_sequence == expected {
                        SequenceCheck::Append
                    } else {
                        return Err(BrokerError::OutOfOrderSequence {
                            producer_id: h.producer_id,
                            expected,
                            got: h.base_sequence,
                        });
                    }
                }
                _ => self.check(h)?,
            };
            if check == SequenceCheck::Append && h.producer_id >= 0 && h.base_sequence >= 0 {
                ahead.insert(h.producer_id, (h.producer_epoch, last_sequence(h)));
            }
            checks.push(check);
        }
        Ok(checks)
    }

    /// Remembers a batch written at its (final) offsets.
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let p = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        p.recent.push_back(Written {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while p.recent.len() > KEPT_BATCHES {
            p.recent.pop_front();
        }
    }

    /// Forgets batches at or past `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for p in self.producers.values_mut() {
            p.recent.retain(|w| w.base_offset < offset);
        }
        self.producers.retain(|_, p| !p.recent.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, records: i32, base_offset: i64) -> BatchHeader {
        let mut buf = crate::log::batch::tests::make_batch(base_offset, records - 1, 0, b"x");
        buf[43..51].copy_from_slice(&pid.to_be_bytes());
        buf[51..53].copy_from_slice(&epoch.to_be_bytes());
        buf[53..57].copy_from_slice(&seq.to_be_bytes());
        BatchHeader::parse(&buf).unwrap()
    }

    #[test]
    fn a_retried_batch_is_answered_with_its_first_offsets() {
        let mut s = ProducerStates::default();
        let first = batch(7, 0, 0, 3, 100);
        assert_eq!(s.check(&first).unwrap(), SequenceCheck::Append);
        s.record(&first);
        let next = batch(7, 0, 3, 2, 103);
        s.record(&next);
        assert_eq!(
            s.check(&batch(7, 0, 0, 3, -1)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            s.check(&batch(7, 0, 5, 1, -1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn a_batch_past_a_gap_is_ahead_and_the_next_one_is_not() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 3, 100));
        assert!(!s.is_ahead(&batch(7, 0, 3, 1, -1)), "the next one");
        assert!(s.is_ahead(&batch(7, 0, 9, 1, -1)), "overtook 3..8");
        assert!(!s.is_ahead(&batch(7, 1, 9, 1, -1)), "another epoch");
        assert!(!s.is_ahead(&batch(8, 0, 9, 1, -1)), "an unknown producer");
    }

    #[test]
    fn batches_of_one_request_follow_each_other() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 3, 100));
        let run = [
            batch(7, 0, 3, 2, -1),
            batch(7, 0, 5, 4, -1),
            batch(9, 0, 0, 1, -1),
        ];
        assert_eq!(
            s.check_run(&run).unwrap(),
            vec![SequenceCheck::Append; 3],
            "each batch continues the one before it in the request"
        );
        let gap = [batch(7, 0, 3, 2, -1), batch(7, 0, 6, 1, -1)];
        let err = s.check_run(&gap).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::OutOfOrderSequenceNumber);
    }

    #[test]
    fn a_gap_or_a_fenced_epoch_is_refused() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 2, 0, 3, 0));
        let gap = s.check(&batch(7, 2, 5, 1, -1)).unwrap_err();
        assert_eq!(gap.code(), crate::ErrorCode::OutOfOrderSequenceNumber);
        let old = s.check(&batch(7, 1, 3, 1, -1)).unwrap_err();
        assert_eq!(old.code(), crate::ErrorCode::InvalidProducerEpoch);
        assert_eq!(
            s.check(&batch(7, 3, 0, 1, -1)).unwrap(),
            SequenceCheck::Append,
            "a new epoch restarts at 0"
        );
        assert!(s.check(&batch(7, 3, 4, 1, -1)).is_err());
    }

    #[test]
    fn non_idempotent_batches_and_unknown_producers_append() {
        let s = ProducerStates::default();
        assert_eq!(
            s.check(&batch(-1, -1, -1, 1, -1)).unwrap(),
            SequenceCheck::Append
        );
        assert_eq!(
            s.check(&batch(9, 0, 42, 1, -1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn truncation_forgets_batches_past_the_cut() {
        let mut s = ProducerStates::default();
        s.record(&batch(7, 0, 0, 1, 10));
        s.record(&batch(7, 0, 1, 1, 11));
        s.truncate_from(11);
        assert_eq!(
            s.check(&batch(7, 0, 1, 1, -1)).unwrap(),
            SequenceCheck::Append,
            "rewritten after the cut"
        );
    }
}
