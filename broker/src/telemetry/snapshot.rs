//! Gauges rebuilt from the broker's state at every scrape. Per-partition series exist
//! only for partitions this broker leads (a region's brokers together export each
//! partition once), so a scrape stays small however many partitions a region holds.

use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::node::BrokerNode;

/// The broker's scrape-time gauges.
#[derive(Debug, Clone)]
pub struct BrokerGauges {
    log_start: IntGaugeVec,
    log_end: IntGaugeVec,
    high_watermark: IntGaugeVec,
    isr_size: IntGaugeVec,
    replicas: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_committed: IntGaugeVec,
    leader_partitions: IntGauge,
    hosted_partitions: IntGauge,
    under_replicated: IntGauge,
    under_min_isr: IntGauge,
    offline: IntGauge,
    log_segments: IntGauge,
    log_bytes: IntGauge,
    controller_active: IntGauge,
    raft_term: IntGauge,
    raft_applied: IntGauge,
    raft_last_log: IntGauge,
    raft_voters: IntGauge,
    controller_has_leader: IntGauge,
    brokers_registered: IntGauge,
    brokers_fenced: IntGauge,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

impl BrokerGauges {
    /// Creates the gauges and registers them.
    pub fn register(registry: &Registry) -> Self {
        let part = &["topic", "partition"];
        let gauges = BrokerGauges {
            log_start: gauge_vec(
                "meridian_partition_log_start_offset",
                "First offset still stored, per partition this broker leads.",
                part,
            ),
            log_end: gauge_vec(
                "meridian_partition_log_end_offset",
                "Next offset to be written, per partition this broker leads.",
                part,
            ),
            high_watermark: gauge_vec(
                "meridian_partition_high_watermark",
                "Offset below which records are committed and visible, per partition this broker leads.",
                part,
            ),
            isr_size: gauge_vec(
                "meridian_partition_isr_size",
                "In-sync replicas, per partition this broker leads.",
                part,
            ),
            replicas: gauge_vec(
                "meridian_partition_replicas",
                "Assigned replicas, per partition this broker leads.",
                part,
            ),
            group_lag: gauge_vec(
                "meridian_group_lag_records",
                "High watermark minus the group's committed offset, per partition this broker leads.",
                &["group", "topic", "partition"],
            ),
            group_committed: gauge_vec(
                "meridian_group_committed_offset",
                "The group's committed offset, per partition this broker leads.",
                &["group", "topic", "partition"],
            ),
            leader_partitions: gauge(
                "meridian_broker_leader_partitions",
                "Partitions this broker leads.",
            ),
            hosted_partitions: gauge(
                "meridian_broker_partitions",
                "Partition replicas (leader or follower) this broker stores.",
            ),
            under_replicated: gauge(
                "meridian_broker_under_replicated_partitions",
                "Partitions this broker leads whose ISR is smaller than their replica set.",
            ),
            under_min_isr: gauge(
                "meridian_broker_under_min_isr_partitions",
                "Partitions this broker leads whose ISR is below min.insync.replicas (acks=all fails).",
            ),
            offline: gauge(
                "meridian_cluster_offline_partitions",
                "Partitions of the region with no leader, from this broker's copy of the metadata.",
            ),
            log_segments: gauge(
                "meridian_log_segments",
                "Segment files of every partition replica on this broker.",
            ),
            log_bytes: gauge(
                "meridian_log_size_bytes",
                "Bytes on disk of every partition replica on this broker.",
            ),
            controller_active: gauge(
                "meridian_controller_active",
                "1 on the region's active controller (the Raft leader), 0 elsewhere.",
            ),
            raft_term: gauge(
                "meridian_controller_raft_term",
                "This controller node's current Raft term.",
            ),
            raft_applied: gauge(
                "meridian_controller_raft_applied_index",
                "Last committed Raft entry applied to this node's metadata.",
            ),
            raft_last_log: gauge(
                "meridian_controller_raft_last_log_index",
                "Last Raft entry in this node's log (committed or not).",
            ),
            raft_voters: gauge(
                "meridian_controller_raft_voters",
                "Voters in the controller quorum's membership.",
            ),
            controller_has_leader: gauge(
                "meridian_controller_has_leader",
                "1 if this node knows an active controller, 0 while the quorum has no leader.",
            ),
            brokers_registered: gauge(
                "meridian_cluster_brokers",
                "Brokers registered with the controller, from this broker's copy of the metadata.",
            ),
            brokers_fenced: gauge(
                "meridian_cluster_fenced_brokers",
                "Registered brokers that missed their session and lead nothing.",
            ),
        };
        for vec in [
            &gauges.log_start,
            &gauges.log_end,
            &gauges.high_watermark,
            &gauges.isr_size,
            &gauges.replicas,
            &gauges.group_lag,
            &gauges.group_committed,
        ] {
            super::register(registry, vec);
        }
        for one in [
            &gauges.leader_partitions,
            &gauges.hosted_partitions,
            &gauges.under_replicated,
            &gauges.under_min_isr,
            &gauges.offline,
            &gauges.log_segments,
            &gauges.log_bytes,
            &gauges.controller_active,
            &gauges.raft_term,
            &gauges.raft_applied,
            &gauges.raft_last_log,
            &gauges.raft_voters,
            &gauges.controller_has_leader,
            &gauges.brokers_registered,
            &gauges.brokers_fenced,
        ] {
            super::register(registry, one);
        }
        gauges
    }

    /// Rebuilds every gauge from `node` as it is now.
    pub fn refresh(&self, node: &BrokerNode) {
        let state = node.cluster();
        let me = node.identity().id;
        for vec in [
            &self.log_start,
            &self.log_end,
            &self.high_watermark,
            &self.isr_size,
            &self.replicas,
            &self.group_lag,
            &self.group_committed,
        ] {
            vec.reset();
        }
        let (mut leading, mut under, mut under_min, mut offline) = (0, 0, 0, 0);
        for (topic, topic_state) in &state.topics {
            for (index, placement) in topic_state.partitions.iter().enumerate() {
                if placement.leader.is_none() {
                    offline += 1;
                }
                if placement.leader != Some(me) {
                    continue;
                }
                let Some(partition) = node.hosted_partition(topic, index as i32) else {
                    continue;
                };
                leading += 1;
                if placement.isr.len() < placement.replicas.len() {
                    under += 1;
                }
                if placement.isr.len() < partition.min_insync() {
                    under_min += 1;
                }
                let labels = [topic.as_str(), &index.to_string()];
                self.log_start
                    .with_label_values(&labels)
                    .set(partition.log_start_offset());
                self.log_end
                    .with_label_values(&labels)
                    .set(partition.log_end_offset());
                let hw = partition.high_watermark();
                self.high_watermark.with_label_values(&labels).set(hw);
                self.isr_size
                    .with_label_values(&labels)
                    .set(placement.isr.len() as i64);
                self.replicas
                    .with_label_values(&labels)
                    .set(placement.replicas.len() as i64);
                for (group, topics) in &state.group_offsets {
                    if let Some(committed) = topics.get(topic).and_then(|p| p.get(&(index as u32)))
                    {
                        let labels = [group.as_str(), topic.as_str(), &index.to_string()];
                        self.group_committed
                            .with_label_values(&labels)
                            .set(committed.offset);
                        self.group_lag
                            .with_label_values(&labels)
                            .set((hw - committed.offset).max(0));
                    }
                }
            }
        }
        self.leader_partitions.set(leading);
        self.under_replicated.set(under);
        self.under_min_isr.set(under_min);
        self.offline.set(offline);
        let hosted: Vec<Arc<crate::partition::Partition>> = node.hosted_partitions();
        self.hosted_partitions.set(hosted.len() as i64);
        let (segments, bytes) = hosted.iter().fold((0usize, 0u64), |(s, b), p| {
            let (ps, pb) = p.disk_usage();
            (s + ps, b + pb)
        });
        self.log_segments.set(segments as i64);
        self.log_bytes.set(bytes as i64);
        let raft = node.controller().metrics();
        self.controller_active.set(i64::from(raft.is_leader));
        self.controller_has_leader
            .set(i64::from(raft.leader.is_some()));
        self.raft_term.set(raft.term as i64);
        self.raft_applied
            .set(raft.last_applied_index.unwrap_or(0) as i64);
        self.raft_last_log
            .set(raft.last_log_index.unwrap_or(0) as i64);
        self.raft_voters.set(raft.voters.len() as i64);
        self.brokers_registered.set(state.brokers.len() as i64);
        self.brokers_fenced
            .set(state.brokers.values().filter(|b| b.fenced).count() as i64);
    }
}
