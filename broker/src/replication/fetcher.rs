//! The follower's fetcher: one task per followed partition and leader epoch. It
//! truncates the local log to the high watermark (a tail above it may have been
//! replaced by the new leader), then fetches from the leader at its own log end offset,
//! appends the leader's bytes with their offsets, and takes `min(leader HW, own LEO)` as
//! its high watermark. It stops when the partition's role changes (the node aborts it).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tonic::transport::Channel;

use crate::error::{BrokerError, ErrorCode};
use crate::partition::Partition;
use crate::proto::{self, broker_client::BrokerClient};

/// How long a replica fetch long-polls on the leader.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a failed fetch (leader unreachable, not leading yet).
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Most bytes one fetch asks for.
const FETCH_MAX_BYTES: i32 = 8 << 20;

/// What a fetcher needs to know about what it follows.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    /// This broker's id (the replica id sent to the leader).
    pub replica_id: u64,
    /// The leader's broker id, for logs.
    pub leader: u64,
    /// The leader's gRPC address.
    pub leader_addr: String,
    /// The leader epoch being followed.
    pub epoch: i32,
}

/// Runs until aborted: truncate, then fetch and append forever.
pub async fn run_fetcher(partition: Weak<Partition>, target: FetchTarget) {
    let Some(p) = partition.upgrade() else { return };
    let (topic, index) = (p.topic().to_owned(), p.index());
    drop(p);
    // Truncate to the high watermark before fetching from the new leader.
    loop {
        let Some(p) = partition.upgrade() else { return };
        let hw = p.high_watermark();
        let leo = p.log_end_offset();
        let truncated = tokio::task::spawn_blocking(move || p.truncate_to(hw)).await;
        match truncated {
            Ok(Ok(())) => {
                if leo > hw {
                    tracing::info!(%topic, partition = index, epoch = target.epoch, from = leo, to = hw, "follower truncated its log to the high watermark");
                }
                break;
            }
            Ok(Err(err)) => {
                tracing::error!(%topic, partition = index, %err, "follower cannot truncate its log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    }
    let stub = match connect(&target.leader_addr) {
        Ok(stub) => stub,
        Err(err) => {
            tracing::error!(%topic, partition = index, %err, "follower cannot reach its leader");
            return;
        }
    };
    loop {
        let Some(p) = partition.upgrade() else { return };
        match fetch_once(&p, stub.clone(), &target).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(RETRY_PAUSE).await,
            Err(err) => {
                tracing::debug!(%topic, partition = index, leader = target.leader, %err, "replica fetch failed");
                drop(p);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

fn connect(addr: &str) -> Result<BrokerClient<Channel>, BrokerError> {
    let channel = crate::transport::channel(
        addr,
        crate::transport::node_client_tls(),
        Duration::from_secs(2),
    )?;
    Ok(BrokerClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// One fetch round. `Ok(false)` asks the caller to pause before the next one.
async fn fetch_once(
    p: &Arc<Partition>,
    mut stub: BrokerClient<Channel>,
    target: &FetchTarget,
) -> Result<bool, BrokerError> {
    let offset = p.log_end_offset();
    let request = proto::FetchRequest {
        topics: vec![proto::FetchTopic {
            topic: p.topic().to_owned(),
            partitions: vec![proto::FetchPartition {
                partition: p.index(),
                offset,
                max_bytes: FETCH_MAX_BYTES,
            }],
        }],
        max_wait_ms: FETCH_WAIT.as_millis() as u32,
        min_bytes: 1,
        max_bytes: FETCH_MAX_BYTES,
        replica_id: Some(target.replica_id as i64),
        leader_epoch: target.epoch,
    };
    let response = stub
        .fetch(request)
        .await
        .map_err(|s| crate::client::status_to_error(&target.leader_addr, s))?
        .into_inner();
    let Some(fetched) = response
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|f| f.partition == p.index())
    else {
        return Ok(false);
    };
    if fetched.error_code != 0 {
        let code = ErrorCode::from_i32(fetched.error_code);
        if code == ErrorCode::OffsetOutOfRange {
            // Our log ends past the leader's (a tail it never had) or before its start
            // (retention deleted what we miss): restart at the leader's bounds.
            let to = if offset > fetched.log_end_offset {
                fetched.log_end_offset
            } else {
                fetched.log_start_offset
            };
            tracing::warn!(topic = %p.topic(), partition = p.index(), offset, leader_log_end = fetched.log_end_offset, leader_log_start = fetched.log_start_offset, to, "follower offset out of the leader's range; truncating");
            let p = p.clone();
            tokio::task::spawn_blocking(move || p.truncate_to(to))
                .await
                .map_err(|e| BrokerError::InvalidRequest {
                    reason: format!("truncation task failed: {e}"),
                })??;
            return Ok(true);
        }
        return Err(BrokerError::Remote {
            code,
            message: fetched.error_message,
        });
    }
    if !fetched.records.is_empty() {
        let batches = BytesMut::from(&fetched.records[..]);
        if let Err(err) = p.append_as_follower(batches, target.epoch).await {
            // The leader's bytes do not fit our log (a divergent batch): drop our tail
            // to the high watermark and fetch again from there.
            tracing::warn!(topic = %p.topic(), partition = p.index(), %err, "follower append failed; truncating to the high watermark");
            let p2 = p.clone();
            let hw = p.high_watermark();
            let _ = tokio::task::spawn_blocking(move || p2.truncate_to(hw)).await;
            return Ok(false);
        }
    }
    p.follower_high_watermark(fetched.high_watermark, target.epoch);
    Ok(true)
}
