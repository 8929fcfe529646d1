//! `meridian mirror status`: how far each flow's partitions are mirrored.

use std::time::{SystemTime, UNIX_EPOCH};

use broker::client::{Client, OffsetSpec};
use serde::Serialize;

use crate::checkpoint::read_checkpoints;
use crate::error::Result;
use crate::failover::record_at;
use crate::translate::OffsetTranslator;

/// A partition's mirroring state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorState {
    /// Every source record is in the target.
    CaughtUp,
    /// Records are behind, the oldest unmirrored one is recent.
    Copying,
    /// Records are behind and the oldest unmirrored one is older than a minute.
    Stalled,
    /// The source deleted records that were never mirrored (retention gap).
    Gap,
}

/// One partition of a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionStatus {
    /// Source region.
    pub source: String,
    /// Target region.
    pub target: String,
    /// Topic in the source.
    pub topic: String,
    /// Topic in the target.
    pub remote_topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset still stored in the source.
    pub source_log_start: i64,
    /// Source high watermark.
    pub source_high_watermark: i64,
    /// Remote log end offset: everything below it is mirrored.
    pub mirrored: i64,
    /// Records not mirrored yet.
    pub lag_records: i64,
    /// Age of the oldest unmirrored source record, seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Records gone from the source before being mirrored: gaps the copier recorded in
    /// `_meridian.gaps.<source>`, plus any it has not reached yet.
    pub gap_records: i64,
    /// Seconds since the flow's latest checkpoint, if any.
    pub checkpoint_age_seconds: Option<f64>,
    /// Summary.
    pub state: MirrorState,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Classifies a partition from its offsets and the age of its oldest unmirrored record.
pub fn classify(
    source_log_start: i64,
    high_watermark: i64,
    mirrored: i64,
    lag_seconds: f64,
) -> MirrorState {
    if source_log_start > mirrored {
        MirrorState::Gap
    } else if mirrored >= high_watermark {
        MirrorState::CaughtUp
    } else if lag_seconds > 60.0 {
        MirrorState::Stalled
    } else {
        MirrorState::Copying
    }
}

/// Status of every partition the flow mirrors, source topics in name order.
pub async fn flow_status(
    source: &Client,
    target: &Client,
    translator: &OffsetTranslator,
) -> Result<Vec<PartitionStatus>> {
    let meta = source.refresh_metadata().await?;
    let checkpoints = read_checkpoints(target, translator.source()).await?;
    let recorded_gaps = crate::gaps::read_gaps(target, translator.source()).await?;
    let now = now_ms();
    let checkpoint_age = checkpoints
        .all()
        .map(|c| c.timestamp_ms)
        .max()
        .map(|ts| (now - ts).max(0) as f64 / 1000.0);
    let mut out = Vec::new();
    for (topic, tmeta) in &meta.topics {
        let Some(remote) = translator.target_topic(topic) else {
            continue;
        };
        if translator.is_target_origin(topic) {
            continue; // the target's own topic mirrored back into the source
        }
        let starts = source.list_offsets(topic, OffsetSpec::Earliest).await?;
        let ends = source.list_offsets(topic, OffsetSpec::Latest).await?;
        let mirrored_ends = match target.list_offsets(&remote, OffsetSpec::Latest).await {
            Ok(m) => m,
            Err(broker::BrokerError::UnknownTopic { .. }) => Default::default(),
            Err(err) => return Err(err.into()),
        };
        for p in &tmeta.partitions {
            let partition = p.partition;
            let start = starts.get(&partition).copied().unwrap_or(0);
            let hw = ends.get(&partition).copied().unwrap_or(0);
            let mirrored = mirrored_ends.get(&partition).copied().unwrap_or(0);
            // Gaps the copier already moved past, from the durable record.
            let recorded: i64 = recorded_gaps
                .iter()
                .filter(|g| &g.topic == topic && g.partition == partition)
                .map(crate::gaps::GapRecord::records)
                .sum();
            let lag_seconds = if mirrored < hw {
                match record_at(source, topic, partition, mirrored.max(start)).await? {
                    Some(r) => (now - r.timestamp_ms).max(0) as f64 / 1000.0,
                    None => 0.0,
                }
            } else {
                0.0
            };
            out.push(PartitionStatus {
                source: translator.source().to_owned(),
                target: translator.target().to_owned(),
                topic: topic.clone(),
                remote_topic: remote.clone(),
                partition,
                source_log_start: start,
                source_high_watermark: hw,
                mirrored,
                lag_records: (hw - mirrored).max(0),
                lag_seconds,
                gap_records: (start - mirrored).max(0) + recorded,
                checkpoint_age_seconds: checkpoint_age,
                state: if recorded > 0 {
                    MirrorState::Gap
                } else {
                    classify(start, hw, mirrored, lag_seconds)
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_log_start_beyond_mirrored_end_is_a_retention_gap() {
        assert_eq!(classify(100, 150, 80, 5.0), MirrorState::Gap);
        assert_eq!(classify(0, 150, 150, 0.0), MirrorState::CaughtUp);
        assert_eq!(classify(0, 150, 140, 2.0), MirrorState::Copying);
        assert_eq!(classify(0, 150, 140, 600.0), MirrorState::Stalled);
    }
}
