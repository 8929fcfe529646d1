//! Heartbeats: one worker per region (the rendezvous owner of the region's heartbeat key
//! among its live workers) writes a record every second to the region's `heartbeats`
//! topic: key = region, value = JSON `{"region", "timestamp_ms"}`. Flows always mirror
//! it, so `A.heartbeats` in B shows that A feeds B and how far behind it is (the copier
//! measures the latency of each mirrored heartbeat).

use std::sync::Arc;
use std::time::Duration;

use broker::client::{Acks, Client, Producer, ProducerConfig, TopicSpec};
use broker::record::Record;
use bytes::Bytes;

use crate::copy::now_ms;
use crate::ownership::owner;
use crate::plan::HEARTBEATS_TOPIC;

/// How often a heartbeat is written.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Writes heartbeats while this worker owns them; runs until aborted.
pub async fn run(target: Client, gossip: Arc<gossip::GossipHandle>, view: topology::NodeView) {
    let key = format!("heartbeats/{}", view.region);
    let mut producer: Option<Producer> = None;
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tick.tick().await;
        let workers = crate::worker::live_workers(&gossip, &view);
        if owner(&key, &workers) != Some(view.name.as_str()) {
            producer = None;
            continue;
        }
        if producer.is_none() {
            let spec = TopicSpec {
                name: HEARTBEATS_TOPIC.into(),
                partitions: 1,
                ..TopicSpec::default()
            };
            match target.create_topic(spec).await {
                Ok(()) => tracing::info!(region = %view.region, "created the heartbeats topic"),
                Err(err) if err.to_string().contains("already exists") => {}
                Err(err) => {
                    tracing::warn!(region = %view.region, %err, "cannot create the heartbeats topic; retrying");
                    continue;
                }
            }
            let config = ProducerConfig {
                acks: Acks::All,
                ..ProducerConfig::default()
            };
            match Producer::new(target.clone(), config) {
                Ok(p) => producer = Some(p),
                Err(err) => {
                    tracing::warn!(%err, "cannot start the heartbeat producer");
                    continue;
                }
            }
        }
        let Some(p) = &producer else { continue };
        let now = now_ms();
        let value = serde_json::json!({ "region": view.region, "timestamp_ms": now }).to_string();
        let mut record = Record::new(Bytes::from(value), now);
        record.key = Some(Bytes::from(view.region.clone()));
        match p.send(HEARTBEATS_TOPIC, Some(0), record).await {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if let Err(err) = delivery.await {
                        tracing::debug!(%err, "heartbeat not acknowledged");
                    }
                });
            }
            Err(err) => tracing::debug!(%err, "heartbeat not sent"),
        }
    }
}
