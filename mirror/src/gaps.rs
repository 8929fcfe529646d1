//! A durable record of retention gaps: offsets the source deleted before the mirror
//! copied them. The copier notes each one in the log and the metrics when it finds it,
//! and appends it here, to `_meridian.gaps.<source>` in the target region, so that
//! `meridian mirror status` still reports the loss after the copy has moved past it,
//! after a worker restart, on any worker. Nothing is ever skipped silently.

use std::time::Duration;

use broker::client::{
    Acks, Client, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
};
use broker::record::Record;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The internal topic holding the gaps of flows from `source`.
pub fn gap_topic(source: &str) -> String {
    format!("_meridian.gaps.{source}")
}

/// One retention gap of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    /// Topic in the source region.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset lost.
    pub from: i64,
    /// First offset mirrored after the gap.
    pub to: i64,
    /// When the copier found it (ms since the epoch).
    pub found_at_ms: i64,
}

impl GapRecord {
    /// Offsets lost.
    pub fn records(&self) -> i64 {
        (self.to - self.from).max(0)
    }
}

/// Appends `gap` to the flow's gap topic in the target (creating it), acks=all.
pub async fn record_gap(target: &Client, source: &str, gap: &GapRecord) -> Result<()> {
    let topic = gap_topic(source);
    crate::checkpoint::ensure_checkpoint_topic(target, &topic).await?;
    let producer = Producer::new(
        target.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    )?;
    let value = serde_json::to_vec(gap).expect("a gap serialises");
    let mut record = Record::new(value, gap.found_at_ms);
    record.key = Some(
        format!("{}/{}", gap.topic, gap.partition)
            .into_bytes()
            .into(),
    );
    let ack = producer.send(&topic, Some(0), record).await?;
    ack.await?;
    Ok(())
}

/// Every gap recorded for flows from `source` into the target, oldest first.
pub async fn read_gaps(target: &Client, source: &str) -> Result<Vec<GapRecord>> {
    let topic = gap_topic(source);
    let ends = match target
        .list_offsets(&topic, broker::client::OffsetSpec::Latest)
        .await
    {
        Ok(ends) => ends,
        Err(broker::BrokerError::UnknownTopic { .. }) => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    };
    let mut config = ConsumerConfig::new(topic);
    config.start = StartOffset::Earliest;
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(target.clone(), config).await?;
    let mut gaps = Vec::new();
    while consumer
        .positions()
        .iter()
        .any(|(p, pos)| *pos < ends.get(p).copied().unwrap_or(0))
    {
        for r in consumer.poll().await? {
            if let Some(gap) = r
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<GapRecord>(v).ok())
            {
                gaps.push(gap);
            }
        }
    }
    Ok(gaps)
}
