//! The validated deployment: typed values, defaults filled in.
//!
//! Its serde form *is* the file format (durations and sizes as human strings), so
//! [`crate::Topology::to_toml`] writes a file that [`crate::parse`] reads back equal.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units;

/// `[deployment]`: what identifies the deployment and how remote topics are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Deployment name; shows up in logs and metrics so several deployments can coexist.
    pub name: String,
    /// A mirrored topic is named `<source region><separator><topic>` in the target region,
    /// so a record's origin is visible and flows both ways cannot loop.
    pub remote_topic_separator: String,
}

/// Per-listener TLS mode: lets operators phase TLS in listener by listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Only TLS connections are accepted.
    Required,
    /// TLS and plaintext are both accepted (migration, local tools).
    Optional,
    /// Plaintext only.
    Off,
}

impl TlsMode {
    /// The spelling used in the file, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Required => "required",
            TlsMode::Optional => "optional",
            TlsMode::Off => "off",
        }
    }
}

/// `[tls.listeners]`: the TLS mode of each kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListeners {
    /// gRPC client listener (producers, consumers, admin tools).
    pub client: TlsMode,
    /// Broker-to-broker traffic inside a region (replication, controller).
    pub inter_broker: TlsMode,
    /// Mirror workers talking to a remote region; crosses untrusted networks.
    pub inter_region: TlsMode,
    /// Kafka wire-protocol listener.
    pub kafka: TlsMode,
    /// Prometheus `/metrics` listener.
    pub metrics: TlsMode,
}

impl Default for TlsListeners {
    fn default() -> Self {
        TlsListeners {
            client: TlsMode::Required,
            inter_broker: TlsMode::Required,
            inter_region: TlsMode::Required,
            kafka: TlsMode::Optional,
            metrics: TlsMode::Off,
        }
    }
}

/// `[tls]`: where TLS material lives, and the listener modes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Directory convention: `<dir>/ca.pem`, `<dir>/<region>/<node>/{cert,key}.pem`, so
    /// `meridian certs` and every node agree on paths without listing them. Relative to
    /// the deployment file's directory. Default `"tls"`.
    pub dir: PathBuf,
    /// Explicit CA path, overriding `<dir>/ca.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Per-listener modes.
    pub listeners: TlsListeners,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            dir: PathBuf::from("tls"),
            ca: None,
            listeners: TlsListeners::default(),
        }
    }
}

/// Gossip timing presets: one region's LAN and cross-region links need different
/// probe intervals and suspicion timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GossipProfile {
    /// Low latency, fast failure detection.
    Lan,
    /// Cross-region latency, slower and more tolerant failure detection.
    Wan,
}

/// A 32-byte gossip encryption key (written as base64 in the file).
///
/// Its `Debug` hides the bytes so keys never end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(pub [u8; 32]);

impl GossipKey {
    /// Decodes a base64 key; exists so the CLI and tests share the file's rule.
    pub fn from_base64(text: &str) -> Result<GossipKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|err| format!("not valid base64 ({err})"))?;
        let len = bytes.len();
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("decodes to {len} bytes, not 32"))?;
        Ok(GossipKey(array))
    }

    /// The base64 form written in the file.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

impl Serialize for GossipKey {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for GossipKey {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        GossipKey::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// `[gossip]`: membership encryption and timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gossip {
    /// First key encrypts what this node sends; all keys are accepted on receipt, so keys
    /// can be rotated without a flag day.
    pub keyring: Vec<GossipKey>,
    /// Timing preset.
    pub profile: GossipProfile,
}

/// When a broker fsyncs its partition log: the durability/throughput trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync every batch before acknowledging it (group commit). Written `"batch"`.
    EveryBatch,
    /// fsync at most this often; acknowledged records may rest only in page cache until then.
    Interval(Duration),
    /// Never fsync; durability comes from replication alone. Written `"none"`.
    Never,
}

impl FlushPolicy {
    /// Parses `"batch"`, `"none"` or a duration.
    pub fn parse(text: &str) -> Result<FlushPolicy, String> {
        match text {
            "batch" => Ok(FlushPolicy::EveryBatch),
            "none" => Ok(FlushPolicy::Never),
            other => units::parse_duration(other)
                .map(FlushPolicy::Interval)
                .map_err(|_| {
                    format!(
                        "flush = {other:?} is not a flush policy; write \"batch\" (fsync every batch), \"none\" (rely on replication) or an interval like \"100ms\""
                    )
                }),
        }
    }

    fn render(&self) -> String {
        match self {
            FlushPolicy::EveryBatch => "batch".to_owned(),
            FlushPolicy::Never => "none".to_owned(),
            FlushPolicy::Interval(d) => units::format_duration(*d),
        }
    }
}

impl Serialize for FlushPolicy {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.render())
    }
}

impl<'de> Deserialize<'de> for FlushPolicy {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        FlushPolicy::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `[topic_defaults]`: what a topic gets when its creator does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    /// Partitions per topic.
    pub partitions: u32,
    /// Copies of each partition inside a region.
    pub replication_factor: u16,
    /// In-sync copies required before a write is acknowledged.
    pub min_insync_replicas: u16,
    /// Delete segments older than this; `None` keeps them forever.
    #[serde(with = "units::serde_retention_time")]
    pub retention_time: Option<Duration>,
    /// Delete oldest segments beyond this many bytes per partition; `None`: unlimited.
    #[serde(with = "units::serde_retention_bytes")]
    pub retention_bytes: Option<u64>,
    /// Roll a segment when it reaches this size.
    #[serde(with = "units::serde_size")]
    pub segment_bytes: u64,
    /// Roll a segment when it is this old, so time retention can delete it.
    #[serde(with = "units::serde_duration")]
    pub segment_age: Duration,
    /// fsync policy.
    pub flush: FlushPolicy,
    /// Largest record batch accepted.
    #[serde(with = "units::serde_size")]
    pub max_message_bytes: u64,
    /// Create a topic on first produce/fetch; off by default so typos do not make topics.
    pub auto_create_topics: bool,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 3,
            replication_factor: 3,
            min_insync_replicas: 2,
            retention_time: Some(Duration::from_secs(7 * 86_400)),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 86_400),
            flush: FlushPolicy::EveryBatch,
            max_message_bytes: 1 << 20,
            auto_create_topics: false,
        }
    }
}

/// `[cluster]`: failure-detection timing inside every region. Production wants the
/// defaults; tests shorten them so a failover fits in a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// A broker silent this long is fenced and its leaderships move to the ISR.
    #[serde(with = "units::serde_duration")]
    pub session_timeout: Duration,
    /// A follower that has not caught up with the leader for this long leaves the ISR,
    /// so acks=all writes stop waiting for it.
    #[serde(with = "units::serde_duration")]
    pub replica_lag_max: Duration,
    /// How often the active controller moves leadership back to preferred replicas
    /// (the first replica of each partition) once they are in sync again, as Kafka's
    /// `auto.leader.rebalance.enable`: after a broker returns, load spreads again
    /// without an operator. Zero turns it off (`meridian topic elect-leaders` still
    /// works).
    #[serde(
        with = "units::serde_duration",
        default = "default_leader_rebalance_interval"
    )]
    pub leader_rebalance_interval: Duration,
}

fn default_leader_rebalance_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            session_timeout: Duration::from_secs(6),
            replica_lag_max: Duration::from_secs(10),
            leader_rebalance_interval: default_leader_rebalance_interval(),
        }
    }
}

/// A broker: stores partitions and serves clients in its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// Name, unique in its region (shared namespace with mirrors).
    pub name: String,
    /// Node id, unique in the deployment (Raft and replication identify brokers by it).
    pub id: u64,
    /// Advertised gRPC address.
    pub grpc: SocketAddr,
    /// Kafka wire-protocol address; no Kafka listener when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<SocketAddr>,
    /// Gossip (UDP) address.
    pub gossip: SocketAddr,
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
    /// Where the broker keeps its data, as written (relative to the file's directory).
    pub data_dir: PathBuf,
    /// Certificate path overriding the `tls.dir` convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Key path overriding the `tls.dir` convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// A mirror worker: copies records into its own region from flows' source regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Name, unique in its region (shared namespace with brokers).
    pub name: String,
    /// Gossip (UDP) address.
    pub gossip: SocketAddr,
    /// Prometheus metrics address.
    pub metrics: SocketAddr,
    /// Certificate path overriding the `tls.dir` convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Key path overriding the `tls.dir` convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// A region: one failure domain with its own brokers, controller quorum and mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region name, unique; used as the remote-topic prefix.
    pub name: String,
    /// Brokers that vote in the region's controller (an odd number).
    pub controller_quorum: Vec<String>,
    /// Where a node joining the region's gossip starts.
    pub gossip_seeds: Vec<SocketAddr>,
    /// The region's brokers.
    pub brokers: Vec<Broker>,
    /// Mirror workers running in this region, serving flows that target it.
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

/// Include/exclude regexes choosing topic or group names; a name is selected when an
/// include matches and no exclude does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Regexes (unanchored unless the user anchors them).
    pub include: Vec<String>,
    /// Regexes that win over `include`.
    pub exclude: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            include: vec![".*".to_owned()],
            exclude: Vec::new(),
        }
    }
}

impl Filter {
    /// Compiles the filter once, for matching many names. Regexes were checked by
    /// validation, so this fails only for a hand-built `Filter`.
    pub fn compile(&self) -> Result<CompiledFilter, regex::Error> {
        Ok(CompiledFilter {
            include: regex::RegexSet::new(&self.include)?,
            exclude: regex::RegexSet::new(&self.exclude)?,
        })
    }
}

/// A [`Filter`] ready to match names quickly.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    include: regex::RegexSet,
    exclude: regex::RegexSet,
}

impl CompiledFilter {
    /// True when an include regex matches and no exclude regex does.
    pub fn is_match(&self, name: &str) -> bool {
        self.include.is_match(name) && !self.exclude.is_match(name)
    }
}

/// A mirror flow: records of selected topics copied from `source` into `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Region records come from.
    pub source: String,
    /// Region records go to (its mirror workers serve the flow).
    pub target: String,
    /// A disabled flow stays in the file (and keeps its checkpoints) but copies nothing.
    pub enabled: bool,
    /// Which topics to copy.
    pub topics: Filter,
    /// Which consumer groups' offsets to translate.
    pub groups: Filter,
    /// Translate committed group offsets so consumers can fail over.
    pub sync_group_offsets: bool,
    /// How often offset checkpoints are written.
    #[serde(with = "units::serde_duration")]
    pub checkpoint_interval: Duration,
    /// Delete a remote topic when its source topic is deleted. Off by default, as in
    /// MirrorMaker 2: a deleted source is reported, and the copy kept for consumers
    /// still reading it.
    #[serde(default)]
    pub delete_remote_topics: bool,
}

/// `[[acls]]`: one access rule for client identities, as a Kafka ACL. Brokers and
/// mirror workers are authorized by their role; clients and admins' data access by these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// `meridian://REGION/ROLE/NAME`, or `*` for every identity.
    pub principal: String,
    /// Actions covered (`produce`, `consume`, `create-topic`, `group-read`, ...).
    pub actions: Vec<String>,
    /// A topic or group name (`*` for all); exactly one of this and `resource_prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A topic or group name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_prefix: Option<String>,
    /// `allow` (the default) or `deny`; a matching deny wins.
    pub permission: String,
}

impl Acl {
    /// Whether the rule allows (else it denies).
    pub fn allows(&self) -> bool {
        self.permission != "deny"
    }
}
