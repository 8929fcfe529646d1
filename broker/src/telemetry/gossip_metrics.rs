//! Gossip health for brokers and mirror workers alike, read from the gossip shell's
//! view and counters at scrape time.

use gossip::{GossipHandle, MemberState};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The gossip metrics of one process.
#[derive(Debug, Clone)]
pub struct GossipMetrics {
    members: IntGaugeVec,
    datagrams_sent: IntCounter,
    datagrams_received: IntCounter,
    datagrams_dropped: IntCounterVec,
    probes: IntCounter,
    suspicions: IntCounter,
    downs: IntCounter,
}

impl GossipMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid counter")
        };
        let metrics = GossipMetrics {
            members: IntGaugeVec::new(
                Opts::new(
                    "meridian_gossip_members",
                    "Members this node sees, by the member's region and role, and state (alive, suspect, down); itself included.",
                ),
                &["member_region", "member_role", "state"],
            )
            .expect("valid gauge"),
            datagrams_sent: counter(
                "meridian_gossip_datagrams_sent_total",
                "Gossip datagrams sent.",
            ),
            datagrams_received: counter(
                "meridian_gossip_datagrams_received_total",
                "Gossip datagrams received, before any check.",
            ),
            datagrams_dropped: IntCounterVec::new(
                Opts::new(
                    "meridian_gossip_datagrams_dropped_total",
                    "Gossip datagrams dropped, by reason: authentication (no key in the ring opened it), malformed, filtered.",
                ),
                &["reason"],
            )
            .expect("valid counter"),
            probes: counter(
                "meridian_gossip_probes_total",
                "SWIM probe rounds started.",
            ),
            suspicions: counter(
                "meridian_gossip_suspicions_total",
                "Times a member went from alive to suspect.",
            ),
            downs: counter(
                "meridian_gossip_members_down_total",
                "Times a member was declared down (graceful leaves not counted).",
            ),
        };
        super::register(registry, &metrics.members);
        super::register(registry, &metrics.datagrams_sent);
        super::register(registry, &metrics.datagrams_received);
        super::register(registry, &metrics.datagrams_dropped);
        super::register(registry, &metrics.probes);
        super::register(registry, &metrics.suspicions);
        super::register(registry, &metrics.downs);
        metrics
    }

    /// Rebuilds every series from `gossip` as it is now.
    pub fn refresh(&self, gossip: &GossipHandle) {
        self.members.reset();
        for member in gossip.members() {
            let state = match member.state {
                MemberState::Alive => "alive",
                MemberState::Suspect => "suspect",
                MemberState::Down => "down",
            };
            self.members
                .with_label_values(&[
                    member.identity.region.as_str(),
                    match member.identity.role {
                        gossip::Role::Broker => "broker",
                        gossip::Role::Mirror => "mirror",
                    },
                    state,
                ])
                .inc();
        }
        let stats = gossip.stats();
        set_counter(&self.datagrams_sent, stats.datagrams_sent);
        set_counter(&self.datagrams_received, stats.datagrams_received);
        for (reason, value) in [
            ("authentication", stats.datagrams_dropped_auth),
            ("malformed", stats.datagrams_dropped_malformed),
            ("filtered", stats.datagrams_dropped_filtered),
        ] {
            set_counter(&self.datagrams_dropped.with_label_values(&[reason]), value);
        }
        set_counter(&self.probes, stats.probes);
        set_counter(&self.suspicions, stats.suspicions);
        set_counter(&self.downs, stats.downs);
    }
}

/// Moves a counter up to a total kept elsewhere (the gossip shell's own counters).
pub(crate) fn set_counter(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
