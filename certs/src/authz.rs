//! The authorization decision: may this verified identity do this action on this
//! resource? Pure logic; the broker calls it after the handshake and turns a [`Denied`]
//! into PermissionDenied (and a metric).
//!
//! ```text
//!   broker  (own region only) ── replicate, controller, describe
//!   mirror of region X        ── create/append `X.<topic>` (never a topic named after
//!                                 this region), its internal topics, and read the
//!                                 source topics when X is this region
//!   admin                     ── manage topics and groups; data access through ACLs
//!   client                    ── ACLs: literal/prefix, allow/deny, deny wins, default deny
//!   anyone but a mirror       ── never writes a remote topic `R.<topic>`
//! ```
//!
//! A mirror certificate names the region whose data it carries (the source of its
//! flows): that is what ties `X.<topic>` topics to exactly one certificate holder.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{CertsError, Result};
use crate::identity::{Identity, Role};

/// Something a peer asks to do. Topic actions name a topic; group actions a group;
/// `Replicate`, `Controller` and `Admin` name the cluster (any string, usually "cluster").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Append records to a topic.
    Produce,
    /// Fetch records from a topic.
    Consume,
    /// Create a topic.
    CreateTopic,
    /// Delete a topic.
    DeleteTopic,
    /// Read a topic's metadata and offsets.
    DescribeTopic,
    /// Follow partitions as an in-region replica.
    Replicate,
    /// Talk to the region's controller quorum.
    Controller,
    /// Read a consumer group's state and committed offsets.
    GroupRead,
    /// Join a group or commit its offsets.
    GroupWrite,
    /// Cluster administration (configs, failover).
    Admin,
}

impl Action {
    /// Every action, for exhaustive tests and help texts.
    pub const ALL: [Action; 10] = [
        Action::Produce,
        Action::Consume,
        Action::CreateTopic,
        Action::DeleteTopic,
        Action::DescribeTopic,
        Action::Replicate,
        Action::Controller,
        Action::GroupRead,
        Action::GroupWrite,
        Action::Admin,
    ];

    /// The kebab-case name used in deployment files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::CreateTopic => "create-topic",
            Action::DeleteTopic => "delete-topic",
            Action::DescribeTopic => "describe-topic",
            Action::Replicate => "replicate",
            Action::Controller => "controller",
            Action::GroupRead => "group-read",
            Action::GroupWrite => "group-write",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = CertsError;

    fn from_str(s: &str) -> Result<Self> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CertsError::InvalidRule {
                rule: s.to_owned(),
                reason: format!(
                    "unknown action; use one of {}",
                    Action::ALL.map(Action::as_str).join(", ")
                ),
            })
    }
}

/// Which resource names an ACL rule covers, as Kafka's LITERAL and PREFIXED patterns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Exactly this name (`*` matches every name).
    Literal(String),
    /// Every name starting with this prefix.
    Prefix(String),
}

impl Pattern {
    /// Whether `resource` falls under this pattern.
    pub fn matches(&self, resource: &str) -> bool {
        match self {
            Pattern::Literal(l) => l == "*" || l == resource,
            Pattern::Prefix(p) => resource.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Literal(l) => write!(f, "literal `{l}`"),
            Pattern::Prefix(p) => write!(f, "prefix `{p}`"),
        }
    }
}

/// One ACL entry, as a Kafka ACL: who, which resources, which action, allow or deny.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclRule {
    /// An identity string (`meridian://REGION/ROLE/NAME`) or `*` for every identity.
    pub principal: String,
    /// The resources covered.
    pub resource: Pattern,
    /// The action covered.
    pub action: Action,
    /// Allow, or deny (a matching deny wins over any allow).
    pub allow: bool,
}

impl AclRule {
    fn covers(&self, identity: &str, action: Action, resource: &str) -> bool {
        (self.principal == "*" || self.principal == identity)
            && self.action == action
            && self.resource.matches(resource)
    }
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acl {} {} {} on {}",
            if self.allow { "allow" } else { "deny" },
            self.principal,
            self.action,
            self.resource
        )
    }
}

/// Everything the authorizer decides from: where it runs, which regions it shares
/// mirror flows with, and the ACLs of the deployment file.
#[derive(Debug, Clone)]
pub struct AuthzRules {
    /// The region of the cluster that makes the decisions.
    pub local_region: String,
    /// Regions linked to the local region by a mirror flow (either direction). Their
    /// mirrors may act here, and `REGION<sep>` topics here are remote topics.
    pub flow_regions: BTreeSet<String>,
    /// Separator between source region and topic in remote topic names.
    pub separator: String,
    /// Topics the mirror keeps its own state in (checkpoints, offset syncs).
    pub mirror_internal_topics: Vec<Pattern>,
    /// Client ACLs.
    pub acls: Vec<AclRule>,
}

impl AuthzRules {
    /// Rules for `local_region` with the default separator `.`, the default mirror
    /// internal topics (prefix `__mirror`), no flows and no ACLs.
    pub fn new(local_region: impl Into<String>) -> Self {
        AuthzRules {
            local_region: local_region.into(),
            flow_regions: BTreeSet::new(),
            separator: ".".to_owned(),
            mirror_internal_topics: vec![Pattern::Prefix("__mirror".to_owned())],
            acls: Vec::new(),
        }
    }
}

/// A refusal: who was refused, what they asked, and which rule refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {identity} may not {action} `{resource}` ({rule})")]
pub struct Denied {
    /// The verified identity that asked.
    pub identity: Identity,
    /// What it asked to do.
    pub action: Action,
    /// On what.
    pub resource: String,
    /// The rule that refused, in words an operator can find in the docs or the file.
    pub rule: String,
}

/// Decides every request on a verified identity. Cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Authorizer {
    rules: AuthzRules,
}

impl Authorizer {
    /// Checks the rules once so that every later decision is on a valid rule set.
    pub fn new(rules: AuthzRules) -> Result<Authorizer> {
        let invalid = |rule: String, reason: &str| CertsError::InvalidRule {
            rule,
            reason: reason.to_owned(),
        };
        if rules.local_region.is_empty() {
            return Err(invalid(
                "local_region".to_owned(),
                "the local region is empty",
            ));
        }
        if rules.separator.is_empty() {
            return Err(invalid(
                "separator".to_owned(),
                "the remote topic separator is empty",
            ));
        }
        for acl in &rules.acls {
            if acl.principal != "*" && acl.principal.parse::<Identity>().is_err() {
                return Err(invalid(
                    acl.to_string(),
                    "the principal must be `*` or meridian://REGION/ROLE/NAME",
                ));
            }
            let empty = match &acl.resource {
                Pattern::Literal(s) | Pattern::Prefix(s) => s.is_empty(),
            };
            if empty {
                return Err(invalid(
                    acl.to_string(),
                    "the resource pattern is empty (use literal `*` for all)",
                ));
            }
        }
        Ok(Authorizer { rules })
    }

    /// The rules this authorizer decides by.
    pub fn rules(&self) -> &AuthzRules {
        &self.rules
    }

    /// Allows or refuses `action` on `resource` for `identity`.
    pub fn authorize(
        &self,
        identity: &Identity,
        action: Action,
        resource: &str,
    ) -> std::result::Result<(), Denied> {
        let deny = |rule: String| {
            Err(Denied {
                identity: identity.clone(),
                action,
                resource: resource.to_owned(),
                rule,
            })
        };
        let local = &self.rules.local_region;
        let sep = &self.rules.separator;

        // Remote topics are written by their mirror only, whatever ACLs say.
        if identity.role != Role::Mirror
            && matches!(action, Action::Produce | Action::CreateTopic)
            && let Some(region) = self.remote_topic_region(resource)
        {
            return deny(format!(
                "rule remote-topic: `{resource}` is a remote topic of region {region}, written only by the mirror of {region}"
            ));
        }

        match identity.role {
            Role::Broker => {
                if &identity.region != local {
                    return deny(format!(
                        "rule broker-region: a broker acts only in its own region; this is region {local}"
                    ));
                }
                match action {
                    Action::Replicate | Action::Controller | Action::DescribeTopic => Ok(()),
                    _ => deny(
                        "rule broker-role: role broker may only replicate, reach the controller and describe topics"
                            .to_owned(),
                    ),
                }
            }
            Role::Mirror => {
                let x = &identity.region;
                if x != local && !self.rules.flow_regions.contains(x) {
                    return deny(format!(
                        "rule mirror-flow: no mirror flow links region {x} with region {local}"
                    ));
                }
                let internal = self
                    .rules
                    .mirror_internal_topics
                    .iter()
                    .any(|p| p.matches(resource));
                let own_remote = resource
                    .strip_prefix(x.as_str())
                    .and_then(|rest| rest.strip_prefix(sep.as_str()))
                    .is_some_and(|topic| !topic.is_empty());
                let topic_action = matches!(
                    action,
                    Action::Produce | Action::Consume | Action::CreateTopic | Action::DescribeTopic
                );
                match action {
                    _ if internal && topic_action => Ok(()),
                    // Its own remote topics it creates, appends to, and deletes when their
                    // source topic is deleted (flows with delete_remote_topics).
                    Action::Produce | Action::CreateTopic | Action::DeleteTopic
                        if own_remote && x != local =>
                    {
                        Ok(())
                    }
                    Action::Produce | Action::CreateTopic | Action::DeleteTopic => deny(format!(
                        "rule mirror-remote-topics: a mirror of region {x} may create, append to and delete only remote topics named `{x}{sep}<topic>` outside region {x}"
                    )),
                    Action::Consume | Action::DescribeTopic if x == local || own_remote => Ok(()),
                    Action::Consume | Action::DescribeTopic => deny(format!(
                        "rule mirror-source-topics: a mirror of region {x} reads source topics only in region {x}, and its own `{x}{sep}<topic>` topics elsewhere"
                    )),
                    Action::GroupRead if x == local => Ok(()),
                    // Checkpoints: the mirror of X reads and syncs the flow's groups in
                    // the target region (sync_group_offsets).
                    Action::GroupRead | Action::GroupWrite if x != local => Ok(()),
                    _ => deny(format!("rule mirror-role: role mirror may not {action}")),
                }
            }
            Role::Admin => match action {
                Action::CreateTopic
                | Action::DeleteTopic
                | Action::DescribeTopic
                | Action::GroupRead
                | Action::GroupWrite
                | Action::Admin => Ok(()),
                _ => self.acl_decision(identity, action, resource),
            },
            Role::Client => match action {
                Action::Replicate | Action::Controller => deny(format!(
                    "rule reserved-action: {action} is reserved for role broker"
                )),
                Action::Admin => {
                    deny("rule reserved-action: admin is reserved for role admin".to_owned())
                }
                _ => self.acl_decision(identity, action, resource),
            },
        }
    }

    /// Kafka ACL semantics: a matching deny wins, else a matching allow, else deny.
    fn acl_decision(
        &self,
        identity: &Identity,
        action: Action,
        resource: &str,
    ) -> std::result::Result<(), Denied> {
        let who = identity.to_string();
        let mut allowed = false;
        for acl in &self.rules.acls {
            if acl.covers(&who, action, resource) {
                if !acl.allow {
                    return Err(Denied {
                        identity: identity.clone(),
                        action,
                        resource: resource.to_owned(),
                        rule: format!("rule {acl}"),
                    });
                }
                allowed = true;
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                identity: identity.clone(),
                action,
                resource: resource.to_owned(),
                rule: format!(
                    "rule default-deny: no ACL allows {action} on `{resource}` for role {}",
                    identity.role
                ),
            })
        }
    }

    /// The region whose mirror alone writes `topic` here (`REGION<sep><topic>` for a
    /// region linked by a flow), if it is such a remote topic.
    pub fn remote_topic_region(&self, topic: &str) -> Option<&str> {
        let sep = &self.rules.separator;
        self.rules
            .flow_regions
            .iter()
            .find(|r| {
                topic
                    .strip_prefix(r.as_str())
                    .and_then(|rest| rest.strip_prefix(sep.as_str()))
                    .is_some()
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    /// eu-west receives flows from us-east; us-east mirrors write `us-east.*` here.
    fn eu_west(acls: Vec<AclRule>) -> Authorizer {
        let mut rules = AuthzRules::new("eu-west");
        rules.flow_regions.insert("us-east".to_owned());
        rules.acls = acls;
        Authorizer::new(rules).unwrap()
    }

    fn acl(principal: &str, resource: Pattern, action: Action, allow: bool) -> AclRule {
        AclRule {
            principal: principal.to_owned(),
            resource,
            action,
            allow,
        }
    }

    #[test]
    fn mirror_of_us_east_may_append_only_to_us_east_remote_topics() {
        let authz = eu_west(vec![]);
        let mirror = id("meridian://us-east/mirror/m1");
        assert_eq!(
            authz.authorize(&mirror, Action::Produce, "us-east.orders"),
            Ok(())
        );
        assert_eq!(
            authz.authorize(&mirror, Action::CreateTopic, "us-east.orders"),
            Ok(())
        );
        let denied = authz
            .authorize(&mirror, Action::Produce, "eu-west.orders")
            .unwrap_err();
        assert!(denied.rule.contains("mirror-remote-topics"), "{denied}");
        let text = denied.to_string();
        assert!(text.contains("meridian://us-east/mirror/m1"), "{text}");
        assert!(text.contains("eu-west.orders"), "{text}");
        // Local source topics and the bare prefix are not its remote topics either.
        assert!(authz.authorize(&mirror, Action::Produce, "orders").is_err());
        assert!(
            authz
                .authorize(&mirror, Action::Produce, "us-east.")
                .is_err()
        );
    }

    #[test]
    fn mirror_from_a_region_without_a_flow_is_denied() {
        let authz = eu_west(vec![]);
        let mirror = id("meridian://ap-south/mirror/m1");
        let denied = authz
            .authorize(&mirror, Action::Produce, "ap-south.orders")
            .unwrap_err();
        assert!(denied.rule.contains("mirror-flow"), "{denied}");
    }

    #[test]
    fn mirror_reads_source_topics_only_in_its_own_region() {
        let mut rules = AuthzRules::new("us-east");
        rules.flow_regions.insert("eu-west".to_owned());
        let at_source = Authorizer::new(rules).unwrap();
        let mirror = id("meridian://us-east/mirror/m1");
        assert_eq!(
            at_source.authorize(&mirror, Action::Consume, "orders"),
            Ok(())
        );
        assert_eq!(
            at_source.authorize(&mirror, Action::GroupRead, "billing"),
            Ok(())
        );
        // It never writes remote topics named after the region it runs in.
        assert!(
            at_source
                .authorize(&mirror, Action::Produce, "us-east.orders")
                .is_err()
        );

        let at_target = eu_west(vec![]);
        let denied = at_target
            .authorize(&mirror, Action::Consume, "orders")
            .unwrap_err();
        assert!(denied.rule.contains("mirror-source-topics"), "{denied}");
        assert_eq!(
            at_target.authorize(&mirror, Action::DescribeTopic, "us-east.orders"),
            Ok(())
        );
        assert_eq!(
            at_target.authorize(&mirror, Action::Produce, "__mirror.checkpoints"),
            Ok(())
        );
    }

    #[test]
    fn right_ca_wrong_role_is_denied_naming_the_rule() {
        let authz = eu_west(vec![acl(
            "*",
            Pattern::Literal("*".into()),
            Action::Produce,
            true,
        )]);
        let client = id("meridian://eu-west/client/app");
        let denied = authz
            .authorize(&client, Action::Replicate, "cluster")
            .unwrap_err();
        assert!(denied.rule.contains("reserved-action"), "{denied}");
        assert!(denied.to_string().contains("meridian://eu-west/client/app"));

        let broker = id("meridian://eu-west/broker/b1");
        assert_eq!(
            authz.authorize(&broker, Action::Replicate, "cluster"),
            Ok(())
        );
        let denied = authz
            .authorize(&broker, Action::Produce, "orders")
            .unwrap_err();
        assert!(denied.rule.contains("broker-role"), "{denied}");

        let mirror = id("meridian://us-east/mirror/m1");
        let denied = authz
            .authorize(&mirror, Action::Controller, "cluster")
            .unwrap_err();
        assert!(denied.rule.contains("mirror-role"), "{denied}");
    }

    #[test]
    fn broker_of_another_region_may_not_replicate() {
        let authz = eu_west(vec![]);
        let denied = authz
            .authorize(
                &id("meridian://us-east/broker/b1"),
                Action::Replicate,
                "cluster",
            )
            .unwrap_err();
        assert!(denied.rule.contains("broker-region"), "{denied}");
    }

    #[test]
    fn acl_prefix_allow_with_literal_deny_deny_wins() {
        let app = "meridian://eu-west/client/app";
        let authz = eu_west(vec![
            acl(app, Pattern::Prefix("orders".into()), Action::Produce, true),
            acl(
                "*",
                Pattern::Literal("orders-secret".into()),
                Action::Produce,
                false,
            ),
        ]);
        let client = id(app);
        assert_eq!(authz.authorize(&client, Action::Produce, "orders"), Ok(()));
        assert_eq!(
            authz.authorize(&client, Action::Produce, "orders-eu"),
            Ok(())
        );
        let denied = authz
            .authorize(&client, Action::Produce, "orders-secret")
            .unwrap_err();
        assert!(
            denied
                .rule
                .contains("deny * produce on literal `orders-secret`"),
            "{denied}"
        );
        // The allow covers produce only, and this principal only.
        let denied = authz
            .authorize(&client, Action::Consume, "orders")
            .unwrap_err();
        assert!(denied.rule.contains("default-deny"), "{denied}");
        let other = id("meridian://eu-west/client/other");
        assert!(authz.authorize(&other, Action::Produce, "orders").is_err());
    }

    #[test]
    fn no_one_but_the_mirror_writes_a_remote_topic() {
        let authz = eu_west(vec![acl(
            "*",
            Pattern::Literal("*".into()),
            Action::Produce,
            true,
        )]);
        for who in [
            "meridian://eu-west/client/app",
            "meridian://eu-west/admin/ops",
        ] {
            let denied = authz
                .authorize(&id(who), Action::Produce, "us-east.orders")
                .unwrap_err();
            assert!(denied.rule.contains("remote-topic"), "{denied}");
        }
        let denied = authz
            .authorize(
                &id("meridian://eu-west/admin/ops"),
                Action::CreateTopic,
                "us-east.x",
            )
            .unwrap_err();
        assert!(denied.rule.contains("remote-topic"), "{denied}");
    }

    #[test]
    fn admin_manages_topics_and_groups_but_needs_acls_for_data() {
        let authz = eu_west(vec![]);
        let admin = id("meridian://eu-west/admin/ops");
        for action in [
            Action::CreateTopic,
            Action::DeleteTopic,
            Action::DescribeTopic,
            Action::GroupRead,
            Action::GroupWrite,
            Action::Admin,
        ] {
            assert_eq!(
                authz.authorize(&admin, action, "orders"),
                Ok(()),
                "{action}"
            );
        }
        assert!(authz.authorize(&admin, Action::Consume, "orders").is_err());
    }

    #[test]
    fn authorizer_rejects_an_acl_with_a_malformed_principal() {
        let mut rules = AuthzRules::new("eu-west");
        rules.acls = vec![acl(
            "app",
            Pattern::Literal("orders".into()),
            Action::Produce,
            true,
        )];
        let err = Authorizer::new(rules).unwrap_err();
        assert!(
            err.to_string().contains("meridian://REGION/ROLE/NAME"),
            "{err}"
        );
    }

    #[test]
    fn action_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>().unwrap(), action);
        }
        assert!("write".parse::<Action>().is_err());
    }
}
