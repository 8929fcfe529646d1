//! Moving a consumer group from one region to another at its exact position.
//!
//! The positions come from the source region's committed offsets when it answers, else
//! from the latest checkpoints in the target region. Each translated position `P` is
//! verified (when the source answers) by comparing the record at `P - 1` in the target's
//! remote partition with the source record: same offset, key, value and timestamp.

use std::collections::BTreeMap;
use std::time::Duration;

use broker::client::{Client, Consumer, ConsumerConfig, OffsetSpec, StartOffset};
use broker::record::StoredRecord;
use serde::Serialize;

use crate::checkpoint::read_checkpoints;
use crate::error::{MirrorError, Result};
use crate::translate::{OffsetTranslator, Translated};

/// How a failover behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailoverOptions {
    /// Compute and verify, commit nothing.
    pub dry_run: bool,
    /// Accept positions beyond the mirrored end (clamped, missing records reported).
    pub force: bool,
    /// Wait up to this long for the mirror to reach the group's positions first.
    pub wait_for_lag_zero: Option<Duration>,
}

/// Where the positions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositionSource {
    /// The source region's committed offsets (it answered).
    SourceCommits,
    /// The latest checkpoints in the target region (the source did not answer).
    Checkpoints,
}

/// One partition of the failover report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverRow {
    /// The translated position.
    #[serde(flatten)]
    pub position: Translated,
    /// `Some(true)` when the record at `P - 1` matched the source, `Some(false)` when it
    /// did not, `None` when it could not be checked (source down, or `P == 0`).
    pub verified: Option<bool>,
    /// Records the group has left to read in the target partition.
    pub lag: i64,
}

impl FailoverRow {
    /// Exact: nothing missing and the verification (if any) matched.
    pub fn is_exact(&self) -> bool {
        self.position.is_exact() && self.verified != Some(false)
    }
}

/// What a failover did.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// The group.
    pub group: String,
    /// Where the positions came from.
    pub positions_from: PositionSource,
    /// Whether they were committed in the target.
    pub committed: bool,
    /// Per partition.
    pub partitions: Vec<FailoverRow>,
}

impl FailoverReport {
    /// True when every partition is exact (the CLI exits 0 only then).
    pub fn all_exact(&self) -> bool {
        self.partitions.iter().all(FailoverRow::is_exact)
    }
}

/// Reads the record at `offset` of one partition, `None` when it is not stored.
pub async fn record_at(
    client: &Client,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<StoredRecord>> {
    let ends = client
        .list_offsets_of(topic, &[partition], OffsetSpec::Latest)
        .await?;
    let start = client
        .list_offsets_of(topic, &[partition], OffsetSpec::Earliest)
        .await?;
    if offset >= ends.get(&partition).copied().unwrap_or(0)
        || offset < start.get(&partition).copied().unwrap_or(0)
    {
        return Ok(None);
    }
    let mut config = ConsumerConfig::new(topic);
    config.partitions = Some(vec![partition]);
    config.start = StartOffset::Offset(offset);
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(client.clone(), config).await?;
    for _ in 0..20 {
        for r in consumer.poll().await? {
            if r.record.offset == offset {
                return Ok(Some(r.record));
            }
            if r.record.offset > offset {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

async fn target_ends(
    target: &Client,
    translator: &OffsetTranslator,
    committed: &BTreeMap<(String, i32), i64>,
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut out = BTreeMap::new();
    for (topic, partition) in committed.keys() {
        let Some(target_topic) = translator.target_topic(topic) else {
            continue;
        };
        match target
            .list_offsets_of(&target_topic, &[*partition], OffsetSpec::Latest)
            .await
        {
            Ok(ends) => {
                out.insert((target_topic, *partition), ends[partition]);
            }
            Err(broker::BrokerError::UnknownTopic { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(out)
}

/// Fails `group` over from the translator's source region to its target region.
///
/// `source` is `None` (or fails to answer) when the source region is down: the latest
/// checkpoints are used and nothing is verified. `group_active_in_target` is the
/// caller's knowledge of whether the group has members in the target; the failover
/// refuses then unless forced.
pub async fn failover(
    source: Option<&Client>,
    target: &Client,
    translator: &OffsetTranslator,
    group: &str,
    group_active_in_target: bool,
    options: FailoverOptions,
) -> Result<FailoverReport> {
    if group_active_in_target && !options.force {
        return Err(MirrorError::GroupActive {
            group: group.to_owned(),
            region: translator.target().to_owned(),
        });
    }
    let source_commits = match source {
        Some(client) => match client.fetch_offsets(group, &[]).await {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::warn!(group, %err, "source region does not answer; using checkpoints");
                None
            }
        },
        None => None,
    };
    let (positions_from, committed) = match &source_commits {
        Some(c) => (PositionSource::SourceCommits, c.clone()),
        None => {
            let table = read_checkpoints(target, translator.source()).await?;
            let c = table
                .of_group(group)
                .into_iter()
                .map(|c| ((c.source_topic.clone(), c.partition), c.source_offset))
                .collect();
            (PositionSource::Checkpoints, c)
        }
    };
    let deadline = options
        .wait_for_lag_zero
        .map(|d| tokio::time::Instant::now() + d);
    let translated = loop {
        let ends = target_ends(target, translator, &committed).await?;
        match translator.translate(group, &committed, &ends, options.force) {
            Err(MirrorError::NotMirrored { .. })
                if deadline.is_some_and(|d| tokio::time::Instant::now() < d) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other?,
        }
    };
    let verify = if positions_from == PositionSource::SourceCommits {
        source
    } else {
        None
    };
    let mut rows = Vec::new();
    for t in translated {
        let verified = match verify {
            Some(source) if t.target_offset > 0 => {
                let at = t.target_offset - 1;
                let theirs = record_at(source, &t.source_topic, t.partition, at).await?;
                let ours = record_at(target, &t.target_topic, t.partition, at).await?;
                match (theirs, ours) {
                    (Some(a), Some(b)) => Some(
                        a.offset == b.offset
                            && a.key == b.key
                            && a.value == b.value
                            && a.timestamp_ms == b.timestamp_ms,
                    ),
                    // Deleted from the source by retention: cannot compare.
                    (None, Some(_)) => None,
                    _ => Some(false),
                }
            }
            _ => None,
        };
        let lag = (t.target_end - t.target_offset).max(0);
        rows.push(FailoverRow {
            position: t,
            verified,
            lag,
        });
    }
    let mut report = FailoverReport {
        group: group.to_owned(),
        positions_from,
        committed: false,
        partitions: rows,
    };
    if !options.dry_run && (report.all_exact() || options.force) {
        let offsets: Vec<(String, i32, i64)> = report
            .partitions
            .iter()
            .map(|r| {
                (
                    r.position.target_topic.clone(),
                    r.position.partition,
                    r.position.target_offset,
                )
            })
            .collect();
        if !offsets.is_empty() {
            target.commit_offsets(group, &offsets).await?;
        }
        report.committed = true;
        tracing::info!(
            group,
            partitions = offsets.len(),
            source = translator.source(),
            target = translator.target(),
            "group failed over"
        );
    }
    Ok(report)
}
