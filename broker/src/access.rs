//! Who may do what on this broker: the verified TLS identity of each request, decided
//! by the deployment's [`certs::Authorizer`]; anonymous (plaintext) peers only where the
//! deployment file turns TLS off for their kind of listener, and never to write a
//! mirror's remote topic.

use std::sync::LazyLock;

use certs::{Action, Authorizer, AuthzRules, Identity, Pattern};
use prometheus::{IntCounterVec, Opts};
use tonic::{Request, Status};

use crate::transport::PeerInfo;
use crate::{BrokerError, ErrorCode};

static DENIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "meridian_authz_denied_total",
            "Requests refused by authorization, by the caller's role (anonymous for plaintext) and action.",
        ),
        &["role", "action"],
    )
    .expect("valid counter")
});

/// The refusal counter, for the metrics endpoint.
pub fn denied_metric() -> &'static IntCounterVec {
    &DENIED
}

/// The verified identity of a request's caller (`None`: plaintext or no certificate),
/// as the transport recorded it for the connection.
fn caller(extensions: &http::Extensions) -> Option<Identity> {
    extensions
        .get::<PeerInfo>()
        .and_then(|peer| peer.identity.clone())
}

/// The deployment file's ACLs as the authorizer's rules (one per action).
fn acl_rules(acls: &[topology::Acl]) -> Result<Vec<certs::AclRule>, BrokerError> {
    let mut rules = Vec::new();
    for acl in acls {
        let resource = match (&acl.resource, &acl.resource_prefix) {
            (_, Some(prefix)) => Pattern::Prefix(prefix.clone()),
            (Some(literal), None) => Pattern::Literal(literal.clone()),
            (None, None) => Pattern::Literal("*".into()),
        };
        for action in &acl.actions {
            let action: Action = action.parse().map_err(|e| BrokerError::InvalidRequest {
                reason: format!("acl for {}: {e}", acl.principal),
            })?;
            rules.push(certs::AclRule {
                principal: acl.principal.clone(),
                resource: resource.clone(),
                action,
                allow: acl.allows(),
            });
        }
    }
    Ok(rules)
}

/// The broker's access policy.
#[derive(Debug, Clone)]
pub struct Access {
    authorizer: Authorizer,
    anonymous_clients: bool,
    anonymous_brokers: bool,
}

impl Access {
    /// The policy of a node of `topology` in `region`: flows name the regions whose
    /// mirrors may act here; the listener modes say whether plaintext peers may act.
    pub fn for_node(topology_view: &topology::NodeView) -> Result<Self, BrokerError> {
        let region = &topology_view.region;
        let mut rules = AuthzRules::new(region.clone());
        for flow in &topology_view.region_flows {
            if &flow.source == region {
                rules.flow_regions.insert(flow.target.clone());
            }
            if &flow.target == region {
                rules.flow_regions.insert(flow.source.clone());
            }
        }
        rules.separator = topology_view.remote_topic_separator.clone();
        rules.mirror_internal_topics = vec![
            Pattern::Prefix("_meridian.".into()),
            Pattern::Literal("heartbeats".into()),
        ];
        rules.acls = acl_rules(&topology_view.acls)?;
        let authorizer = Authorizer::new(rules).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("authorization rules: {e}"),
        })?;
        let listeners = topology_view.tls.listeners;
        Ok(Access {
            authorizer,
            anonymous_clients: listeners.client != topology::TlsMode::Required,
            anonymous_brokers: listeners.inter_broker != topology::TlsMode::Required,
        })
    }

    /// Allows `action` on `resource` for the caller of `request`, or returns the
    /// PermissionDenied status that names the identity and the rule.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        action: Action,
        resource: &str,
    ) -> Result<(), Status> {
        let identity = caller(request.extensions());
        self.decide(identity.as_ref(), action, resource)
            .map_err(|e| crate::server::to_status(&e))
    }

    /// Whether the caller of `request` may `action` on `resource`; refusals are neither
    /// logged nor counted (listings filter by it).
    pub fn may<T>(&self, request: &Request<T>, action: Action, resource: &str) -> bool {
        let identity = caller(request.extensions());
        match &identity {
            Some(identity) => self
                .authorizer
                .authorize(identity, action, resource)
                .is_ok(),
            None => {
                if matches!(action, Action::Replicate | Action::Controller) {
                    self.anonymous_brokers
                } else {
                    self.anonymous_clients
                }
            }
        }
    }

    /// The decision itself, for a verified identity or an anonymous peer.
    pub fn decide(
        &self,
        identity: Option<&Identity>,
        action: Action,
        resource: &str,
    ) -> Result<(), BrokerError> {
        let refused = |role: &str, message: String| {
            DENIED.with_label_values(&[role, action.as_str()]).inc();
            tracing::warn!(role, action = action.as_str(), resource, %message, "permission denied");
            Err(BrokerError::Remote {
                code: ErrorCode::TopicAuthorizationFailed,
                message,
            })
        };
        match identity {
            Some(identity) => match self.authorizer.authorize(identity, action, resource) {
                Ok(()) => Ok(()),
                Err(denied) => refused(
                    identity.role.as_str(),
                    format!(
                        "permission denied: {} may not {} `{}` ({})",
                        denied.identity, denied.action, denied.resource, denied.rule
                    ),
                ),
            },
            None => {
                let internal = matches!(action, Action::Replicate | Action::Controller);
                let allowed = if internal {
                    self.anonymous_brokers
                } else {
                    self.anonymous_clients
                };
                if !allowed {
                    return refused(
                        "anonymous",
                        format!(
                            "permission denied: {action} on `{resource}` needs a client certificate (the deployment requires TLS for {} connections); connect with --tls-dir",
                            if internal { "inter-broker" } else { "client" }
                        ),
                    );
                }
                if matches!(action, Action::Produce | Action::CreateTopic)
                    && let Some(region) = self.authorizer.remote_topic_region(resource)
                {
                    return refused(
                        "anonymous",
                        format!(
                            "permission denied: `{resource}` is a remote topic of region {region}, written only by the mirror of {region} over mutual TLS"
                        ),
                    );
                }
                Ok(())
            }
        }
    }
}

/// A tower layer that lets only in-region brokers (or anonymous peers, where the
/// deployment allows plaintext between brokers) reach the controller quorum's services
/// on the shared gRPC port.
#[derive(Debug, Clone)]
pub struct ControllerGuardLayer {
    access: std::sync::Arc<Access>,
}

impl ControllerGuardLayer {
    /// Guards with `access`.
    pub fn new(access: std::sync::Arc<Access>) -> Self {
        Self { access }
    }
}

impl<S> tower::Layer<S> for ControllerGuardLayer {
    type Service = ControllerGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ControllerGuard {
            inner,
            access: self.access.clone(),
        }
    }
}

/// The service [`ControllerGuardLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub struct ControllerGuard<S> {
    inner: S,
    access: std::sync::Arc<Access>,
}

impl<S, B> tower::Service<http::Request<B>> for ControllerGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with("/meridian.controller.v1.") {
            let identity = caller(request.extensions());
            if let Err(err) = self
                .access
                .decide(identity.as_ref(), Action::Controller, "cluster")
            {
                let response = crate::server::to_status(&err).into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        let answer = self.inner.call(request);
        Box::pin(answer)
    }
}
