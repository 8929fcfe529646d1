//! `meridian certs init-ca|issue|inspect`: the operator's PKI tools.
//!
//! Each TLS directory this writes (`--out DIR`) is what every other command takes as
//! `--tls-dir DIR`: `ca.pem`, `cert.pem`, `key.pem`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::UsageError;

/// PKI commands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the deployment CA: DIR/ca.pem and DIR/ca-key.pem (keep the key private).
    InitCa {
        /// Directory to write the CA into (created if missing; an existing CA is kept).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "meridian-ca")]
        name: String,
    },
    /// Issue a node or client certificate into a TLS directory (ca.pem, cert.pem, key.pem).
    Issue {
        /// The CA directory made by `init-ca`.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Region of the holder (for a mirror: the region whose data it carries).
        #[arg(long)]
        region: String,
        /// Name of the holder, unique within region and role.
        #[arg(long)]
        name: String,
        /// What the holder may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// DNS names the holder serves under (repeat or comma-separate). With neither
        /// --dns nor --ip: localhost and 127.0.0.1.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses the holder serves under (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = ::certs::DEFAULT_DAYS)]
        days: u32,
        /// TLS directory to write (created if missing; cert and key are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue every node's certificate of a deployment file, laid out as it expects
    /// (OUT/ca.pem, OUT/REGION/NODE/, mirrors' OUT/REGION/NODE/from-SOURCE/, and an admin
    /// client in OUT/clients/admin/).
    IssueDeployment {
        /// The deployment file.
        #[arg(long, value_name = "FILE")]
        topology: PathBuf,
        /// The CA directory made by `init-ca`.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Where to write; default: the deployment file's `tls.dir`.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = ::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Show a certificate: identity, subject, SANs, validity, fingerprint, days left.
    Inspect {
        /// A PEM certificate file, or a TLS directory (its cert.pem is shown).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// The roles, as the command line spells them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Replicates and reaches the controller in its own region.
    Broker,
    /// Copies topics between regions.
    Mirror,
    /// Produces and consumes as ACLs allow.
    Client,
    /// Manages topics and groups.
    Admin,
}

impl From<RoleArg> for ::certs::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Broker => ::certs::Role::Broker,
            RoleArg::Mirror => ::certs::Role::Mirror,
            RoleArg::Client => ::certs::Role::Client,
            RoleArg::Admin => ::certs::Role::Admin,
        }
    }
}

/// How `inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned `key: value` lines.
    Text,
    /// One JSON object.
    Json,
}

/// Errors the user fixes by changing the command line become exit code 2.
fn usage_if_users(err: ::certs::CertsError) -> anyhow::Error {
    match err {
        ::certs::CertsError::CaNotFound { .. }
        | ::certs::CertsError::CaExists { .. }
        | ::certs::CertsError::MissingFile { .. }
        | ::certs::CertsError::InvalidFile { .. }
        | ::certs::CertsError::InvalidCertificate { .. }
        | ::certs::CertsError::InvalidIdentity { .. }
        | ::certs::CertsError::InvalidRequest { .. } => UsageError(err.to_string()).into(),
        other => other.into(),
    }
}

/// Runs a `certs` subcommand.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::InitCa { out, name } => {
            let ca = ::certs::Ca::generate(&name).map_err(usage_if_users)?;
            ca.save(&out).map_err(usage_if_users)?;
            println!(
                "wrote CA `{name}` to {} (ca.pem; ca-key.pem is private, mode 0600)",
                out.display()
            );
            Ok(())
        }
        CertsCommand::Issue {
            ca,
            region,
            name,
            role,
            dns,
            ip,
            days,
            out,
        } => {
            let identity =
                ::certs::Identity::new(region, role.into(), name).map_err(usage_if_users)?;
            let ca = ::certs::Ca::load(&ca).map_err(usage_if_users)?;
            let mut req = ::certs::IssueRequest::new(identity.clone());
            req.dns = dns;
            req.ips = ip;
            req.days = days;
            let issued = ca.issue(&req).map_err(usage_if_users)?;
            issued.save(&out).map_err(usage_if_users)?;
            let info = ::certs::inspect_file(&out.join(::certs::CERT_FILE))?;
            println!(
                "issued {identity} into {} (ca.pem, cert.pem, key.pem); expires {} ({} days); sha256 {}",
                out.display(),
                info.not_after,
                info.days_left,
                info.fingerprint_sha256
            );
            Ok(())
        }
        CertsCommand::IssueDeployment {
            topology,
            ca,
            out,
            days,
        } => {
            let topology = ::topology::load(&topology)?;
            let ca = ::certs::Ca::load(&ca).map_err(usage_if_users)?;
            let out = out.unwrap_or_else(|| topology.base_dir.join(&topology.tls.dir));
            let issued =
                ::certs::issue_deployment(&topology, &ca, &out, days).map_err(usage_if_users)?;
            for node in &issued {
                println!("issued {} into {}", node.identity, node.dir.display());
            }
            println!(
                "{} certificates under {}, valid {days} days",
                issued.len(),
                out.display()
            );
            Ok(())
        }
        CertsCommand::Inspect { file, format } => inspect(&file, format),
    }
}

fn inspect(file: &Path, format: Format) -> anyhow::Result<()> {
    let path = if file.is_dir() {
        file.join(::certs::CERT_FILE)
    } else {
        file.to_owned()
    };
    let info = ::certs::inspect_file(&path)
        .map_err(usage_if_users)
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    let identity = info.identity.as_ref().map(ToString::to_string);
    match format {
        Format::Json => {
            let value = serde_json::json!({
                "file": path.display().to_string(),
                "identity": identity,
                "region": info.identity.as_ref().map(|i| i.region.clone()),
                "role": info.identity.as_ref().map(|i| i.role.to_string()),
                "name": info.identity.as_ref().map(|i| i.name.clone()),
                "subject": info.subject,
                "issuer": info.issuer,
                "serial": info.serial,
                "sans": info.sans,
                "not_before": info.not_before,
                "not_after": info.not_after,
                "not_before_unix": info.not_before_unix,
                "not_after_unix": info.not_after_unix,
                "days_left": info.days_left,
                "is_ca": info.is_ca,
                "fingerprint_sha256": info.fingerprint_sha256,
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Text => {
            let rows = [
                ("file", path.display().to_string()),
                ("identity", identity.unwrap_or_else(|| "(none)".to_owned())),
                ("subject", info.subject),
                ("issuer", info.issuer),
                ("serial", info.serial),
                ("sans", info.sans.join(", ")),
                ("not before", info.not_before),
                ("not after", info.not_after),
                ("days left", info.days_left.to_string()),
                ("ca", info.is_ca.to_string()),
                ("sha256", info.fingerprint_sha256),
            ];
            for (k, v) in rows {
                println!("{:<11} {v}", format!("{k}:"));
            }
            if info.days_left < ::certs::EXPIRY_WARNING_DAYS {
                println!(
                    "warning: expires in {} days; issue a new certificate with `meridian certs issue`",
                    info.days_left
                );
            }
        }
    }
    Ok(())
}
