//! Timing presets for LAN (one region) and WAN (across regions) gossip.

use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::GossipError;
use crate::keyring::OVERHEAD;

/// Largest datagram on the wire, encryption included (RFC 8085: stay under the MTU).
pub const MAX_DATAGRAM: usize = 1400;

/// SWIM timing and shared-state resync settings.
///
/// It exists so operators pick a preset by network type instead of tuning a dozen
/// knobs, and so tests can compute the failure-detection bound the config implies.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// foca's settings (probe period and RTT, suspicion timeout, fan-outs).
    pub foca: foca::Config,
    /// How often each node re-sends a few shared-state entries (anti-entropy), so a
    /// value still converges after its broadcasts were lost or a partition healed.
    pub state_resync_every: Duration,
    /// How many entries each resync re-sends.
    pub state_resync_batch: usize,
}

impl GossipConfig {
    /// Preset for members of one region (sub-millisecond RTT, rare loss), sized for
    /// about `cluster_size` members.
    ///
    /// foca's `new_lan` (memberlist's DefaultLANConfig): probe every 1 s, 500 ms probe
    /// RTT, 3 indirect probes, suspicion `max(1, log10 n) * 4` probe periods (5.2 s at
    /// n = 20), gossip to 3 members every 200 ms. Changed: packets leave room for
    /// encryption, and members declared down are re-contacted every 10 s (not 65 s)
    /// so a healed partition merges quickly.
    pub fn lan(cluster_size: u32) -> Self {
        let mut foca = foca::Config::new_lan(NonZeroU32::new(cluster_size.max(1)).expect("max(1)"));
        foca.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD).expect("positive");
        foca.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(2).expect("positive"),
        });
        Self {
            foca,
            state_resync_every: Duration::from_secs(5),
            state_resync_batch: 4,
        }
    }

    /// Preset for members spread over regions (100 ms+ RTT, some loss), sized for
    /// about `cluster_size` members.
    ///
    /// foca's `new_wan` (memberlist's DefaultWANConfig): probe every 5 s, 3 s probe
    /// RTT (30x a 100 ms RTT, so only a lost ping *and* three lost indirect paths
    /// raise a suspicion), suspicion `max(1, log10 n) * 6` probe periods (39 s at
    /// n = 20) which leaves many gossip rounds for the suspect to refute, gossip to 4
    /// members every 500 ms. Changed: room for encryption; down members re-contacted
    /// every 30 s; and three times foca's retransmissions per update (15 at n = 20):
    /// with foca's 5, a suspicion sometimes never reached the suspect under 10% loss,
    /// so it could not refute and was falsely declared down (about 3 per 30 simulated
    /// minutes of 20 members); with 15, none in 11 such runs.
    pub fn wan(cluster_size: u32) -> Self {
        let mut foca = foca::Config::new_wan(NonZeroU32::new(cluster_size.max(1)).expect("max(1)"));
        // Three times foca's retransmissions: under 10% loss a suspicion must reach
        // the suspect (so it can refute) with near certainty; see the struct docs.
        foca.max_transmissions = NonZeroU8::new(foca.max_transmissions.get().saturating_mul(3))
            .expect("non-zero times 3 is non-zero");
        foca.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD).expect("positive");
        foca.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(30),
            num_members: NonZeroUsize::new(2).expect("positive"),
        });
        Self {
            foca,
            state_resync_every: Duration::from_secs(15),
            state_resync_batch: 4,
        }
    }

    /// Upper bound on the time from a member's crash until every live member has
    /// marked it down.
    ///
    /// Foca probes members in a shuffled round-robin, so with `n - 1` probers the
    /// chance nobody probed the dead member within `k` periods is about `e^-k`; we
    /// allow k = 8 periods (< 0.04 %), then one period for the probe to fail, the
    /// suspicion timeout, and ten gossip rounds (or two probe periods without
    /// periodic gossip) for the news to reach everyone.
    pub fn failure_detection_bound(&self) -> Duration {
        let period = self.foca.probe_period;
        let spread = self
            .foca
            .periodic_gossip
            .as_ref()
            .map_or(period * 2, |g| g.frequency * 10);
        period * 9 + self.foca.suspect_to_down_after + spread
    }

    /// Checks the rules foca relies on; consumes and returns the config.
    pub fn validate(self) -> Result<Self, GossipError> {
        let f = &self.foca;
        if f.probe_rtt >= f.probe_period {
            return Err(GossipError::InvalidConfig(format!(
                "probe_rtt ({:?}) must be shorter than probe_period ({:?}); raise probe_period",
                f.probe_rtt, f.probe_period
            )));
        }
        if f.probe_rtt.is_zero() || f.suspect_to_down_after.is_zero() {
            return Err(GossipError::InvalidConfig(
                "probe_rtt and suspect_to_down_after must be non-zero".into(),
            ));
        }
        if f.max_packet_size.get() + OVERHEAD > MAX_DATAGRAM {
            return Err(GossipError::InvalidConfig(format!(
                "foca.max_packet_size {} + {OVERHEAD} bytes of encryption exceeds the {MAX_DATAGRAM}-byte datagram limit; use at most {}",
                f.max_packet_size,
                MAX_DATAGRAM - OVERHEAD
            )));
        }
        if self.state_resync_every.is_zero() {
            return Err(GossipError::InvalidConfig(
                "state_resync_every must be non-zero (e.g. 5s)".into(),
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fit_encrypted_datagrams_and_validate() {
        for c in [GossipConfig::lan(20), GossipConfig::wan(20)] {
            assert!(c.foca.max_packet_size.get() + OVERHEAD <= MAX_DATAGRAM);
            c.validate().unwrap();
        }
    }

    #[test]
    fn validate_rejects_probe_rtt_not_below_period() {
        let mut c = GossipConfig::lan(5);
        c.foca.probe_rtt = c.foca.probe_period;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("probe_rtt"), "{err}");
    }

    #[test]
    fn validate_rejects_packets_too_big_for_encryption() {
        let mut c = GossipConfig::lan(5);
        c.foca.max_packet_size = NonZeroUsize::new(1400).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_packet_size")
        );
    }

    #[test]
    fn wan_waits_longer_than_lan_before_declaring_down() {
        let (l, w) = (GossipConfig::lan(20), GossipConfig::wan(20));
        assert!(w.foca.suspect_to_down_after > l.foca.suspect_to_down_after);
        assert!(w.failure_detection_bound() > l.failure_detection_bound());
        // WAN probe RTT covers a 100 ms round trip many times over
        assert!(w.foca.probe_rtt >= Duration::from_millis(100) * 10);
    }
}
