//! Checkpoints: translated group positions kept durably in the target region.
//!
//! The checkpointer follows the committed offsets of the source groups a flow selects
//! (polling every `checkpoint_interval`, 1 s by default), translates them with
//! [`OffsetTranslator`], and appends one record per changed group partition to the
//! internal topic `_meridian.checkpoints.<source>` of the target region. Reading the topic
//! back, the last record per key wins (compacted-topic semantics), so a failover with the
//! source region gone still finds every group's latest translated position.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset};
use broker::record::Record;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use topology::Flow;

use crate::error::{MirrorError, Result};
use crate::translate::{OffsetTranslator, Translated};

/// The internal topic holding checkpoints of flows from `source`, in the target region.
pub fn checkpoint_topic(source: &str) -> String {
    format!("_meridian.checkpoints.{source}")
}

/// One checkpoint: where a group was in the source and where that is in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The group.
    pub group: String,
    /// The topic in the source region.
    pub source_topic: String,
    /// The topic in the target region.
    pub target_topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed position in the source.
    pub source_offset: i64,
    /// The translated position in the target.
    pub target_offset: i64,
    /// When the checkpoint was taken, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Checkpoint {
    /// The record key: `group/topic/partition` (source topic), the compaction key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.source_topic, self.partition)
    }

    /// Builds a checkpoint from a translated position taken at `timestamp_ms`.
    pub fn from_translated(t: &Translated, timestamp_ms: i64) -> Self {
        Self {
            group: t.group.clone(),
            source_topic: t.source_topic.clone(),
            target_topic: t.target_topic.clone(),
            partition: t.partition,
            source_offset: t.source_offset,
            target_offset: t.target_offset,
            timestamp_ms,
        }
    }

    /// Encodes the checkpoint as a record (key as above, JSON value).
    pub fn to_record(&self) -> Record {
        let value = serde_json::to_vec(self).expect("a checkpoint always serializes");
        Record {
            key: Some(Bytes::from(self.key())),
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
            timestamp_ms: self.timestamp_ms,
        }
    }

    /// Decodes a record written by [`Checkpoint::to_record`], checking key and value agree.
    pub fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self> {
        let key_text = String::from_utf8_lossy(key.unwrap_or_default()).into_owned();
        let bad = |reason: String| MirrorError::BadCheckpoint {
            key: key_text.clone(),
            reason,
        };
        let value = value.ok_or_else(|| bad("the value is null".into()))?;
        let checkpoint: Checkpoint =
            serde_json::from_slice(value).map_err(|e| bad(format!("bad JSON: {e}")))?;
        if checkpoint.key() != key_text {
            return Err(bad(format!(
                "the value belongs to key {}",
                checkpoint.key()
            )));
        }
        Ok(checkpoint)
    }
}

/// The latest checkpoint per key, as read back from the checkpoint topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointTable {
    latest: BTreeMap<String, Checkpoint>,
}

impl CheckpointTable {
    /// Applies one record in log order: the later record for a key replaces the earlier.
    /// Undecodable records are skipped with a warning (a reader must not stop on them).
    pub fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        match Checkpoint::from_record(key, value) {
            Ok(c) => {
                self.latest.insert(c.key(), c);
            }
            Err(err) => tracing::warn!(%err, "skipping a checkpoint record"),
        }
    }

    /// The latest checkpoints of `group`.
    pub fn of_group(&self, group: &str) -> Vec<&Checkpoint> {
        self.latest.values().filter(|c| c.group == group).collect()
    }

    /// Every latest checkpoint.
    pub fn all(&self) -> impl Iterator<Item = &Checkpoint> {
        self.latest.values()
    }
}

/// Reads the whole checkpoint topic of `source` in the target region (up to its current
/// end). A missing topic is an empty table.
pub async fn read_checkpoints(target: &Client, source: &str) -> Result<CheckpointTable> {
    let topic = checkpoint_topic(source);
    let mut table = CheckpointTable::default();
    let ends = match target
        .list_offsets(&topic, broker::client::OffsetSpec::Latest)
        .await
    {
        Ok(ends) => ends,
        Err(broker::BrokerError::UnknownTopic { .. }) => return Ok(table),
        Err(err) => return Err(err.into()),
    };
    let mut config = ConsumerConfig::new(topic);
    config.start = StartOffset::Earliest;
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(target.clone(), config).await?;
    while consumer
        .positions()
        .iter()
        .any(|(p, pos)| *pos < ends.get(p).copied().unwrap_or(0))
    {
        for r in consumer.poll().await? {
            table.apply(r.record.key.as_deref(), r.record.value.as_deref());
        }
    }
    Ok(table)
}

/// Creates the checkpoint topic (one partition) unless it exists, so the
/// first checkpoint does not depend on topic auto-creation.
pub async fn ensure_checkpoint_topic(target: &Client, topic: &str) -> Result<()> {
    let spec = broker::client::TopicSpec {
        name: topic.to_owned(),
        partitions: 1,
        replication_factor: 0,
        // TODO(compaction): the broker has no cleanup.policy=compact yet; readers keep
        // the last record per key, and the checkpointer rewrites only changes.
        configs: Default::default(),
    };
    let created = target.create_topic(spec).await;
    tracing::debug!(topic, ?created, "checkpoint topic ensured");
    match created {
        Ok(()) | Err(broker::BrokerError::TopicExists { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    // Wait until the new partition has a leader (a few hundred ms at most).
    for _ in 0..50 {
        if target
            .list_offsets(topic, broker::client::OffsetSpec::Latest)
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Decides which checkpoints to write: only group partitions whose translated position
/// changed since the last write (so an idle group costs nothing per interval).
#[derive(Debug, Default)]
pub struct Checkpointer {
    written: BTreeMap<String, (i64, i64)>,
}

impl Checkpointer {
    /// Starts from what the checkpoint topic already holds (after a restart).
    pub fn resume(table: &CheckpointTable) -> Self {
        Self {
            written: table
                .all()
                .map(|c| (c.key(), (c.source_offset, c.target_offset)))
                .collect(),
        }
    }

    /// The checkpoints to write for these translated positions, marking them written.
    pub fn changed(&mut self, translated: &[Translated], timestamp_ms: i64) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for t in translated {
            let c = Checkpoint::from_translated(t, timestamp_ms);
            let now = (c.source_offset, c.target_offset);
            if self.written.get(&c.key()) != Some(&now) {
                self.written.insert(c.key(), now);
                out.push(c);
            }
        }
        out
    }
}

/// What the checkpointer committed per target group: (topic, partition) → offset.
type SyncedCommits = BTreeMap<String, BTreeMap<(String, i32), i64>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the checkpoints of one flow until the task is dropped: every `checkpoint_interval`
/// it lists the source groups the flow selects, translates their committed offsets
/// (partitions not mirrored yet are skipped this round, never clamped), writes changed
/// checkpoints, and with `sync_group_offsets` commits them to the target group.
///
/// Errors of one round are logged and the next round retries; only a bad flow fails.
pub async fn run_checkpoints(
    source: Client,
    target: Client,
    flow: Flow,
    translator: OffsetTranslator,
) -> Result<()> {
    let groups = flow.groups.compile().map_err(|e| MirrorError::Topology {
        reason: format!(
            "flow {} -> {} has a bad group regex: {e}",
            flow.source, flow.target
        ),
    })?;
    let topic = checkpoint_topic(&flow.source);
    ensure_checkpoint_topic(&target, &topic).await?;
    let table = read_checkpoints(&target, &flow.source).await?;
    let mut checkpointer = Checkpointer::resume(&table);
    // What we committed to each target group: a different commit there means consumers
    // of that group are active in the target region.
    let mut synced = SyncedCommits::new();
    let producer = Producer::new(target.clone(), ProducerConfig::default())?;
    let interval = if flow.checkpoint_interval.is_zero() {
        Duration::from_secs(1)
    } else {
        flow.checkpoint_interval
    };
    let flow_name = format!("{}->{}", flow.source, flow.target);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match checkpoint_round(
            &source,
            &target,
            &groups,
            &translator,
            &topic,
            &producer,
            &mut checkpointer,
            flow.sync_group_offsets.then_some(&mut synced),
        )
        .await
        {
            Ok(()) => crate::metrics::checkpoint_round_done(&flow_name),
            Err(err) => {
                tracing::warn!(source = %flow.source, target = %flow.target, %err, "checkpoint round failed; retrying next interval")
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn checkpoint_round(
    source: &Client,
    target: &Client,
    groups: &topology::CompiledFilter,
    translator: &OffsetTranslator,
    topic: &str,
    producer: &Producer,
    checkpointer: &mut Checkpointer,
    mut synced: Option<&mut SyncedCommits>,
) -> Result<()> {
    for (group, topics) in source.list_groups().await? {
        if !groups.is_match(&group) {
            continue;
        }
        let committed = source.fetch_offsets(&group, &topics).await?;
        let mut translated = Vec::new();
        for ((t, p), offset) in committed {
            let Some(target_topic) = translator.target_topic(&t) else {
                continue;
            };
            let end = match target
                .list_offsets_of(&target_topic, &[p], broker::client::OffsetSpec::Latest)
                .await
            {
                Ok(ends) => ends.get(&p).copied().unwrap_or(0),
                Err(_) => continue,
            };
            let one = BTreeMap::from([((t, p), offset)]);
            let ends = BTreeMap::from([((target_topic, p), end)]);
            // Not mirrored yet: skip this round rather than checkpoint a clamped position.
            if let Ok(mut t) = translator.translate(&group, &one, &ends, false) {
                translated.append(&mut t);
            }
        }
        let changed = checkpointer.changed(&translated, now_ms());
        for c in &changed {
            let delivery = producer.send(topic, Some(0), c.to_record()).await?;
            delivery.await?;
            tracing::debug!(group = %c.group, topic = %c.source_topic, partition = c.partition, offset = c.target_offset, "checkpoint written");
        }
        if let Some(synced) = synced.as_deref_mut()
            && !changed.is_empty()
        {
            sync_group(target, &group, &translated, synced).await?;
        }
    }
    Ok(())
}

/// Commits translated positions to the target group unless the group has live members
/// there (they own their positions) or someone else moved its offsets (consumers that
/// read there without joining, or an operator).
async fn sync_group(
    target: &Client,
    group: &str,
    translated: &[Translated],
    synced: &mut SyncedCommits,
) -> Result<()> {
    let membership = target.describe_group(group).await?;
    if !membership.members.is_empty() {
        tracing::info!(
            group,
            members = membership.members.len(),
            "target group has live members; not syncing"
        );
        return Ok(());
    }
    let topics: Vec<String> = translated.iter().map(|t| t.target_topic.clone()).collect();
    let current = target.fetch_offsets(group, &topics).await?;
    let ours = synced.entry(group.to_owned()).or_default();
    let foreign = current
        .iter()
        .any(|(k, v)| ours.get(k).is_none_or(|mine| mine != v));
    if foreign {
        tracing::info!(
            group,
            "target group has commits of its own (active there); not syncing"
        );
        return Ok(());
    }
    let offsets: Vec<(String, i32, i64)> = translated
        .iter()
        .map(|t| (t.target_topic.clone(), t.partition, t.target_offset))
        .collect();
    target.commit_offsets(group, &offsets).await?;
    for (t, p, o) in offsets {
        ours.insert((t, p), o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(group: &str, partition: i32, offset: i64) -> Translated {
        Translated {
            group: group.into(),
            source_topic: "orders".into(),
            target_topic: "A.orders".into(),
            partition,
            source_offset: offset,
            target_offset: offset,
            target_end: offset,
            missing: 0,
        }
    }

    #[test]
    fn checkpoint_record_round_trips_with_group_topic_partition_key() {
        let c = Checkpoint::from_translated(&translated("G", 3, 42), 1_700_000_000_000);
        let r = c.to_record();
        assert_eq!(r.key.as_deref(), Some(&b"G/orders/3"[..]));
        let back = Checkpoint::from_record(r.key.as_deref(), r.value.as_deref()).unwrap();
        assert_eq!(back, c);
        let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(json["source_offset"], 42);
        assert_eq!(json["target_offset"], 42);
    }

    #[test]
    fn record_whose_value_belongs_to_another_key_is_refused() {
        let c = Checkpoint::from_translated(&translated("G", 3, 42), 0);
        let r = c.to_record();
        let err = Checkpoint::from_record(Some(b"G/orders/4"), r.value.as_deref()).unwrap_err();
        assert!(err.to_string().contains("G/orders/3"), "{err}");
    }

    #[test]
    fn last_record_per_key_wins_when_read_back() {
        let mut table = CheckpointTable::default();
        for (p, o) in [(0, 5), (1, 7), (0, 9)] {
            let r = Checkpoint::from_translated(&translated("G", p, o), 0).to_record();
            table.apply(r.key.as_deref(), r.value.as_deref());
        }
        table.apply(Some(b"junk"), Some(b"not json"));
        let latest: Vec<(i32, i64)> = table
            .of_group("G")
            .iter()
            .map(|c| (c.partition, c.target_offset))
            .collect();
        assert_eq!(latest, vec![(0, 9), (1, 7)]);
    }

    #[test]
    fn only_changed_positions_are_written_again() {
        let mut cp = Checkpointer::default();
        assert_eq!(
            cp.changed(&[translated("G", 0, 5), translated("G", 1, 7)], 1)
                .len(),
            2
        );
        let again = cp.changed(&[translated("G", 0, 5), translated("G", 1, 8)], 2);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].target_offset, 8);
        let mut resumed = Checkpointer::resume(&{
            let mut t = CheckpointTable::default();
            let r = Checkpoint::from_translated(&translated("G", 0, 5), 0).to_record();
            t.apply(r.key.as_deref(), r.value.as_deref());
            t
        });
        assert!(resumed.changed(&[translated("G", 0, 5)], 3).is_empty());
    }
}
