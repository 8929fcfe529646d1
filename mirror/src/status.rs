//! `meridian mirror status`: per flow and partition, how far the remote copy is behind
//! its source, computed from the two regions' brokers alone (no worker needs to be
//! reachable, which is when operators need it most). A partition whose unmirrored
//! records the source has already deleted shows state `gap`.

use std::collections::BTreeMap;
use std::time::Duration;

use broker::client::{Client, OffsetSpec};
use serde::Serialize;

use crate::copy::now_ms;
use crate::error::{MirrorError, broker};
use crate::plan::{FlowRules, HEARTBEATS_TOPIC, TopicListing};

/// One mirrored partition's state.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// `source->target`.
    pub flow: String,
    /// Source topic.
    pub topic: String,
    /// Remote topic.
    pub remote_topic: String,
    /// Partition.
    pub partition: i32,
    /// Source log start offset.
    pub source_log_start: i64,
    /// Source high watermark.
    pub source_high_watermark: i64,
    /// Remote log end: the next source offset to copy.
    pub mirrored_offset: i64,
    /// Records not yet mirrored.
    pub lag_records: i64,
    /// Age of the oldest unmirrored record, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// caught-up, behind, or gap (the source deleted unmirrored records).
    pub state: String,
    /// Unmirrored records already deleted at the source (state gap).
    pub gap_records: i64,
}

/// One flow's summary.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    /// `source->target`.
    pub flow: String,
    /// Age of the latest mirrored heartbeat of the source region, in seconds: the
    /// end-to-end delay of the flow (None before the first heartbeat arrives).
    pub heartbeat_age_seconds: Option<f64>,
    /// Its partitions.
    pub partitions: Vec<PartitionStatus>,
}

/// Computes the status of `flow` from its source and target clients.
pub async fn flow_status(
    rules: &FlowRules,
    source: &Client,
    target: &Client,
) -> Result<FlowStatus, MirrorError> {
    let flow = rules.flow_name();
    let listing = |c: &Client| {
        let c = c.clone();
        async move {
            let meta = c.refresh_metadata().await?;
            Ok::<_, broker::BrokerError>(
                meta.topics
                    .values()
                    .map(|t| TopicListing {
                        name: t.name.clone(),
                        partitions: t.partitions.len() as i32,
                        configs: t.configs.clone(),
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let sources = listing(source)
        .await
        .map_err(broker(format!("list topics in {}", rules.source)))?;
    let targets = listing(target)
        .await
        .map_err(broker(format!("list topics in {}", rules.target)))?;
    let plan = rules.plan(&sources, &targets);
    let existing: BTreeMap<&str, &TopicListing> =
        targets.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut partitions = Vec::new();
    for mirrored in &plan.mirrored {
        if !existing.contains_key(mirrored.remote_topic.as_str()) {
            continue; // not created yet: nothing mirrored
        }
        let what = format!("list offsets of {}", mirrored.source_topic);
        let starts = source
            .list_offsets(&mirrored.source_topic, OffsetSpec::Earliest)
            .await
            .map_err(broker(what.clone()))?;
        let ends = source
            .list_offsets(&mirrored.source_topic, OffsetSpec::Latest)
            .await
            .map_err(broker(what))?;
        let remote_ends = target
            .list_offsets(&mirrored.remote_topic, OffsetSpec::Latest)
            .await
            .map_err(broker(format!("list offsets of {}", mirrored.remote_topic)))?;
        for partition in 0..mirrored.partitions {
            let source_log_start = starts.get(&partition).copied().unwrap_or(0);
            let source_high_watermark = ends.get(&partition).copied().unwrap_or(0);
            let mirrored_offset = remote_ends.get(&partition).copied().unwrap_or(0);
            let lag_records =
                (source_high_watermark - mirrored_offset.max(source_log_start)).max(0);
            let gap_records = if mirrored_offset > 0 {
                (source_log_start - mirrored_offset).max(0)
            } else {
                0
            };
            let lag_seconds = if lag_records > 0 {
                oldest_unmirrored_age(
                    source,
                    &mirrored.source_topic,
                    partition,
                    mirrored_offset.max(source_log_start),
                )
                .await
            } else {
                0.0
            };
            let state = if gap_records > 0 {
                "gap"
            } else if lag_records == 0 {
                "caught-up"
            } else {
                "behind"
            };
            partitions.push(PartitionStatus {
                flow: flow.clone(),
                topic: mirrored.source_topic.clone(),
                remote_topic: mirrored.remote_topic.clone(),
                partition,
                source_log_start,
                source_high_watermark,
                mirrored_offset,
                lag_records,
                lag_seconds,
                state: state.into(),
                gap_records,
            });
        }
    }
    let heartbeat_age_seconds =
        latest_heartbeat_age(target, &rules.remote_name(HEARTBEATS_TOPIC)).await;
    Ok(FlowStatus {
        flow,
        heartbeat_age_seconds,
        partitions,
    })
}

async fn oldest_unmirrored_age(source: &Client, topic: &str, partition: i32, offset: i64) -> f64 {
    match source
        .fetch_raw(topic, partition, offset, 64 << 10, Duration::ZERO)
        .await
    {
        Ok(fetched) => broker::record::decode_batches(&fetched.records)
            .ok()
            .and_then(|records| records.into_iter().find(|r| r.offset >= offset))
            .map_or(0.0, |r| {
                ((now_ms() - r.timestamp_ms).max(0)) as f64 / 1000.0
            }),
        Err(_) => 0.0,
    }
}

async fn latest_heartbeat_age(target: &Client, topic: &str) -> Option<f64> {
    let end = *target
        .list_offsets(topic, OffsetSpec::Latest)
        .await
        .ok()?
        .get(&0)?;
    if end == 0 {
        return None;
    }
    let fetched = target
        .fetch_raw(topic, 0, end - 1, 64 << 10, Duration::ZERO)
        .await
        .ok()?;
    let records = broker::record::decode_batches(&fetched.records).ok()?;
    let last = records.into_iter().rev().find(|r| r.offset == end - 1)?;
    Some(((now_ms() - last.timestamp_ms).max(0)) as f64 / 1000.0)
}
