//! Stored batch bytes in and out, for the mirror: fetch a partition's committed batches
//! exactly as the source stores them, and append them to a remote partition at their
//! own offsets (offset-preserving; an identical re-sent batch is a no-op). Nothing is
//! decoded or re-encoded on the way, so compressed batches stay compressed and every
//! record keeps its key, value, headers and timestamp.

use std::time::Duration;

use bytes::Bytes;

use crate::client::{Client, remote_error, status_to_error};
use crate::error::{BrokerError, Result};
use crate::proto;

/// What a raw fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct RawFetch {
    /// Whole stored batches (the first may start before the requested offset).
    pub records: Bytes,
    /// The partition's high watermark: the end of the committed log.
    pub high_watermark: i64,
    /// The partition's log start offset (retention deletes below it).
    pub log_start_offset: i64,
}

/// What an offset-preserving append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAppend {
    /// Base offset of the first batch appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The batches were already stored (a re-send): nothing changed.
    pub duplicate: bool,
}

impl Client {
    /// Fetches committed batches of `topic`-`partition` from `offset` (consumer
    /// semantics: below the high watermark), waiting up to `max_wait` for data. Leader
    /// changes are retried; an offset below the log start fails with OffsetOutOfRange.
    pub async fn fetch_raw(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<RawFetch> {
        self.with_leader(topic, partition, |mut stub, addr| {
            let request = proto::FetchRequest {
                topics: vec![proto::FetchTopic {
                    topic: topic.to_owned(),
                    partitions: vec![proto::FetchPartition {
                        partition,
                        offset,
                        max_bytes,
                    }],
                }],
                max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: 1,
                max_bytes,
                replica_id: Some(-1),
                leader_epoch: -1,
            };
            async move {
                let response = stub
                    .fetch(request)
                    .await
                    .map_err(|s| status_to_error(&addr, s))?
                    .into_inner();
                let fetched = response
                    .topics
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .find(|p| p.partition == partition)
                    .ok_or_else(|| BrokerError::InvalidRequest {
                        reason: format!(
                            "the broker's answer has no result for {topic}-{partition}"
                        ),
                    })?;
                if fetched.error_code != 0 {
                    return Err(remote_error(fetched.error_code, fetched.error_message));
                }
                Ok(RawFetch {
                    records: fetched.records,
                    high_watermark: fetched.high_watermark,
                    log_start_offset: fetched.log_start_offset,
                })
            }
        })
        .await
    }

    /// Appends whole stored batches to `topic`-`partition` at their own base offsets,
    /// with acks=all: answered once the target's in-sync replicas hold them. Offsets may
    /// jump forward (gaps); a batch identical to one already stored is a no-op.
    pub async fn append_raw(
        &self,
        topic: &str,
        partition: i32,
        batches: Bytes,
        timeout: Duration,
    ) -> Result<RawAppend> {
        self.with_leader(topic, partition, |mut stub, addr| {
            let request = proto::ProduceRequest {
                topics: vec![proto::TopicRecords {
                    topic: topic.to_owned(),
                    partitions: vec![proto::PartitionRecords {
                        partition,
                        records: batches.clone(),
                    }],
                }],
                acks: proto::Acks::All as i32,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                keep_offsets: true,
            };
            async move {
                let response = stub
                    .produce(request)
                    .await
                    .map_err(|s| status_to_error(&addr, s))?
                    .into_inner();
                let result = produce_result(response, topic, partition)?;
                Ok(RawAppend {
                    base_offset: result.base_offset,
                    last_offset: result.last_offset,
                    duplicate: result.duplicate,
                })
            }
        })
        .await
    }
}

/// The one partition's result in a produce response, its error code turned into an error.
pub(crate) fn produce_result(
    response: proto::ProduceResponse,
    topic: &str,
    partition: i32,
) -> Result<proto::PartitionProduceResult> {
    let result = response
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition == partition)
        .ok_or_else(|| BrokerError::InvalidRequest {
            reason: format!("the broker's answer has no result for {topic}-{partition}"),
        })?;
    if result.error_code != 0 {
        return Err(remote_error(result.error_code, result.error_message));
    }
    Ok(result)
}
