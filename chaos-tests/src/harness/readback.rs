//! The final read: every partition of a topic from its log start to its high watermark,
//! after the faults have healed, as the checker's [`PartitionLog`]s.

use std::time::{Duration, Instant};

use broker::client::{Client, Consumer, ConsumerConfig, OffsetSpec, StartOffset};

use crate::error::ChaosError;
use crate::history::{PartitionId, PartitionLog, StoredRecord};

/// Reads every partition of `topic` in `region` completely.
pub async fn read_topic(
    client: &Client,
    region: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionLog>, ChaosError> {
    let cluster = |what: &str| {
        let what = format!("{what} of {region}/{topic}");
        move |source| ChaosError::Cluster { what, source }
    };
    let starts = client
        .list_offsets(topic, OffsetSpec::Earliest)
        .await
        .map_err(cluster("list log start offsets"))?;
    let ends = client
        .list_offsets(topic, OffsetSpec::Latest)
        .await
        .map_err(cluster("list high watermarks"))?;
    let mut logs = Vec::new();
    for (&partition, &high_watermark) in &ends {
        let log_start_offset = starts.get(&partition).copied().unwrap_or(0);
        let mut config = ConsumerConfig::new(topic);
        config.partitions = Some(vec![partition]);
        config.start = StartOffset::Offset(log_start_offset);
        let mut consumer = Consumer::new(client.clone(), config)
            .await
            .map_err(cluster("start a reader"))?;
        let mut records = Vec::new();
        let deadline = Instant::now() + timeout;
        while consumer.positions().get(&partition).copied().unwrap_or(0) < high_watermark {
            if Instant::now() > deadline {
                break;
            }
            for consumed in consumer.poll().await.map_err(cluster("read"))? {
                let r = consumed.record;
                if r.offset < high_watermark {
                    records.push(StoredRecord {
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key.map(|b| b.to_vec()),
                        value: r.value.map(|b| b.to_vec()),
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k, v.map(|b| b.to_vec())))
                            .collect(),
                    });
                }
            }
        }
        logs.push(PartitionLog {
            id: PartitionId::new(region, topic, partition),
            log_start_offset,
            high_watermark,
            records,
        });
    }
    Ok(logs)
}
