//! The follower's fetcher: one task per followed partition and leader epoch. It first
//! cuts the local log where it diverges from the leader's (KIP-101: it asks the leader
//! where the follower's latest epoch ended there, see [`truncation_offset`]), then
//! fetches from the leader at its own log end offset, appends the leader's bytes with
//! their offsets, and takes `min(leader HW, own LEO)` as its high watermark. It stops
//! when the partition's role changes (the node aborts it).

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

/// Where a follower cuts its log before fetching from a new leader (KIP-101, with
/// KIP-279's refinement). `leader` is the leader's answer for the follower's latest
/// epoch: the largest epoch it knows at or below it and where that epoch ended in the
/// leader's log; `local_end` is where that same epoch ends in the follower's own log.
/// Everything from the first offset where the two logs can differ goes.
///
/// Only when the leader knows none of the follower's epochs (`leader.0 < 0`) does the
/// pre-KIP-101 rule apply: cut to the high watermark. That rule alone loses committed
/// records whenever the follower's high watermark lags the leader's (it always does,
/// by one fetch round): cutting there and then becoming leader drops them.
pub fn truncation_offset(
    leader: (i32, i64),
    local_end: (i32, i64),
    log_end: i64,
    high_watermark: i64,
) -> i64 {
    let (epoch, leader_end) = leader;
    if epoch < 0 || leader_end < 0 {
        return high_watermark.min(log_end);
    }
    let mut cut = leader_end.min(log_end);
    if local_end.1 >= 0 {
        cut = cut.min(local_end.1);
    }
    cut
}

/// Runs until aborted: cut the divergent tail, then fetch and append forever.
pub async fn run_fetcher(partition: Weak<Partition>, target: FetchTarget) {
    let Some(p) = partition.upgrade() else { return };
    let (topic, index) = (p.topic().to_owned(), p.index());
    drop(p);
    let stub = match connect(&target.leader_addr) {
        Ok(stub) => stub,
        Err(err) => {
            tracing::error!(%topic, partition = index, %err, "follower cannot reach its leader");
            return;
        }
    };
    loop {
        let Some(p) = partition.upgrade() else { return };
        let hw = p.high_watermark();
        let leo = p.log_end_offset();
        let cut = match p.latest_epoch() {
            // An empty log has nothing to diverge.
            None => hw.min(leo),
            Some(latest) => match leader_end_offset(stub.clone(), &p, &target, latest).await {
                Ok(answer) => {
                    let local = if answer.0 >= 0 {
                        p.end_offset_for_epoch(answer.0)
                    } else {
                        (-1, -1)
                    };
                    let cut = truncation_offset(answer, local, leo, hw);
                    if cut < leo {
                        tracing::info!(%topic, partition = index, epoch = target.epoch, latest_local_epoch = latest, leader_epoch_answer = answer.0, leader_end_offset = answer.1, high_watermark = hw, from = leo, to = cut, "follower cuts its divergent tail");
                    }
                    cut
                }
                Err(err) if err.code() == ErrorCode::UnsupportedVersion => {
                    tracing::warn!(%topic, partition = index, %err, "leader cannot answer for leader epochs; truncating to the high watermark");
                    hw.min(leo)
                }
                Err(err) => {
                    tracing::debug!(%topic, partition = index, leader = target.leader, %err, "leader epoch lookup failed; retrying");
                    drop(p);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let truncated = tokio::task::spawn_blocking(move || p.truncate_to(cut)).await;
        match truncated {
            Ok(Ok(())) => break,
            Ok(Err(err)) => {
                tracing::error!(%topic, partition = index, %err, "follower cannot truncate its log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    }
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

/// Asks the leader where `epoch` ended in its log.
async fn leader_end_offset(
    mut stub: BrokerClient<Channel>,
    p: &Partition,
    target: &FetchTarget,
    epoch: i32,
) -> Result<(i32, i64), BrokerError> {
    let response = stub
        .offset_for_leader_epoch(proto::OffsetForLeaderEpochRequest {
            topic: p.topic().to_owned(),
            partition: p.index(),
            current_leader_epoch: target.epoch,
            leader_epoch: epoch,
            replica_id: target.replica_id as i64,
        })
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::Unimplemented {
                BrokerError::Remote {
                    code: ErrorCode::UnsupportedVersion,
                    message: s.message().to_owned(),
                }
            } else {
                crate::client::status_to_error(&target.leader_addr, s)
            }
        })?
        .into_inner();
    if response.error_code != 0 {
        return Err(BrokerError::Remote {
            code: ErrorCode::from_i32(response.error_code),
            message: response.error_message,
        });
    }
    Ok((response.leader_epoch, response.end_offset))
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

/// Whether a failed follower append means our log diverges from the leader's (then the
/// tail above the high watermark is cut), rather than that our storage failed. Cutting on
/// a storage error would throw away records that may already be committed, and an ISR
/// member that then became leader would lose them.
fn means_divergence(err: &BrokerError) -> bool {
    !matches!(
        err,
        BrokerError::Io { .. } | BrokerError::Corrupt { .. } | BrokerError::PartitionOffline { .. }
    )
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
            if !means_divergence(&err) {
                // Our own storage failed (a full disk): the records we hold are fine and
                // may be committed; keep them, and retry after a pause. Lagging, we leave
                // the ISR; once the disk has room we catch up.
                tracing::warn!(topic = %p.topic(), partition = p.index(), %err, "follower append failed on local storage; keeping the log and retrying");
                return Ok(false);
            }
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

#[cfg(test)]
mod tests {
    use super::{means_divergence, truncation_offset};
    use crate::error::BrokerError;

    #[test]
    fn a_full_disk_is_not_divergence_but_a_batch_below_the_end_is() {
        let full = BrokerError::io(
            "/data/orders-0/00000000000000000000.log",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(!means_divergence(&full));
        let offline = BrokerError::PartitionOffline {
            partition: "orders-0".into(),
            reason: "storage failure".into(),
        };
        assert!(!means_divergence(&offline));
        let below = BrokerError::OffsetBelowEnd {
            base: 5,
            last: 9,
            end: 7,
        };
        assert!(means_divergence(&below));
    }

    #[test]
    fn a_stale_high_watermark_does_not_cut_committed_records() {
        // The follower has 0..100 of epoch 4, all committed by the leader (whose epoch 4
        // ended at 100, then epoch 5 started), but it learned only HW 80. The pre-KIP-101
        // rule cut 80..100; the epoch answer keeps them.
        assert_eq!(truncation_offset((4, 100), (4, 100), 100, 80), 100);
    }

    #[test]
    fn a_divergent_tail_of_a_deposed_leader_is_cut_where_the_epochs_part() {
        // The old leader wrote 100..130 in epoch 4 that nobody replicated; the new
        // leader (epoch 5) says epoch 4 ended at 100 in its log.
        assert_eq!(truncation_offset((4, 100), (4, 130), 130, 95), 100);
    }

    #[test]
    fn an_epoch_the_leader_never_had_ends_where_the_follower_s_own_earlier_epoch_ends() {
        // KIP-279: the follower's latest epoch 6 is unknown to the leader, which answers
        // with its epoch 5 ending at 210; the follower's own epoch 5 ended at 200.
        assert_eq!(truncation_offset((5, 210), (5, 200), 260, 150), 200);
    }

    #[test]
    fn a_leader_that_knows_none_of_the_epochs_falls_back_to_the_high_watermark() {
        assert_eq!(truncation_offset((-1, -1), (-1, -1), 50, 40), 40);
        assert_eq!(truncation_offset((-1, -1), (-1, -1), 30, 40), 30);
    }
}
