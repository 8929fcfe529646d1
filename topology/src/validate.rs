//! From text to a validated [`Topology`]: parse, collect every problem, build typed values.
//!
//! ```text
//! text ──DeTable::parse──▶ spanned document ──serde (unknown keys peeled off one by one,
//!       each reported)──▶ RawFile ──check (every rule, problems collected)──▶ Topology
//! ```
//!
//! Unknown keys are removed from the document and deserialization retried, so a typo
//! does not hide the rest of the file's problems. Other serde errors (wrong type, missing
//! key) stop at that point: there is no value to check further.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{Problem, TopologyError};
use crate::model::{
    Acl, Broker, ClusterSettings, Deployment, Filter, Flow, FlushPolicy, Gossip, GossipKey,
    GossipProfile, Mirror, Region, Tls, TlsListeners, TlsMode, TopicDefaults,
};
use crate::schema::{RawCluster, RawFile, RawFilter, RawListeners, RawTopicDefaults, SizeLit};
use crate::{Topology, units};

type S<T> = Spanned<T>;

/// Collects problems and turns byte spans into 1-based line:column.
struct Report<'t> {
    text: &'t str,
    file: PathBuf,
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl<'t> Report<'t> {
    fn new(text: &'t str, file: &Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Report {
            text,
            file: file.to_path_buf(),
            line_starts,
            problems: Vec::new(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    fn add(&mut self, span: Range<usize>, message: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let line = self.line_of(offset);
        let line_start = self.line_starts[line - 1];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    fn into_error(mut self) -> TopologyError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        TopologyError::Invalid {
            problems: self.problems,
        }
    }
}

/// Parses and validates a deployment file's text; `origin` names the file in problems
/// and anchors relative paths.
pub(crate) fn parse_document(text: &str, origin: &Path) -> Result<Topology, TopologyError> {
    let mut report = Report::new(text, origin);
    let (mut doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for err in errors {
            report.add(
                err.span().unwrap_or(0..0),
                format!("TOML syntax error: {}", one_line(err.message())),
            );
        }
        return Err(report.into_error());
    }
    let raw = loop {
        match RawFile::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(raw) => break raw,
            Err(err) => {
                let message = one_line(err.message());
                if let Some(span) = err.span()
                    && message.starts_with("unknown field")
                    && remove_key(doc.get_mut(), &span)
                {
                    report.add(
                        span,
                        format!("{message}; remove the key or correct its spelling"),
                    );
                    continue;
                }
                let hint = if message.starts_with("missing field") {
                    "; add it (see examples/ for a complete file)"
                } else if message.starts_with("invalid type") {
                    "; write a value of the expected type"
                } else {
                    ""
                };
                report.add(err.span().unwrap_or(0..0), format!("{message}{hint}"));
                return Err(report.into_error());
            }
        }
    };
    let base_dir = std::path::absolute(origin.parent().unwrap_or(Path::new("")))
        .unwrap_or_else(|_| PathBuf::from("."));
    let topology = check(raw, base_dir, &mut report);
    if report.problems.is_empty() {
        Ok(topology)
    } else {
        Err(report.into_error())
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes the key whose span is `span` anywhere in the document; false if none matched.
fn remove_key(table: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let found = table
        .iter()
        .find(|(k, _)| k.span() == *span)
        .map(|(k, _)| k.clone());
    if let Some(key) = found {
        table.remove(&key);
        return true;
    }
    table
        .iter_mut()
        .any(|(_, value)| remove_in_value(value.get_mut(), span))
}

fn remove_in_value(value: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(table) => remove_key(table, span),
        DeValue::Array(items) => items
            .iter_mut()
            .any(|item| remove_in_value(item.get_mut(), span)),
        _ => false,
    }
}

/// Applies every rule to the raw file, reporting problems; the returned value is only
/// meaningful when no problem was reported.
fn check(raw: RawFile, base_dir: PathBuf, r: &mut Report<'_>) -> Topology {
    let deployment = check_deployment(&raw, r);
    let separator = deployment.remote_topic_separator.clone();
    let tls = check_tls(raw.tls.as_ref(), r);
    let gossip = check_gossip(&raw, r);
    let defaults_raw = raw.topic_defaults.as_ref();
    // A bad count is reported once; comparing its fallback value with broker counts
    // would only add a second, misleading message.
    let (topic_defaults, counts_valid) = check_topic_defaults(defaults_raw, r);
    let cluster = check_cluster(raw.cluster.as_ref(), r);

    if raw.regions.is_empty() {
        r.add(
            raw.deployment.span(),
            "the deployment has no regions; add at least one [[regions]] with its brokers",
        );
    }

    let mut regions = Vec::new();
    let mut region_names: HashMap<String, Range<usize>> = HashMap::new();
    let mut broker_ids: HashMap<u64, (String, Range<usize>)> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, (String, Range<usize>)> = HashMap::new();
    let mut data_dirs: HashMap<PathBuf, (String, Range<usize>)> = HashMap::new();

    for raw_region in &raw.regions {
        let raw_region = raw_region.get_ref();
        let region_name = raw_region.name.get_ref().clone();
        check_name(r, &raw_region.name, "region", Some(&separator));
        if let Some(first) = region_names.get(&region_name) {
            let line = r.line_of(first.start);
            r.add(
                raw_region.name.span(),
                format!(
                    "region {region_name:?} is defined twice (first at line {line}); rename or merge one of them"
                ),
            );
        } else {
            region_names.insert(region_name.clone(), raw_region.name.span());
        }
        if raw_region.brokers.is_empty() {
            r.add(
                raw_region.name.span(),
                format!(
                    "region {region_name:?} has no brokers; add at least one [[regions.brokers]] to it"
                ),
            );
        }

        let mut node_names: HashMap<String, Range<usize>> = HashMap::new();
        let mut check_node_name = |r: &mut Report<'_>, name: &S<String>| {
            check_name(r, name, "node", None);
            if let Some(first) = node_names.get(name.get_ref()) {
                let line = r.line_of(first.start);
                r.add(
                    name.span(),
                    format!(
                        "node name {:?} is used twice in region {region_name:?} (first at line {line}); brokers and mirrors share one namespace, rename one of them",
                        name.get_ref()
                    ),
                );
            } else {
                node_names.insert(name.get_ref().clone(), name.span());
            }
        };

        let mut brokers = Vec::new();
        for raw_broker in &raw_region.brokers {
            let b = raw_broker.get_ref();
            check_node_name(r, &b.name);
            let label = format!("{region_name}/{}", b.name.get_ref());
            let id = match u64::try_from(*b.id.get_ref()) {
                Ok(id) => {
                    if let Some((other, first)) = broker_ids.get(&id) {
                        let line = r.line_of(first.start);
                        r.add(
                            b.id.span(),
                            format!(
                                "broker id {id} of {label} is already used by {other} (line {line}); broker ids must be unique in the deployment, pick an unused id"
                            ),
                        );
                    } else {
                        broker_ids.insert(id, (label.clone(), b.id.span()));
                    }
                    id
                }
                Err(_) => {
                    r.add(
                        b.id.span(),
                        format!(
                            "broker id {} of {label} is negative; use a whole number of 0 or more",
                            b.id.get_ref()
                        ),
                    );
                    0
                }
            };
            let mut listen = |r: &mut Report<'_>, value: &S<String>, what: &str| {
                let addr = parse_addr(r, value, &format!("{label} {what}"))?;
                claim_address(
                    r,
                    &mut addresses,
                    addr,
                    format!("{label} {what}"),
                    value.span(),
                );
                Some(addr)
            };
            let grpc = listen(r, &b.grpc, "grpc");
            let kafka = b.kafka.as_ref().and_then(|k| listen(r, k, "kafka"));
            let gossip_addr = listen(r, &b.gossip, "gossip");
            let metrics = listen(r, &b.metrics, "metrics");
            let data_dir = PathBuf::from(b.data_dir.get_ref());
            if b.data_dir.get_ref().trim().is_empty() {
                r.add(
                    b.data_dir.span(),
                    format!("data_dir of {label} is empty; give each broker its own directory"),
                );
            } else {
                let resolved = base_dir.join(&data_dir);
                if let Some((other, first)) = data_dirs.get(&resolved) {
                    let line = r.line_of(first.start);
                    r.add(
                        b.data_dir.span(),
                        format!(
                            "data_dir {:?} of {label} is also used by {other} (line {line}); two brokers would corrupt each other's data, give each its own directory",
                            b.data_dir.get_ref()
                        ),
                    );
                } else {
                    data_dirs.insert(resolved, (label.clone(), b.data_dir.span()));
                }
            }
            let (cert, key) = check_cert_key(r, b.cert.as_ref(), b.key.as_ref(), &label, &b.name);
            brokers.push(Broker {
                name: b.name.get_ref().clone(),
                id,
                grpc: grpc.unwrap_or(PLACEHOLDER),
                kafka,
                gossip: gossip_addr.unwrap_or(PLACEHOLDER),
                metrics: metrics.unwrap_or(PLACEHOLDER),
                data_dir,
                cert,
                key,
            });
        }

        let mut mirrors = Vec::new();
        for raw_mirror in &raw_region.mirrors {
            let m = raw_mirror.get_ref();
            check_node_name(r, &m.name);
            let label = format!("{region_name}/{}", m.name.get_ref());
            let mut listen = |r: &mut Report<'_>, value: &S<String>, what: &str| {
                let addr = parse_addr(r, value, &format!("{label} {what}"))?;
                claim_address(
                    r,
                    &mut addresses,
                    addr,
                    format!("{label} {what}"),
                    value.span(),
                );
                Some(addr)
            };
            let gossip_addr = listen(r, &m.gossip, "gossip");
            let metrics = listen(r, &m.metrics, "metrics");
            let (cert, key) = check_cert_key(r, m.cert.as_ref(), m.key.as_ref(), &label, &m.name);
            mirrors.push(Mirror {
                name: m.name.get_ref().clone(),
                gossip: gossip_addr.unwrap_or(PLACEHOLDER),
                metrics: metrics.unwrap_or(PLACEHOLDER),
                cert,
                key,
            });
        }

        let controller_quorum = check_quorum(r, raw_region, &brokers, &mirrors);
        let gossip_seeds = match &raw_region.gossip_seeds {
            Some(seeds) => {
                if seeds.is_empty() {
                    r.add(
                        raw_region.name.span(),
                        format!(
                            "gossip_seeds of region {region_name:?} is empty; list at least one address or remove the key to use the region's nodes"
                        ),
                    );
                }
                seeds
                    .iter()
                    .filter_map(|s| {
                        parse_addr(r, s, &format!("gossip seed of region {region_name:?}"))
                    })
                    .collect()
            }
            None => brokers
                .iter()
                .map(|b| b.gossip)
                .chain(mirrors.iter().map(|m| m.gossip))
                .collect(),
        };
        regions.push(Region {
            name: region_name,
            controller_quorum,
            gossip_seeds,
            brokers,
            mirrors,
        });
    }

    if counts_valid {
        check_replication_fits(r, defaults_raw, &topic_defaults, &raw, &regions);
    }
    let flows = check_flows(r, &raw, &regions);
    let acls = check_acls(r, &raw);

    if tls.listeners.inter_region == TlsMode::Off && !flows.is_empty() {
        let span = raw
            .tls
            .as_ref()
            .and_then(|t| t.listeners.as_ref())
            .and_then(|l| l.inter_region.as_ref())
            .map_or(0..0, |s| s.span());
        r.add(
            span,
            format!(
                "tls.listeners.inter_region is \"off\" but {} flow(s) copy data between regions in plaintext; set it to \"required\" (or \"optional\" while migrating)",
                flows.len()
            ),
        );
    }

    Topology {
        deployment,
        tls,
        gossip,
        topic_defaults,
        cluster,
        regions,
        flows,
        acls,
        base_dir,
    }
}

/// Action names an ACL may grant; the certs crate's `Action` parses the same names.
pub const ACL_ACTIONS: [&str; 10] = [
    "produce",
    "consume",
    "create-topic",
    "delete-topic",
    "describe-topic",
    "replicate",
    "controller",
    "group-read",
    "group-write",
    "admin",
];

fn check_acls(r: &mut Report<'_>, raw: &RawFile) -> Vec<Acl> {
    let mut acls = Vec::new();
    for raw_acl in &raw.acls {
        let a = raw_acl.get_ref();
        let principal = a.principal.get_ref().clone();
        if principal != "*" && !principal.starts_with("meridian://") {
            r.add(
                a.principal.span(),
                format!(
                    "acl principal {principal:?} is neither \"*\" nor an identity like \"meridian://REGION/client/NAME\""
                ),
            );
        }
        let mut actions = Vec::new();
        for action in a.actions.get_ref() {
            if ACL_ACTIONS.contains(&action.get_ref().as_str()) {
                actions.push(action.get_ref().clone());
            } else {
                r.add(
                    action.span(),
                    format!(
                        "unknown acl action {:?}; use one of {}",
                        action.get_ref(),
                        ACL_ACTIONS.join(", ")
                    ),
                );
            }
        }
        if actions.is_empty() && a.actions.get_ref().is_empty() {
            r.add(
                a.actions.span(),
                "an acl needs at least one action".to_owned(),
            );
        }
        let (resource, resource_prefix) = match (&a.resource, &a.resource_prefix) {
            (Some(literal), None) => (Some(literal.get_ref().clone()), None),
            (None, Some(prefix)) if prefix.get_ref().is_empty() => {
                r.add(
                    prefix.span(),
                    "acl resource_prefix is empty; write resource = \"*\" to cover every name"
                        .to_owned(),
                );
                continue;
            }
            (None, Some(prefix)) => (None, Some(prefix.get_ref().clone())),
            _ => {
                r.add(
                    raw_acl.span(),
                    "an acl names exactly one of resource = \"NAME\" (\"*\" for all) or resource_prefix = \"PREFIX\"".to_owned(),
                );
                continue;
            }
        };
        let permission = match a.permission.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("allow") => "allow",
            Some("deny") => "deny",
            Some(other) => {
                let span = a.permission.as_ref().map_or(0..0, |p| p.span());
                r.add(
                    span,
                    format!("acl permission {other:?} must be \"allow\" or \"deny\""),
                );
                "allow"
            }
        };
        acls.push(Acl {
            principal,
            actions,
            resource,
            resource_prefix,
            permission: permission.to_owned(),
        });
    }
    acls
}

/// `[cluster]`: the session timeout and the lag allowance must be positive (a session
/// timeout under 100 ms would fence healthy brokers between two heartbeats); a zero
/// leader rebalance interval turns automatic rebalancing off.
fn check_cluster(raw: Option<&RawCluster>, r: &mut Report<'_>) -> ClusterSettings {
    let mut c = ClusterSettings::default();
    let Some(raw) = raw else { return c };
    if let Some(v) = &raw.session_timeout
        && let Some(d) = duration_field(r, v, "cluster.session_timeout")
    {
        if d < Duration::from_millis(100) {
            r.add(
                v.span(),
                format!("cluster.session_timeout = {:?} is below 100ms; brokers would be fenced between heartbeats, use a duration like \"6s\"", v.get_ref()),
            );
        }
        c.session_timeout = d;
    }
    if let Some(v) = &raw.replica_lag_max
        && let Some(d) = duration_field(r, v, "cluster.replica_lag_max")
    {
        if d.is_zero() {
            r.add(
                v.span(),
                "cluster.replica_lag_max is 0, which would drop every follower from the ISR at once; use a duration like \"10s\"",
            );
        }
        c.replica_lag_max = d;
    }
    if let Some(v) = &raw.leader_rebalance_interval
        && let Some(d) = duration_field(r, v, "cluster.leader_rebalance_interval")
    {
        c.leader_rebalance_interval = d;
    }
    c
}

/// Stands in for an address that failed to parse; never reaches a valid Topology.
const PLACEHOLDER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

fn check_deployment(raw: &RawFile, r: &mut Report<'_>) -> Deployment {
    let d = raw.deployment.get_ref();
    check_name(r, &d.name, "deployment", None);
    let separator = match &d.remote_topic_separator {
        Some(sep) => {
            let value = sep.get_ref();
            if value.is_empty() {
                r.add(
                    sep.span(),
                    "remote_topic_separator is empty; remote topics would run the region name into the topic name, use \".\" or another short string",
                );
            } else if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                r.add(
                    sep.span(),
                    format!(
                        "remote_topic_separator {value:?} has characters not allowed in topic names; use letters, digits, '.', '_' or '-'"
                    ),
                );
            }
            value.clone()
        }
        None => ".".to_owned(),
    };
    Deployment {
        name: d.name.get_ref().clone(),
        remote_topic_separator: separator,
    }
}

fn check_name(r: &mut Report<'_>, name: &S<String>, what: &str, separator: Option<&str>) {
    let value = name.get_ref();
    if value.is_empty() {
        r.add(name.span(), format!("{what} name is empty; give it a name"));
    } else if value.contains('/') {
        r.add(
            name.span(),
            format!(
                "{what} name {value:?} contains '/'; nodes are addressed as REGION/NAME, so rename it without '/'"
            ),
        );
    } else if value.chars().any(char::is_whitespace) {
        r.add(
            name.span(),
            format!("{what} name {value:?} contains whitespace; use '-' or '_' instead"),
        );
    } else if let Some(sep) = separator
        && !sep.is_empty()
        && value.contains(sep)
    {
        r.add(
            name.span(),
            format!(
                "{what} name {value:?} contains the remote-topic separator {sep:?}, which would make remote topic names ambiguous; rename the {what} or change deployment.remote_topic_separator"
            ),
        );
    }
}

fn parse_addr(r: &mut Report<'_>, value: &S<String>, what: &str) -> Option<SocketAddr> {
    match value.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            r.add(
                value.span(),
                format!(
                    "{what} address {:?} is not IP:PORT; write it like \"127.0.1.1:9090\" (host names are not accepted)",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

fn claim_address(
    r: &mut Report<'_>,
    claimed: &mut HashMap<SocketAddr, (String, Range<usize>)>,
    addr: SocketAddr,
    label: String,
    span: Range<usize>,
) {
    if let Some((other, first)) = claimed.get(&addr) {
        let line = r.line_of(first.start);
        r.add(
            span,
            format!(
                "address {addr} of {label} is already used by {other} (line {line}); every listener needs its own address, change the port or IP"
            ),
        );
    } else {
        claimed.insert(addr, (label, span));
    }
}

fn check_cert_key(
    r: &mut Report<'_>,
    cert: Option<&S<String>>,
    key: Option<&S<String>>,
    label: &str,
    name: &S<String>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    match (cert, key) {
        (Some(_), None) | (None, Some(_)) => {
            let span = cert.or(key).map_or(name.span(), |s| s.span());
            r.add(
                span,
                format!(
                    "{label} sets only one of cert and key; set both, or neither to use the tls.dir convention"
                ),
            );
        }
        _ => {}
    }
    (
        cert.map(|c| PathBuf::from(c.get_ref())),
        key.map(|k| PathBuf::from(k.get_ref())),
    )
}

fn check_tls(raw: Option<&crate::schema::RawTls>, r: &mut Report<'_>) -> Tls {
    let mut tls = Tls::default();
    let Some(raw) = raw else { return tls };
    if let Some(dir) = &raw.dir {
        if dir.get_ref().trim().is_empty() {
            r.add(
                dir.span(),
                "tls.dir is empty; name the TLS directory (default \"tls\") or remove the key",
            );
        }
        tls.dir = PathBuf::from(dir.get_ref());
    }
    if let Some(ca) = &raw.ca {
        if ca.get_ref().trim().is_empty() {
            r.add(
                ca.span(),
                "tls.ca is empty; give the CA certificate's path or remove the key to use <tls.dir>/ca.pem",
            );
        }
        tls.ca = Some(PathBuf::from(ca.get_ref()));
    }
    if let Some(l) = &raw.listeners {
        let RawListeners {
            client,
            inter_broker,
            inter_region,
            kafka,
            metrics,
        } = l;
        let defaults = TlsListeners::default();
        tls.listeners = TlsListeners {
            client: tls_mode(r, client.as_ref(), "client", defaults.client),
            inter_broker: tls_mode(
                r,
                inter_broker.as_ref(),
                "inter_broker",
                defaults.inter_broker,
            ),
            inter_region: tls_mode(
                r,
                inter_region.as_ref(),
                "inter_region",
                defaults.inter_region,
            ),
            kafka: tls_mode(r, kafka.as_ref(), "kafka", defaults.kafka),
            metrics: tls_mode(r, metrics.as_ref(), "metrics", defaults.metrics),
        };
    }
    tls
}

fn tls_mode(
    r: &mut Report<'_>,
    value: Option<&S<String>>,
    which: &str,
    default: TlsMode,
) -> TlsMode {
    let Some(value) = value else { return default };
    match value.get_ref().as_str() {
        "required" => TlsMode::Required,
        "optional" => TlsMode::Optional,
        "off" => TlsMode::Off,
        other => {
            r.add(
                value.span(),
                format!(
                    "tls.listeners.{which} = {other:?} is not a TLS mode; write \"required\", \"optional\" or \"off\""
                ),
            );
            default
        }
    }
}

fn check_gossip(raw: &RawFile, r: &mut Report<'_>) -> Gossip {
    let g = raw.gossip.get_ref();
    if g.keyring.get_ref().is_empty() {
        r.add(
            g.keyring.span(),
            "gossip.keyring is empty; add at least one key: 32 random bytes in base64, e.g. from `openssl rand -base64 32`",
        );
    }
    let mut keyring = Vec::new();
    for (i, key) in g.keyring.get_ref().iter().enumerate() {
        match GossipKey::from_base64(key.get_ref()) {
            Ok(k) => keyring.push(k),
            Err(why) => r.add(
                key.span(),
                format!(
                    "gossip.keyring[{i}] is {why}; each key must be 32 random bytes in base64, e.g. from `openssl rand -base64 32`"
                ),
            ),
        }
    }
    let profile = match g.profile.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "lan")) => GossipProfile::Lan,
        Some((_, "wan")) => GossipProfile::Wan,
        Some((p, other)) => {
            r.add(
                p.span(),
                format!(
                    "gossip.profile = {other:?} is not a profile; write \"lan\" (one data centre) or \"wan\" (across regions)"
                ),
            );
            GossipProfile::Lan
        }
    };
    Gossip { keyring, profile }
}

fn positive<T: TryFrom<i64>>(
    r: &mut Report<'_>,
    value: Option<&S<i64>>,
    field: &str,
    default: T,
    fix: &str,
) -> T {
    let Some(value) = value else { return default };
    let n = *value.get_ref();
    if n <= 0 {
        r.add(value.span(), format!("{field} = {n} is not allowed; {fix}"));
        return default;
    }
    match T::try_from(n) {
        Ok(v) => v,
        Err(_) => {
            r.add(
                value.span(),
                format!("{field} = {n} is too large; use a smaller value"),
            );
            default
        }
    }
}

fn duration_field(r: &mut Report<'_>, value: &S<String>, field: &str) -> Option<Duration> {
    match units::parse_duration(value.get_ref()) {
        Ok(d) => Some(d),
        Err(err) => {
            r.add(value.span(), format!("{field}: {err}"));
            None
        }
    }
}

fn size_field(r: &mut Report<'_>, value: &S<SizeLit>, field: &str) -> Option<u64> {
    let parsed = match value.get_ref() {
        SizeLit::Bytes(n) => u64::try_from(*n).map_err(|_| {
            format!("{field} = {n} is negative; write a size like \"64KiB\" or a number of bytes")
        }),
        SizeLit::Text(text) => units::parse_size(text).map_err(|err| format!("{field}: {err}")),
    };
    parsed.map_err(|msg| r.add(value.span(), msg)).ok()
}

/// Returns the defaults and whether the three counts (partitions, replication factor,
/// min ISR) were valid.
fn check_topic_defaults(
    raw: Option<&RawTopicDefaults>,
    r: &mut Report<'_>,
) -> (TopicDefaults, bool) {
    let mut d = TopicDefaults::default();
    let Some(t) = raw else { return (d, true) };
    let before = r.problems.len();
    d.partitions = positive(
        r,
        t.partitions.as_ref(),
        "topic_defaults.partitions",
        d.partitions,
        "a topic needs at least one partition, set partitions to 1 or more",
    );
    d.replication_factor = positive(
        r,
        t.replication_factor.as_ref(),
        "topic_defaults.replication_factor",
        d.replication_factor,
        "every partition needs at least one copy, set replication_factor to 1 or more (3 for production)",
    );
    d.min_insync_replicas = positive(
        r,
        t.min_insync_replicas.as_ref(),
        "topic_defaults.min_insync_replicas",
        d.min_insync_replicas,
        "a write needs at least the leader in sync, set min_insync_replicas to 1 or more",
    );
    let counts_valid = r.problems.len() == before;
    if counts_valid && d.min_insync_replicas > d.replication_factor {
        let span = t
            .min_insync_replicas
            .as_ref()
            .or(t.replication_factor.as_ref())
            .map_or(0..0, |s| s.span());
        r.add(
            span,
            format!(
                "topic_defaults.min_insync_replicas = {} is above replication_factor = {}, so no write could ever be acknowledged; lower min_insync_replicas to {} or less",
                d.min_insync_replicas, d.replication_factor, d.replication_factor
            ),
        );
    }
    if let Some(v) = &t.retention_time {
        if v.get_ref() == "forever" {
            d.retention_time = None;
        } else if let Some(x) =
            duration_field(r, v, "topic_defaults.retention_time (or \"forever\")")
        {
            if x.is_zero() {
                r.add(
                    v.span(),
                    "topic_defaults.retention_time is 0, which would delete records as soon as they are written; use a positive duration like \"7d\" or \"forever\"",
                );
            }
            d.retention_time = Some(x);
        }
    }
    if let Some(v) = &t.retention_bytes {
        if matches!(v.get_ref(), SizeLit::Text(s) if s == "unlimited") {
            d.retention_bytes = None;
        } else if let Some(x) =
            size_field(r, v, "topic_defaults.retention_bytes (or \"unlimited\")")
        {
            d.retention_bytes = Some(x);
        }
    }
    if let Some(v) = &t.segment_bytes
        && let Some(x) = size_field(r, v, "topic_defaults.segment_bytes")
    {
        if x == 0 {
            r.add(v.span(), "topic_defaults.segment_bytes is 0; segments need room for at least one batch, use a size like \"1GiB\"");
        }
        d.segment_bytes = x;
    }
    if let Some(v) = &t.segment_age
        && let Some(x) = duration_field(r, v, "topic_defaults.segment_age")
    {
        if x.is_zero() {
            r.add(
                v.span(),
                "topic_defaults.segment_age is 0, so every batch would roll a new segment; use a positive duration like \"7d\"",
            );
        }
        d.segment_age = x;
    }
    if let Some(v) = &t.flush {
        match FlushPolicy::parse(v.get_ref()) {
            Ok(FlushPolicy::Interval(zero)) if zero.is_zero() => r.add(
                v.span(),
                "topic_defaults.flush interval is 0; write \"batch\" to fsync every batch, or a positive interval like \"100ms\"",
            ),
            Ok(policy) => d.flush = policy,
            Err(msg) => r.add(v.span(), format!("topic_defaults.{msg}")),
        }
    }
    if let Some(v) = &t.max_message_bytes
        && let Some(x) = size_field(r, v, "topic_defaults.max_message_bytes")
    {
        if x == 0 {
            r.add(v.span(), "topic_defaults.max_message_bytes is 0; no record would fit, use a size like \"1MiB\"");
        }
        d.max_message_bytes = x;
    }
    if d.max_message_bytes > d.segment_bytes {
        let span = t
            .max_message_bytes
            .as_ref()
            .or(t.segment_bytes.as_ref())
            .map_or(0..0, |s| s.span());
        r.add(
            span,
            format!(
                "topic_defaults.max_message_bytes ({}) is above segment_bytes ({}), so the largest batch would not fit in a segment; lower max_message_bytes or raise segment_bytes",
                units::format_size(d.max_message_bytes),
                units::format_size(d.segment_bytes)
            ),
        );
    }
    if let Some(v) = t.auto_create_topics {
        d.auto_create_topics = v;
    }
    (d, counts_valid)
}

fn check_quorum(
    r: &mut Report<'_>,
    region: &crate::schema::RawRegion,
    brokers: &[Broker],
    mirrors: &[Mirror],
) -> Vec<String> {
    let region_name = region.name.get_ref();
    let broker_names: Vec<&str> = brokers.iter().map(|b| b.name.as_str()).collect();
    let Some(quorum) = &region.controller_quorum else {
        if !brokers.is_empty() && brokers.len().is_multiple_of(2) {
            r.add(
                region.name.span(),
                format!(
                    "region {region_name:?} has {} brokers and no controller_quorum, so all of them would vote; use an odd number: set controller_quorum to {} of them",
                    brokers.len(),
                    brokers.len() - 1
                ),
            );
        }
        return broker_names.iter().map(|s| (*s).to_owned()).collect();
    };
    let members = quorum.get_ref();
    if members.is_empty() {
        r.add(
            quorum.span(),
            format!(
                "controller_quorum of region {region_name:?} is empty; list an odd number (1, 3 or 5) of its brokers, or remove the key to use all of them"
            ),
        );
    } else if members.len().is_multiple_of(2) {
        r.add(
            quorum.span(),
            format!(
                "controller_quorum of region {region_name:?} has {} members; use an odd number (an even quorum tolerates no more failures than one member fewer)",
                members.len()
            ),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for member in members {
        let name = member.get_ref().as_str();
        if seen.contains(&name) {
            r.add(
                member.span(),
                format!("controller_quorum of region {region_name:?} lists {name:?} twice; list each broker once"),
            );
        } else if !broker_names.contains(&name) {
            let what = if mirrors.iter().any(|m| m.name == name) {
                "is a mirror worker, not a broker"
            } else {
                "is not a broker of the region"
            };
            r.add(
                member.span(),
                format!(
                    "controller_quorum of region {region_name:?} names {name:?}, which {what}; use broker names: {}",
                    broker_names.join(", ")
                ),
            );
        }
        seen.push(name);
    }
    members.iter().map(|m| m.get_ref().clone()).collect()
}

fn check_replication_fits(
    r: &mut Report<'_>,
    raw_defaults: Option<&RawTopicDefaults>,
    defaults: &TopicDefaults,
    raw: &RawFile,
    regions: &[Region],
) {
    let smallest = regions
        .iter()
        .zip(&raw.regions)
        .filter(|(region, _)| !region.brokers.is_empty())
        .min_by_key(|(region, _)| region.brokers.len());
    let Some((region, raw_region)) = smallest else {
        return;
    };
    let rf = usize::from(defaults.replication_factor);
    if rf > region.brokers.len() {
        let (span, written) = match raw_defaults.and_then(|t| t.replication_factor.as_ref()) {
            Some(v) => (v.span(), ""),
            None => (raw_region.get_ref().name.span(), " (the default)"),
        };
        r.add(
            span,
            format!(
                "topic_defaults.replication_factor = {rf}{written} is above the {} broker(s) of region {:?}; lower replication_factor to {} or add brokers to {:?}",
                region.brokers.len(),
                region.name,
                region.brokers.len(),
                region.name
            ),
        );
    }
}

fn check_flows(r: &mut Report<'_>, raw: &RawFile, regions: &[Region]) -> Vec<Flow> {
    let mut names: Vec<&str> = regions.iter().map(|g| g.name.as_str()).collect();
    names.dedup();
    let region_list = names.join(", ");
    let mut seen: HashMap<(String, String), Range<usize>> = HashMap::new();
    let mut flows = Vec::new();
    for raw_flow in &raw.flows {
        let f = raw_flow.get_ref();
        let source = f.source.get_ref().clone();
        let target = f.target.get_ref().clone();
        let mut ends_exist = true;
        for (end, value) in [("source", &f.source), ("target", &f.target)] {
            if !regions.iter().any(|g| &g.name == value.get_ref()) {
                ends_exist = false;
                r.add(
                    value.span(),
                    format!(
                        "flow {end} region {:?} does not exist; use one of the regions: {region_list}",
                        value.get_ref()
                    ),
                );
            }
        }
        if source == target {
            r.add(
                f.target.span(),
                format!(
                    "flow from {source:?} to itself; a flow copies between two different regions, change its source or target"
                ),
            );
        } else if let Some(first) = seen.get(&(source.clone(), target.clone())) {
            let line = r.line_of(first.start);
            r.add(
                raw_flow.span(),
                format!(
                    "flow {source} -> {target} is defined twice (first at line {line}); merge them into one [[flows]]"
                ),
            );
        } else {
            seen.insert((source.clone(), target.clone()), raw_flow.span());
        }
        let enabled = f.enabled.unwrap_or(true);
        if enabled
            && ends_exist
            && source != target
            && regions
                .iter()
                .any(|g| g.name == target && g.mirrors.is_empty())
        {
            r.add(
                f.target.span(),
                format!(
                    "flow {source} -> {target}: region {target:?} has no mirror worker, so nobody would serve this flow; add a [[regions.mirrors]] to region {target:?} (or set enabled = false)"
                ),
            );
        }
        let topics = check_filter(r, f.topics.as_ref(), "topics");
        let groups = check_filter(r, f.groups.as_ref(), "groups");
        let checkpoint_interval = match &f.checkpoint_interval {
            Some(v) => match duration_field(r, v, "checkpoint_interval") {
                Some(d) if d.is_zero() => {
                    r.add(
                        v.span(),
                        "checkpoint_interval is 0; use a positive interval like \"1s\"",
                    );
                    d
                }
                Some(d) => d,
                None => Duration::from_secs(1),
            },
            None => Duration::from_secs(1),
        };
        flows.push(Flow {
            source,
            target,
            enabled,
            topics,
            groups,
            sync_group_offsets: f.sync_group_offsets.unwrap_or(true),
            checkpoint_interval,
            delete_remote_topics: f.delete_remote_topics.unwrap_or(false),
        });
    }
    flows
}

fn check_filter(r: &mut Report<'_>, raw: Option<&RawFilter>, which: &str) -> Filter {
    let mut filter = Filter::default();
    let Some(raw) = raw else { return filter };
    for (part, list, slot) in [
        ("include", &raw.include, &mut filter.include),
        ("exclude", &raw.exclude, &mut filter.exclude),
    ] {
        let Some(list) = list else { continue };
        *slot = Vec::new();
        for pattern in list {
            if let Err(err) = regex::Regex::new(pattern.get_ref()) {
                let text = err.to_string();
                let reason = text
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or(text.lines().next().unwrap_or("invalid"));
                r.add(
                    pattern.span(),
                    format!(
                        "{which}.{part} regex {:?} is invalid: {reason}; fix the pattern (Rust regex syntax)",
                        pattern.get_ref()
                    ),
                );
            }
            slot.push(pattern.get_ref().clone());
        }
    }
    filter
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
