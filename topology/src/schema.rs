//! The deployment file exactly as written: serde types that keep every value's span.
//!
//! Nothing here is checked beyond TOML types and unknown keys (`deny_unknown_fields`).
//! Values whose checks need positions (names, addresses, durations, sizes, enums written
//! as strings) stay `Spanned` strings so `validate` can report *every* problem with its
//! line and column instead of stopping at the first serde error.

use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

/// A size as written: a string with a unit, or a bare integer of bytes.
#[derive(Debug, Clone)]
pub(crate) enum SizeLit {
    /// `segment_bytes = 1048576`
    Bytes(i64),
    /// `segment_bytes = "1MiB"`
    Text(String),
}

impl<'de> Deserialize<'de> for SizeLit {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeLit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size like \"64KiB\" or a number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeLit, E> {
                Ok(SizeLit::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeLit, E> {
                i64::try_from(v)
                    .map(SizeLit::Bytes)
                    .map_err(|_| E::custom("size does not fit in 63 bits"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeLit, E> {
                Ok(SizeLit::Text(v.to_owned()))
            }
        }
        de.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub deployment: S<RawDeployment>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    pub gossip: S<RawGossip>,
    #[serde(default)]
    pub topic_defaults: Option<RawTopicDefaults>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub regions: Vec<S<RawRegion>>,
    #[serde(default)]
    pub flows: Vec<S<RawFlow>>,
    #[serde(default)]
    pub acls: Vec<S<RawAcl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcl {
    pub principal: S<String>,
    pub actions: S<Vec<S<String>>>,
    pub resource: Option<S<String>>,
    pub resource_prefix: Option<S<String>>,
    pub permission: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeployment {
    pub name: S<String>,
    pub remote_topic_separator: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub dir: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub listeners: Option<RawListeners>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListeners {
    pub client: Option<S<String>>,
    pub inter_broker: Option<S<String>>,
    pub inter_region: Option<S<String>>,
    pub kafka: Option<S<String>>,
    pub metrics: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGossip {
    pub keyring: S<Vec<S<String>>>,
    pub profile: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopicDefaults {
    pub partitions: Option<S<i64>>,
    pub replication_factor: Option<S<i64>>,
    pub min_insync_replicas: Option<S<i64>>,
    pub retention_time: Option<S<String>>,
    pub retention_bytes: Option<S<SizeLit>>,
    pub segment_bytes: Option<S<SizeLit>>,
    pub segment_age: Option<S<String>>,
    pub flush: Option<S<String>>,
    pub max_message_bytes: Option<S<SizeLit>>,
    pub auto_create_topics: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub session_timeout: Option<S<String>>,
    pub replica_lag_max: Option<S<String>>,
    pub leader_rebalance_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub name: S<String>,
    pub controller_quorum: Option<S<Vec<S<String>>>>,
    pub gossip_seeds: Option<Vec<S<String>>>,
    #[serde(default)]
    pub brokers: Vec<S<RawBroker>>,
    #[serde(default)]
    pub mirrors: Vec<S<RawMirror>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBroker {
    pub name: S<String>,
    pub id: S<i64>,
    pub grpc: S<String>,
    pub kafka: Option<S<String>>,
    pub gossip: S<String>,
    pub metrics: S<String>,
    pub data_dir: S<String>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirror {
    pub name: S<String>,
    pub gossip: S<String>,
    pub metrics: S<String>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlow {
    pub source: S<String>,
    pub target: S<String>,
    pub enabled: Option<bool>,
    pub topics: Option<RawFilter>,
    pub groups: Option<RawFilter>,
    pub sync_group_offsets: Option<bool>,
    pub checkpoint_interval: Option<S<String>>,
    pub delete_remote_topics: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    pub include: Option<Vec<S<String>>>,
    pub exclude: Option<Vec<S<String>>>,
}
