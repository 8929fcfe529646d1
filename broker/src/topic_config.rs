//! A topic's effective configuration: the deployment's topic defaults with the topic's
//! own overrides on top, read and written with Kafka's config names so that operators
//! (and Kafka tools) recognise them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{BrokerError, Result};
use crate::log::{FlushPolicy, LogConfig};

/// Prefix of the provenance configs a mirror worker writes on the remote topics it
/// creates (`mirror.source.region`, `mirror.source.topic`, `mirror.flow`): they make a
/// remote topic say where it came from, which is how flows avoid loops.
pub const MIRROR_CONFIG_PREFIX: &str = "mirror.";

/// Config names a topic accepts, with what each means; `describe` lists them all.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    (
        "retention.ms",
        "delete whole segments older than this (ms or \"7d\"; -1 = forever)",
    ),
    (
        "retention.bytes",
        "delete old segments beyond this size per partition (-1 = unlimited)",
    ),
    ("segment.bytes", "roll the active segment at this size"),
    ("segment.ms", "roll the active segment at this age"),
    (
        "max.message.bytes",
        "largest record batch the topic accepts",
    ),
    (
        "min.insync.replicas",
        "in-sync replicas needed for acks=all",
    ),
    (
        "unclean.leader.election.enable",
        "true lets an out-of-sync replica lead when no in-sync one is left (loses records)",
    ),
    (
        "flush.policy",
        "batch (fsync every batch, group commit) | none | an interval like 100ms",
    ),
];

/// Everything that decides how a topic's partitions store data.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// Replicas in-sync needed for acks=all.
    pub min_insync_replicas: i32,
    /// Whether an out-of-sync replica may become leader when no in-sync one is left
    /// (availability over durability; off by default, as in Kafka). The controller reads
    /// the topic's override; it is kept here so it is validated and described.
    pub unclean_leader_election: bool,
    /// Age after which whole segments are deleted; `None` keeps data forever.
    pub retention_time: Option<Duration>,
    /// Per-partition size beyond which old segments are deleted; `None` is unlimited.
    pub retention_bytes: Option<u64>,
    /// Size at which the active segment rolls.
    pub segment_bytes: u64,
    /// Age at which the active segment rolls.
    pub segment_age: Duration,
    /// When appended data is fsynced.
    pub flush: FlushPolicy,
    /// Largest batch accepted.
    pub max_message_bytes: u64,
}

impl TopicConfig {
    /// The deployment's defaults, before any per-topic override.
    pub fn from_defaults(defaults: &topology::TopicDefaults) -> Self {
        Self {
            min_insync_replicas: i32::from(defaults.min_insync_replicas),
            unclean_leader_election: false,
            retention_time: defaults.retention_time,
            retention_bytes: defaults.retention_bytes,
            segment_bytes: defaults.segment_bytes,
            segment_age: defaults.segment_age,
            flush: match defaults.flush {
                topology::FlushPolicy::EveryBatch => FlushPolicy::EveryBatch,
                topology::FlushPolicy::Interval(d) => FlushPolicy::Interval(d),
                topology::FlushPolicy::Never => FlushPolicy::Never,
            },
            max_message_bytes: defaults.max_message_bytes,
        }
    }

    /// Applies per-topic overrides; an unknown key or a bad value names itself and
    /// changes nothing.
    pub fn with_overrides(mut self, overrides: &BTreeMap<String, String>) -> Result<Self> {
        for (key, value) in overrides {
            let bad = |why: String| BrokerError::InvalidConfig {
                key: key.clone(),
                value: value.clone(),
                reason: why,
            };
            match key.as_str() {
                "retention.ms" => {
                    self.retention_time = parse_optional_duration(value).map_err(bad)?
                }
                "retention.bytes" => {
                    self.retention_bytes = parse_optional_size(value).map_err(bad)?
                }
                "segment.bytes" => {
                    self.segment_bytes = parse_size(value).map_err(bad)?;
                    if self.segment_bytes < 1024 {
                        return Err(bad("segments must hold at least 1024 bytes".into()));
                    }
                }
                "segment.ms" => self.segment_age = parse_duration(value).map_err(bad)?,
                "max.message.bytes" => self.max_message_bytes = parse_size(value).map_err(bad)?,
                "min.insync.replicas" => {
                    self.min_insync_replicas = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("expected a whole number of at least 1".into()))?
                }
                "flush.policy" => self.flush = parse_flush(value).map_err(bad)?,
                "unclean.leader.election.enable" => {
                    self.unclean_leader_election = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("expected true or false".into())),
                    }
                }
                // Provenance of a mirrored (remote) topic, written by the mirror worker:
                // which region, topic and flow it copies. Kept as given, no behaviour.
                key if key.starts_with(MIRROR_CONFIG_PREFIX) => {}
                _ => {
                    let known: Vec<&str> = KNOWN_KEYS.iter().map(|(k, _)| *k).collect();
                    return Err(bad(format!(
                        "unknown config; known ones are {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(self)
    }

    /// Every effective value under its Kafka name, as Metadata and `topic describe` show.
    pub fn describe(&self) -> BTreeMap<String, String> {
        let ms = |d: Duration| d.as_millis().to_string();
        BTreeMap::from([
            (
                "retention.ms".into(),
                self.retention_time.map_or("-1".into(), ms),
            ),
            (
                "retention.bytes".into(),
                self.retention_bytes.map_or("-1".into(), |b| b.to_string()),
            ),
            ("segment.bytes".into(), self.segment_bytes.to_string()),
            ("segment.ms".into(), ms(self.segment_age)),
            (
                "max.message.bytes".into(),
                self.max_message_bytes.to_string(),
            ),
            (
                "min.insync.replicas".into(),
                self.min_insync_replicas.to_string(),
            ),
            (
                "unclean.leader.election.enable".into(),
                self.unclean_leader_election.to_string(),
            ),
            (
                "flush.policy".into(),
                match self.flush {
                    FlushPolicy::EveryBatch => "batch".into(),
                    FlushPolicy::Never => "none".into(),
                    FlushPolicy::Interval(d) => humantime::format_duration(d).to_string(),
                },
            ),
        ])
    }

    /// The partition log's view of this config.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: self.segment_age,
            retention_time: self.retention_time,
            retention_bytes: self.retention_bytes,
            flush: self.flush,
            max_message_bytes: usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX),
            ..LogConfig::default()
        }
    }
}

fn parse_duration(value: &str) -> std::result::Result<Duration, String> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    topology::parse_duration(value).map_err(|e| e.to_string())
}

fn parse_optional_duration(value: &str) -> std::result::Result<Option<Duration>, String> {
    match value {
        "-1" | "forever" => Ok(None),
        _ => parse_duration(value).map(Some),
    }
}

fn parse_size(value: &str) -> std::result::Result<u64, String> {
    if let Ok(n) = value.parse::<u64>() {
        return Ok(n);
    }
    topology::parse_size(value).map_err(|e| e.to_string())
}

fn parse_optional_size(value: &str) -> std::result::Result<Option<u64>, String> {
    match value {
        "-1" | "unlimited" => Ok(None),
        _ => parse_size(value).map(Some),
    }
}

fn parse_flush(value: &str) -> std::result::Result<FlushPolicy, String> {
    match value {
        "batch" => Ok(FlushPolicy::EveryBatch),
        "none" => Ok(FlushPolicy::Never),
        other => parse_duration(other)
            .map(FlushPolicy::Interval)
            .map_err(|_| "expected batch, none or an interval like 100ms".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> TopicConfig {
        TopicConfig {
            min_insync_replicas: 1,
            unclean_leader_election: false,
            retention_time: None,
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 86400),
            flush: FlushPolicy::EveryBatch,
            max_message_bytes: 1 << 20,
        }
    }

    #[test]
    fn overrides_accept_kafka_numbers_and_human_values() {
        let overrides = BTreeMap::from([
            ("retention.ms".to_owned(), "86400000".to_owned()),
            ("retention.bytes".to_owned(), "1GiB".to_owned()),
            ("segment.ms".to_owned(), "1h".to_owned()),
            ("flush.policy".to_owned(), "100ms".to_owned()),
        ]);
        let config = base().with_overrides(&overrides).unwrap();
        assert_eq!(config.retention_time, Some(Duration::from_secs(86400)));
        assert_eq!(config.retention_bytes, Some(1 << 30));
        assert_eq!(config.segment_age, Duration::from_secs(3600));
        assert_eq!(
            config.flush,
            FlushPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(config.describe()["retention.ms"], "86400000");
    }

    #[test]
    fn unclean_leader_election_is_an_opt_in_per_topic() {
        assert!(!base().unclean_leader_election);
        let on = BTreeMap::from([(
            "unclean.leader.election.enable".to_owned(),
            "true".to_owned(),
        )]);
        let config = base().with_overrides(&on).unwrap();
        assert!(config.unclean_leader_election);
        assert_eq!(config.describe()["unclean.leader.election.enable"], "true");
        let bad = BTreeMap::from([(
            "unclean.leader.election.enable".to_owned(),
            "maybe".to_owned(),
        )]);
        assert!(base().with_overrides(&bad).is_err());
    }

    #[test]
    fn overrides_reject_unknown_keys_naming_the_known_ones() {
        let overrides = BTreeMap::from([("retention.hours".to_owned(), "1".to_owned())]);
        let err = base().with_overrides(&overrides).unwrap_err().to_string();
        assert!(
            err.contains("retention.hours") && err.contains("retention.ms"),
            "{err}"
        );
    }

    #[test]
    fn overrides_reject_bad_values() {
        let overrides = BTreeMap::from([("segment.bytes".to_owned(), "ten".to_owned())]);
        let err = base().with_overrides(&overrides).unwrap_err().to_string();
        assert!(
            err.contains("segment.bytes") && err.contains("ten"),
            "{err}"
        );
    }
}
