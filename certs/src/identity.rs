//! Who a peer is: `meridian://REGION/ROLE/NAME`, carried in a URI SAN.
//!
//! Authorization decisions are made on this value only, never on the subject CN or on
//! DNS names, so that the identity a certificate grants is exactly one string that the
//! CA signed.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;

use crate::error::{CertsError, Result};

/// The URI scheme (with `://`) that marks a Meridian identity among a certificate's SANs.
pub const IDENTITY_SCHEME: &str = "meridian://";

/// What a certificate holder is allowed to be; the authorizer grants rights per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A broker: replicates partitions and talks to the controller of its own region.
    Broker,
    /// A mirror worker: copies topics between regions.
    Mirror,
    /// An application: produces and consumes as the ACLs allow.
    Client,
    /// An operator: manages topics and consumer groups.
    Admin,
}

impl Role {
    /// Every role, for help texts and exhaustive tests.
    pub const ALL: [Role; 4] = [Role::Broker, Role::Mirror, Role::Client, Role::Admin];

    /// The lowercase name used in identities and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Mirror => "mirror",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertsError;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| CertsError::InvalidIdentity {
                input: s.to_owned(),
                reason: "role must be one of broker, mirror, client, admin".to_owned(),
            })
    }
}

/// A verified peer: region, role and name, as signed by the deployment CA.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The region the holder belongs to (for a mirror: the region whose data it carries).
    pub region: String,
    /// What the holder may do.
    pub role: Role,
    /// The holder's name, unique within region and role.
    pub name: String,
}

impl Identity {
    /// Builds an identity, checking each part the same way parsing does, so that every
    /// identity that exists can be written into a certificate and read back unchanged.
    pub fn new(region: impl Into<String>, role: Role, name: impl Into<String>) -> Result<Self> {
        let id = Identity {
            region: region.into(),
            role,
            name: name.into(),
        };
        id.validate()?;
        Ok(id)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| CertsError::InvalidIdentity {
            input: self.to_string(),
            reason,
        };
        // Regions prefix remote topic names (`REGION.topic`), so they may not contain the
        // separator or anything a topic name could not hold.
        check_part(&self.region, "region", |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })
        .map_err(&bad)?;
        check_part(&self.name, "name", |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
        })
        .map_err(&bad)?;
        Ok(())
    }
}

fn check_part(
    value: &str,
    what: &str,
    allowed: impl Fn(char) -> bool,
) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if value.len() > 63 {
        return Err(format!("the {what} is longer than 63 characters"));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!("the {what} contains `{c}`"));
    }
    Ok(())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{IDENTITY_SCHEME}{}/{}/{}",
            self.region, self.role, self.name
        )
    }
}

impl FromStr for Identity {
    type Err = CertsError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| CertsError::InvalidIdentity {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s
            .strip_prefix(IDENTITY_SCHEME)
            .ok_or_else(|| bad("it does not start with meridian://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [region, role, name] = parts.as_slice() else {
            return Err(bad("it must have exactly three parts after meridian://"));
        };
        let role: Role = role
            .parse()
            .map_err(|_| bad("the role must be one of broker, mirror, client, admin"))?;
        Identity::new(*region, role, *name)
    }
}

/// Reads the Meridian identity out of a DER certificate.
///
/// Exactly one `meridian://` URI SAN is required: a certificate with none is not a
/// Meridian certificate, and one with two would be ambiguous about who its holder is.
pub fn identity_from_cert_der(der: &[u8]) -> Result<Identity> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertsError::InvalidCertificate {
            reason: e.to_string(),
        })?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) if u.starts_with(IDENTITY_SCHEME) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(CertsError::InvalidCertificate {
                reason: format!("bad subjectAltName extension: {e}"),
            });
        }
    };
    match uris.as_slice() {
        [one] => one.parse(),
        _ => Err(CertsError::NoIdentity {
            subject: cert.subject().to_string(),
            found: uris.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_its_uri_form() {
        let id = Identity::new("us-east", Role::Mirror, "m-1").unwrap();
        assert_eq!(id.to_string(), "meridian://us-east/mirror/m-1");
        assert_eq!(id.to_string().parse::<Identity>().unwrap(), id);
    }

    #[test]
    fn identity_parse_rejects_wrong_scheme_role_and_shape() {
        for bad in [
            "https://us-east/client/a",
            "meridian://us-east/root/a",
            "meridian://us-east/client",
            "meridian://us-east/client/a/b",
            "meridian:///client/a",
            "meridian://us.east/client/a",
        ] {
            let err = bad.parse::<Identity>().unwrap_err();
            assert!(
                err.to_string().contains("meridian://REGION/ROLE/NAME"),
                "{bad}: {err}"
            );
        }
    }
}
