//! Flow planning, pure: given what the source region has and what the target region
//! has, decide which source topics a flow mirrors, under which remote names, and what
//! must be created. No I/O: the worker lists topics, this decides, the worker acts.
//!
//! Rules (the loop rules are what keep active/active and chains safe):
//! - a topic is mirrored when the flow's filter matches it, except internal topics
//!   (`__*`, `_meridian*`); the source region's `heartbeats` topic is always mirrored,
//!   whatever the filter says, because mirrored heartbeats measure the flow's latency;
//! - the remote name is `<source><sep><topic>`: B's `A.orders` goes to C as
//!   `B.A.orders` (MirrorMaker 2's default policy);
//! - a topic whose origin chain (its region prefixes, and its `mirror.source.region`
//!   provenance config) includes the target region is never mirrored: that would bring
//!   the target's own data back to it (`A ⇄ B` would grow `A.B.A.orders`);
//! - a remote topic keeps the source's partition count and configs, plus provenance
//!   configs naming the source region, topic and flow;
//! - a remote topic that exists with fewer partitions, or whose source topic is gone, is
//!   reported: Meridian cannot add partitions yet, and deleting data is left to people.

use std::collections::BTreeMap;

use broker::topic_config::MIRROR_CONFIG_PREFIX;

/// Provenance config: the region a remote topic copies.
pub const SOURCE_REGION_CONFIG: &str = "mirror.source.region";
/// Provenance config: the topic name in the source region.
pub const SOURCE_TOPIC_CONFIG: &str = "mirror.source.topic";
/// Provenance config: the flow that created it (`source->target`).
pub const FLOW_CONFIG: &str = "mirror.flow";
/// Every region's heartbeat topic.
pub const HEARTBEATS_TOPIC: &str = "heartbeats";

/// A topic as listed in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Effective configs (Kafka names), provenance included.
    pub configs: BTreeMap<String, String>,
}

/// What a flow is, for planning.
pub struct FlowRules {
    /// Source region name.
    pub source: String,
    /// Target region name.
    pub target: String,
    /// The deployment's remote-topic separator.
    pub separator: String,
    /// Every region of the deployment (to read origin chains from names).
    pub regions: Vec<String>,
    /// The flow's topic filter.
    pub filter: topology::CompiledFilter,
    /// Whether a remote topic goes when its source topic is deleted.
    pub delete_remote_topics: bool,
}

/// One source topic the flow mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// Name in the source region.
    pub source_topic: String,
    /// Name in the target region.
    pub remote_topic: String,
    /// Source partition count.
    pub partitions: i32,
}

/// Something the worker must do or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the remote topic with these configs.
    Create {
        /// Remote topic name.
        remote_topic: String,
        /// Partition count (the source's).
        partitions: i32,
        /// Source configs plus provenance.
        configs: BTreeMap<String, String>,
    },
    /// The source has more partitions than the remote: grow the remote topic (the new
    /// partitions are mirrored from the next round).
    PartitionsBehind {
        /// Remote topic name.
        remote_topic: String,
        /// Remote partition count.
        remote: i32,
        /// Source partition count.
        source: i32,
    },
    /// The source's synced configs changed: set these on the remote topic (an empty
    /// value removes the override).
    SyncConfigs {
        /// Remote topic name.
        remote_topic: String,
        /// The keys that differ, with the source's value.
        configs: BTreeMap<String, String>,
    },
    /// A remote topic of this flow whose source topic no longer exists: reported, and
    /// deleted when the flow says `delete_remote_topics`.
    SourceDeleted {
        /// Remote topic name.
        remote_topic: String,
        /// Whether to delete it.
        delete: bool,
    },
}

/// The flow's plan for this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Topics to copy (partitions that exist on both sides).
    pub mirrored: Vec<Mirrored>,
    /// What to create or report.
    pub actions: Vec<Action>,
    /// Source topics left out and why (for status and logs).
    pub skipped: Vec<(String, String)>,
}

/// Configs that describe a topic's storage and are copied to its remote topic.
const SYNCED_CONFIGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "min.insync.replicas",
];

impl FlowRules {
    /// The rules of one of the deployment's flows.
    pub fn for_flow(
        topology: &topology::Topology,
        flow: &topology::Flow,
    ) -> Result<Self, crate::MirrorError> {
        let filter = flow
            .topics
            .compile()
            .map_err(|e| crate::MirrorError::BadFilter {
                flow: format!("{}->{}", flow.source, flow.target),
                reason: e.to_string(),
            })?;
        Ok(Self {
            source: flow.source.clone(),
            target: flow.target.clone(),
            separator: topology.deployment.remote_topic_separator.clone(),
            regions: topology.regions().iter().map(|r| r.name.clone()).collect(),
            filter,
            delete_remote_topics: flow.delete_remote_topics,
        })
    }

    /// The remote name of a source topic.
    pub fn remote_name(&self, topic: &str) -> String {
        format!("{}{}{topic}", self.source, self.separator)
    }

    /// The regions a topic's data passed through, outermost first, read from its name
    /// (`B.A.orders` → [B, A]) and its provenance config.
    pub fn origin_chain(&self, topic: &TopicListing) -> Vec<String> {
        let mut chain = Vec::new();
        let mut rest = topic.name.as_str();
        'outer: loop {
            for region in &self.regions {
                if let Some(tail) = rest
                    .strip_prefix(region.as_str())
                    .and_then(|t| t.strip_prefix(self.separator.as_str()))
                    && !tail.is_empty()
                {
                    chain.push(region.clone());
                    rest = tail;
                    continue 'outer;
                }
            }
            break;
        }
        if let Some(region) = topic.configs.get(SOURCE_REGION_CONFIG)
            && !chain.contains(region)
        {
            chain.push(region.clone());
        }
        chain
    }

    /// Why a source topic is not mirrored, or `None` when it is.
    pub fn skip_reason(&self, topic: &TopicListing) -> Option<String> {
        if topic.name.starts_with("__") || topic.name.starts_with("_meridian") {
            return Some("internal topic".into());
        }
        if self.origin_chain(topic).contains(&self.target) {
            return Some(format!(
                "it came from {} (mirroring it back would loop)",
                self.target
            ));
        }
        if topic.name == HEARTBEATS_TOPIC || self.filter.is_match(&topic.name) {
            None
        } else {
            Some("not matched by the flow's topic filter".into())
        }
    }

    /// Plans one round from the two regions' topic listings.
    pub fn plan(&self, source: &[TopicListing], target: &[TopicListing]) -> Plan {
        let targets: BTreeMap<&str, &TopicListing> =
            target.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut plan = Plan::default();
        for topic in source {
            if let Some(reason) = self.skip_reason(topic) {
                plan.skipped.push((topic.name.clone(), reason));
                continue;
            }
            let remote_topic = self.remote_name(&topic.name);
            match targets.get(remote_topic.as_str()) {
                None => {
                    plan.actions.push(Action::Create {
                        remote_topic: remote_topic.clone(),
                        partitions: topic.partitions,
                        configs: self.remote_configs(topic),
                    });
                    plan.mirrored.push(Mirrored {
                        source_topic: topic.name.clone(),
                        remote_topic,
                        partitions: topic.partitions,
                    });
                }
                Some(existing) => {
                    let drift = self.config_drift(topic, existing);
                    if !drift.is_empty() {
                        plan.actions.push(Action::SyncConfigs {
                            remote_topic: remote_topic.clone(),
                            configs: drift,
                        });
                    }
                    if existing.partitions < topic.partitions {
                        plan.actions.push(Action::PartitionsBehind {
                            remote_topic: remote_topic.clone(),
                            remote: existing.partitions,
                            source: topic.partitions,
                        });
                    }
                    plan.mirrored.push(Mirrored {
                        source_topic: topic.name.clone(),
                        remote_topic,
                        partitions: existing.partitions.min(topic.partitions),
                    });
                }
            }
        }
        let flow = self.flow_name();
        for remote in target {
            if remote.configs.get(FLOW_CONFIG) == Some(&flow)
                && let Some(source_topic) = remote.configs.get(SOURCE_TOPIC_CONFIG)
                && !source.iter().any(|t| &t.name == source_topic)
            {
                plan.actions.push(Action::SourceDeleted {
                    remote_topic: remote.name.clone(),
                    delete: self.delete_remote_topics,
                });
            }
        }
        plan
    }

    /// `source->target`, as the provenance config names the flow.
    pub fn flow_name(&self) -> String {
        format!("{}->{}", self.source, self.target)
    }

    /// The synced configs whose remote value differs from the source's, with the
    /// source's value ("" where the source has none, which removes the override).
    fn config_drift(
        &self,
        source: &TopicListing,
        remote: &TopicListing,
    ) -> BTreeMap<String, String> {
        SYNCED_CONFIGS
            .iter()
            .filter_map(|key| {
                let want = source.configs.get(*key);
                (remote.configs.get(*key) != want)
                    .then(|| ((*key).to_string(), want.cloned().unwrap_or_default()))
            })
            .collect()
    }

    fn remote_configs(&self, topic: &TopicListing) -> BTreeMap<String, String> {
        let mut configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter(|(k, _)| SYNCED_CONFIGS.contains(&k.as_str()))
            .filter(|(k, _)| !k.starts_with(MIRROR_CONFIG_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        configs.insert(SOURCE_REGION_CONFIG.into(), self.source.clone());
        configs.insert(SOURCE_TOPIC_CONFIG.into(), topic.name.clone());
        configs.insert(FLOW_CONFIG.into(), self.flow_name());
        configs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(source: &str, target: &str, include: &[&str], exclude: &[&str]) -> FlowRules {
        let filter = topology::Filter {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        FlowRules {
            source: source.into(),
            target: target.into(),
            separator: ".".into(),
            regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
            filter: filter.compile().unwrap(),
            delete_remote_topics: false,
        }
    }

    fn topic(name: &str, partitions: i32) -> TopicListing {
        TopicListing {
            name: name.into(),
            partitions,
            configs: BTreeMap::from([("retention.ms".into(), "604800000".into())]),
        }
    }

    fn names(plan: &Plan) -> Vec<(&str, &str)> {
        plan.mirrored
            .iter()
            .map(|m| (m.source_topic.as_str(), m.remote_topic.as_str()))
            .collect()
    }

    #[test]
    fn matching_topics_get_remote_topics_with_the_source_partition_count_and_provenance() {
        let r = rules("us-east", "eu-west", &[".*"], &[]);
        let plan = r.plan(&[topic("orders", 6)], &[]);
        assert_eq!(names(&plan), [("orders", "us-east.orders")]);
        let Action::Create {
            partitions,
            configs,
            ..
        } = &plan.actions[0]
        else {
            panic!("{plan:?}")
        };
        assert_eq!(*partitions, 6);
        assert_eq!(configs[SOURCE_REGION_CONFIG], "us-east");
        assert_eq!(configs[SOURCE_TOPIC_CONFIG], "orders");
        assert_eq!(configs[FLOW_CONFIG], "us-east->eu-west");
        assert_eq!(configs["retention.ms"], "604800000");
    }

    #[test]
    fn active_active_never_mirrors_a_topic_back_where_it_came_from() {
        // eu-west -> us-east flow; us-east holds its own orders and eu-west's copy.
        let r = rules("eu-west", "us-east", &[".*"], &[]);
        let mut back = topic("us-east.orders", 3);
        back.configs
            .insert(SOURCE_REGION_CONFIG.into(), "us-east".into());
        let plan = r.plan(&[topic("orders", 3), back], &[]);
        assert_eq!(names(&plan), [("orders", "eu-west.orders")]);
        assert!(plan.skipped[0].1.contains("loop"), "{:?}", plan.skipped);
    }

    #[test]
    fn a_chain_mirrors_a_remote_topic_onward_under_a_longer_name() {
        let r = rules("eu-west", "ap-south", &[".*"], &[]);
        let plan = r.plan(&[topic("us-east.orders", 3)], &[]);
        assert_eq!(names(&plan), [("us-east.orders", "eu-west.us-east.orders")]);
    }

    #[test]
    fn a_renamed_topic_still_loops_by_its_provenance() {
        let r = rules("eu-west", "us-east", &[".*"], &[]);
        let mut sneaky = topic("copied-orders", 3);
        sneaky
            .configs
            .insert(SOURCE_REGION_CONFIG.into(), "us-east".into());
        assert!(r.plan(&[sneaky], &[]).mirrored.is_empty());
    }

    #[test]
    fn filters_apply_but_heartbeats_are_always_mirrored_and_internal_topics_never() {
        let r = rules("us-east", "eu-west", &["^orders$"], &["^heartbeats$"]);
        let plan = r.plan(
            &[
                topic("orders", 1),
                topic("payments", 1),
                topic("heartbeats", 1),
                topic("__internal", 1),
            ],
            &[],
        );
        assert_eq!(
            names(&plan),
            [
                ("orders", "us-east.orders"),
                ("heartbeats", "us-east.heartbeats")
            ]
        );
        assert_eq!(plan.skipped.len(), 2);
    }

    #[test]
    fn an_existing_remote_topic_is_reused_and_missing_partitions_reported() {
        let r = rules("us-east", "eu-west", &[".*"], &[]);
        let plan = r.plan(&[topic("orders", 6)], &[topic("us-east.orders", 3)]);
        assert_eq!(plan.mirrored[0].partitions, 3);
        assert_eq!(
            plan.actions,
            [Action::PartitionsBehind {
                remote_topic: "us-east.orders".into(),
                remote: 3,
                source: 6
            }]
        );
    }

    #[test]
    fn a_deleted_source_topic_is_reported_not_deleted() {
        let r = rules("us-east", "eu-west", &[".*"], &[]);
        let mut remote = topic("us-east.gone", 1);
        remote
            .configs
            .insert(FLOW_CONFIG.into(), "us-east->eu-west".into());
        remote
            .configs
            .insert(SOURCE_TOPIC_CONFIG.into(), "gone".into());
        let plan = r.plan(&[], &[remote]);
        assert_eq!(
            plan.actions,
            [Action::SourceDeleted {
                remote_topic: "us-east.gone".into(),
                delete: false,
            }]
        );
    }

    #[test]
    fn config_changes_are_synced_and_deletions_follow_the_flow_setting() {
        let mut r = rules("us-east", "eu-west", &[".*"], &[]);
        let mut source = topic("orders", 3);
        source
            .configs
            .insert("retention.bytes".into(), "1000".into());
        let mut remote = topic("us-east.orders", 3);
        remote.configs.insert("segment.ms".into(), "60000".into());
        let plan = r.plan(&[source.clone()], &[remote.clone()]);
        assert_eq!(
            plan.actions,
            [Action::SyncConfigs {
                remote_topic: "us-east.orders".into(),
                configs: BTreeMap::from([
                    ("retention.bytes".to_string(), "1000".to_string()),
                    ("segment.ms".to_string(), String::new()),
                ]),
            }],
            "set what the source has, remove what it does not"
        );
        r.delete_remote_topics = true;
        let mut gone = topic("us-east.gone", 1);
        gone.configs
            .insert(SOURCE_TOPIC_CONFIG.into(), "gone".into());
        gone.configs.insert(FLOW_CONFIG.into(), r.flow_name());
        let plan = r.plan(&[], &[gone]);
        assert_eq!(
            plan.actions,
            [Action::SourceDeleted {
                remote_topic: "us-east.gone".into(),
                delete: true
            }]
        );
    }
}
