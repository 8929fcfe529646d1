//! Scenarios: a named, seeded schedule of faults. The seed picks targets, order and
//! timings, so `--scenario NAME --seed N` replays the same run.

use std::time::Duration;

use crate::error::ChaosError;
use crate::rng::SeededRng;

/// Which process a fault hits, resolved from live metadata when the fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The current leader of this partition of the workload topic.
    LeaderOf(i32),
    /// A current follower of this partition.
    FollowerOf(i32),
    /// The broker that is the region's active controller.
    Controller,
    /// The mirror worker of the target region (it copies the workload topic).
    MirrorWorker,
    /// The leader of this partition of the remote copy in the target region.
    RemoteLeaderOf(i32),
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, stay down for a while, start again.
    KillRestart {
        /// Who.
        target: Target,
        /// How long it stays down.
        down: Duration,
    },
    /// SIGSTOP for a while, then SIGCONT.
    Stall {
        /// Who.
        target: Target,
        /// How long it stays frozen.
        stalled: Duration,
    },
    /// Freeze every follower of a partition, let the leader take writes it cannot
    /// replicate, then kill -9 the leader and thaw the followers: the case acks=all exists
    /// for (a broker that acknowledged before the high watermark loses these writes).
    StallFollowersKillLeader {
        /// Which partition.
        partition: i32,
        /// How long the followers stay frozen before the leader dies.
        stalled: Duration,
    },
    /// The link between the two regions cut both ways (iptables DROP), then healed.
    RegionCut {
        /// How long it stays cut.
        lasting: Duration,
    },
    /// A share of the packets between the two regions lost (TCP retransmits, slows).
    RegionLoss {
        /// Percent of packets dropped.
        percent: u8,
        /// How long.
        lasting: Duration,
    },
    /// Latency added to every TCP connection between the regions, each way (through the
    /// link proxy), with jitter on top, then removed.
    RegionLatency {
        /// Added one-way delay.
        delay: Duration,
        /// Up to this much more, per chunk.
        jitter: Duration,
        /// How long.
        lasting: Duration,
    },
    /// A share of the gossip (UDP) datagrams inside the workload region lost.
    GossipLoss {
        /// Percent of datagrams dropped.
        percent: u8,
        /// How long.
        lasting: Duration,
    },
    /// The broker's data filesystem filled to the last byte, then emptied again.
    DiskFull {
        /// Whose disk.
        target: Target,
        /// How long it stays full.
        lasting: Duration,
    },
    /// Every node's certificate issued again from the same CA while the processes run;
    /// each broker must serve its new certificate without a restart.
    CertRotation,
    /// Not a fault but the step the mirror exists for: the consumer group reading the
    /// workload topic in r1 stops, `meridian failover` moves it to r2, and it carries on
    /// there reading the remote copy. Once per run.
    Failover,
}

impl Fault {
    /// The kind as the report names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillRestart { .. } => "kill -9 + restart",
            Fault::Stall { .. } => "SIGSTOP + SIGCONT",
            Fault::StallFollowersKillLeader { .. } => "stall followers, kill -9 leader",
            Fault::RegionCut { .. } => "inter-region cut + heal",
            Fault::RegionLoss { .. } => "inter-region packet loss",
            Fault::RegionLatency { .. } => "inter-region latency + jitter",
            Fault::GossipLoss { .. } => "gossip datagram loss",
            Fault::DiskFull { .. } => "disk full",
            Fault::CertRotation => "certificate rotation",
            Fault::Failover => "group failover r1 -> r2",
        }
    }
}

/// A fault and the earliest time it fires (faults run one after another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Earliest start, from the beginning of the workload.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
}

/// A scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// The seed that built it.
    pub seed: u64,
    /// How long the workload runs.
    pub duration: Duration,
    /// The faults in order.
    pub faults: Vec<Scheduled>,
    /// Whether the run has a second region mirroring the workload topic (r1 → r2).
    pub mirrored: bool,
}

impl Scenario {
    /// Whether any step adds latency (the run then routes the link through the proxy).
    pub fn shapes_the_link(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.fault, Fault::RegionLatency { .. }))
    }

    /// Whether any step is a full disk (the run then gives r1's brokers small disks).
    pub fn fills_disks(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.fault, Fault::DiskFull { .. }))
    }
}

/// Every scenario name, for `--help` and errors.
pub const SCENARIOS: &[&str] = &["quick", "leader-kills", "stalled-followers", "soak"];

/// Partitions of the workload topic (the deployment's default).
pub const PARTITIONS: i32 = 3;

impl Scenario {
    /// Builds scenario `name` for `seed` and `duration`.
    pub fn build(name: &str, seed: u64, duration: Duration) -> Result<Self, ChaosError> {
        let mut rng = SeededRng::new(seed);
        let mut partition = || rng.below(PARTITIONS as u64) as i32;
        let faults: Vec<Fault> = match name {
            // Every fault kind once, in a seeded order.
            "quick" => {
                let mut kinds = vec![
                    Fault::KillRestart {
                        target: Target::LeaderOf(partition()),
                        down: Duration::from_secs(4),
                    },
                    Fault::KillRestart {
                        target: Target::FollowerOf(partition()),
                        down: Duration::from_secs(3),
                    },
                    Fault::KillRestart {
                        target: Target::Controller,
                        down: Duration::from_secs(3),
                    },
                    Fault::Stall {
                        target: Target::LeaderOf(partition()),
                        stalled: Duration::from_secs(5),
                    },
                    Fault::StallFollowersKillLeader {
                        partition: partition(),
                        stalled: Duration::from_secs(2),
                    },
                    Fault::KillRestart {
                        target: Target::MirrorWorker,
                        down: Duration::from_secs(3),
                    },
                    Fault::KillRestart {
                        target: Target::RemoteLeaderOf(partition()),
                        down: Duration::from_secs(3),
                    },
                    Fault::RegionCut {
                        lasting: Duration::from_secs(5),
                    },
                    Fault::RegionLoss {
                        percent: 20,
                        lasting: Duration::from_secs(5),
                    },
                    Fault::GossipLoss {
                        percent: 30,
                        lasting: Duration::from_secs(5),
                    },
                    Fault::DiskFull {
                        target: Target::LeaderOf(partition()),
                        lasting: Duration::from_secs(5),
                    },
                    Fault::RegionLatency {
                        delay: Duration::from_millis(100),
                        jitter: Duration::from_millis(50),
                        lasting: Duration::from_secs(5),
                    },
                    Fault::CertRotation,
                    Fault::Failover,
                ];
                shuffle(&mut kinds, &mut SeededRng::new(seed ^ 0x5eed));
                kinds
            }
            "leader-kills" => (0..PARTITIONS)
                .map(|p| Fault::KillRestart {
                    target: Target::LeaderOf(p),
                    down: Duration::from_secs(3),
                })
                .collect(),
            "stalled-followers" => vec![Fault::StallFollowersKillLeader {
                partition: partition(),
                stalled: Duration::from_secs(2),
            }],
            // Random faults for as long as the run lasts, one every 10-20 s.
            "soak" => {
                let mut rng = SeededRng::new(seed ^ 0x50a4);
                let count = (duration.as_secs() / 15).max(1);
                let mut faults: Vec<Fault> = (0..count)
                    .map(|_| {
                        let p = rng.below(PARTITIONS as u64) as i32;
                        let secs = Duration::from_secs(rng.between(2, 8));
                        match rng.below(13) {
                            12 => Fault::RegionLatency {
                                delay: Duration::from_millis(rng.between(20, 200)),
                                jitter: Duration::from_millis(rng.between(0, 100)),
                                lasting: secs * 2,
                            },
                            10 => Fault::CertRotation,
                            11 => Fault::DiskFull {
                                target: if rng.below(2) == 0 {
                                    Target::LeaderOf(p)
                                } else {
                                    Target::FollowerOf(p)
                                },
                                lasting: secs,
                            },
                            7 => Fault::RegionCut { lasting: secs * 3 },
                            8 => Fault::RegionLoss {
                                percent: rng.between(5, 30) as u8,
                                lasting: secs * 2,
                            },
                            9 => Fault::GossipLoss {
                                percent: rng.between(10, 40) as u8,
                                lasting: secs * 2,
                            },
                            5 => Fault::KillRestart {
                                target: Target::MirrorWorker,
                                down: secs,
                            },
                            6 => Fault::KillRestart {
                                target: Target::RemoteLeaderOf(p),
                                down: secs,
                            },
                            0 => Fault::KillRestart {
                                target: Target::LeaderOf(p),
                                down: secs,
                            },
                            1 => Fault::KillRestart {
                                target: Target::FollowerOf(p),
                                down: secs,
                            },
                            2 => Fault::KillRestart {
                                target: Target::Controller,
                                down: secs,
                            },
                            3 => Fault::Stall {
                                target: Target::LeaderOf(p),
                                stalled: secs,
                            },
                            _ => Fault::StallFollowersKillLeader {
                                partition: p,
                                stalled: Duration::from_secs(2),
                            },
                        }
                    })
                    .collect();
                // One failover, half way through.
                faults.insert(faults.len() / 2, Fault::Failover);
                faults
            }
            other => {
                return Err(ChaosError::UnknownScenario {
                    name: other.to_string(),
                    known: SCENARIOS.join(", "),
                });
            }
        };
        // Spread the faults over the run, leaving the first 10% quiet.
        let step = duration / (faults.len() as u32 + 1);
        let faults = faults
            .into_iter()
            .enumerate()
            .map(|(i, fault)| Scheduled {
                at: step * (i as u32 + 1),
                fault,
            })
            .collect();
        Ok(Self {
            mirrored: matches!(name, "quick" | "soak"),
            name: name.to_string(),
            seed,
            duration,
            faults,
        })
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut SeededRng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_has_every_fault_kind_once() {
        let s = Scenario::build("quick", 1, Duration::from_secs(60)).unwrap();
        let mut kinds: Vec<&str> = s.faults.iter().map(|f| f.fault.kind()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 10);
        assert_eq!(s.faults.len(), 14);
        assert!(s.mirrored);
        for target in [Target::MirrorWorker, Target::Controller] {
            assert!(
                s.faults.iter().any(
                    |f| matches!(f.fault, Fault::KillRestart { target: t, .. } if t == target)
                ),
                "{target:?} missing"
            );
        }
    }

    #[test]
    fn a_soak_fails_over_once() {
        let s = Scenario::build("soak", 5, Duration::from_secs(600)).unwrap();
        let failovers = s
            .faults
            .iter()
            .filter(|f| f.fault == Fault::Failover)
            .count();
        assert_eq!(failovers, 1);
    }

    #[test]
    fn a_seed_replays_and_another_seed_differs() {
        let a = Scenario::build("soak", 3, Duration::from_secs(300)).unwrap();
        let b = Scenario::build("soak", 3, Duration::from_secs(300)).unwrap();
        let c = Scenario::build("soak", 4, Duration::from_secs(300)).unwrap();
        assert_eq!(a.faults, b.faults);
        assert_ne!(a.faults, c.faults);
    }

    #[test]
    fn faults_are_spread_over_the_run_in_order() {
        let s = Scenario::build("quick", 9, Duration::from_secs(60)).unwrap();
        assert!(s.faults.windows(2).all(|w| w[0].at < w[1].at));
        assert!(s.faults.last().unwrap().at < Duration::from_secs(60));
    }

    #[test]
    fn an_unknown_scenario_names_the_known_ones() {
        let err = Scenario::build("nope", 1, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("quick"), "{err}");
    }
}
