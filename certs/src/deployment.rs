//! `meridian certs issue-deployment`: every node's certificate in one go, laid out where
//! the deployment file expects it.
//!
//! ```text
//!   OUT/ca.pem                      the CA certificate
//!   OUT/REGION/BROKER/              meridian://REGION/broker/BROKER, IP SANs of its listeners
//!   OUT/REGION/MIRROR/              the mirror's identity for its first source region
//!   OUT/REGION/MIRROR/from-SOURCE/  meridian://SOURCE/mirror/REGION-MIRROR, one per source
//!   OUT/clients/admin/              meridian://FIRST_REGION/admin/operator
//! ```
//!
//! A mirror certificate names the region whose data it carries (the authorizer ties
//! `SOURCE.<topic>` topics to it), so a worker serving flows from several regions holds
//! one certificate per source region and uses each for that flow's connections.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::{Ca, Identity, IssueRequest, Result, Role};

/// One certificate written by [`issue_deployment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNode {
    /// The identity the certificate grants.
    pub identity: Identity,
    /// The TLS directory it was written to (ca.pem, cert.pem, key.pem).
    pub dir: PathBuf,
}

/// The directory of a mirror worker's certificate for flows from `source`.
pub fn mirror_source_dir(node_dir: &Path, source: &str) -> PathBuf {
    node_dir.join(format!("from-{source}"))
}

/// Issues a certificate for every broker and mirror worker of `topology` (and an admin
/// client) under `out`, valid for `days`.
pub fn issue_deployment(
    topology: &topology::Topology,
    ca: &Ca,
    out: &Path,
    days: u32,
) -> Result<Vec<IssuedNode>> {
    let mut issued = Vec::new();
    std::fs::create_dir_all(out).map_err(|e| crate::CertsError::Io {
        path: out.to_owned(),
        source: e,
    })?;
    crate::files::write_atomic(
        &out.join(crate::CA_CERT_FILE),
        ca.cert_pem().as_bytes(),
        0o644,
    )?;
    let mut issue = |identity: Identity, ips: Vec<IpAddr>, dir: PathBuf| -> Result<()> {
        let mut req = IssueRequest::new(identity.clone());
        req.dns = vec!["localhost".to_owned()];
        req.ips = ips;
        req.days = days;
        ca.issue(&req)?.save(&dir)?;
        issued.push(IssuedNode { identity, dir });
        Ok(())
    };
    for region in topology.regions() {
        for broker in &region.brokers {
            let mut ips: BTreeSet<IpAddr> = [broker.grpc.ip()].into();
            ips.extend(broker.kafka.map(|k| k.ip()));
            ips.insert(IpAddr::from([127, 0, 0, 1]));
            issue(
                Identity::new(region.name.clone(), Role::Broker, broker.name.clone())?,
                ips.into_iter().collect(),
                out.join(&region.name).join(&broker.name),
            )?;
        }
        let sources: BTreeSet<&str> = topology
            .flows()
            .iter()
            .filter(|f| f.target == region.name)
            .map(|f| f.source.as_str())
            .collect();
        for mirror in &region.mirrors {
            let node_dir = out.join(&region.name).join(&mirror.name);
            let name = format!("{}-{}", region.name, mirror.name);
            for (i, source) in sources.iter().enumerate() {
                let identity = Identity::new(*source, Role::Mirror, name.clone())?;
                if i == 0 {
                    issue(identity.clone(), Vec::new(), node_dir.clone())?;
                }
                issue(identity, Vec::new(), mirror_source_dir(&node_dir, source))?;
            }
        }
    }
    if let Some(first) = topology.regions().first() {
        issue(
            Identity::new(first.name.clone(), Role::Admin, "operator")?,
            Vec::new(),
            out.join("clients").join("admin"),
        )?;
    }
    Ok(issued)
}
