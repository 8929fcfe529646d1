//! Property: any structurally valid topology serialises with `to_toml` and parses back
//! equal, so files written by `meridian dev` (or edited by tools) lose nothing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use topology::{
    Broker, Deployment, Filter, Flow, FlushPolicy, Gossip, GossipKey, GossipProfile, Mirror,
    Region, Tls, TlsListeners, TlsMode, TopicDefaults, Topology, parse,
};

fn addr(region: usize, node: usize, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(127, 0, region as u8 + 1, node as u8 + 1),
        port,
    ))
}

fn mode() -> impl Strategy<Value = TlsMode> {
    prop_oneof![
        Just(TlsMode::Required),
        Just(TlsMode::Optional),
        Just(TlsMode::Off)
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..10_000_000_000).prop_map(Duration::from_millis),
        (1u64..1_000).prop_map(|d| Duration::from_secs(d * 86_400)),
        (1u64..1_000_000).prop_map(Duration::from_micros),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..1 << 40,
        (1u64..1024).prop_map(|n| n << 30),
        (1u64..1000).prop_map(|n| n * 1_000_000),
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    let pattern = prop::sample::select(vec![".*", "^orders$", "^__.*", "metrics\\..+", "[a-z]+"]);
    (
        prop::collection::vec(pattern.clone(), 0..3),
        prop::collection::vec(pattern, 0..3),
    )
        .prop_map(|(include, exclude)| Filter {
            include: include.into_iter().map(str::to_owned).collect(),
            exclude: exclude.into_iter().map(str::to_owned).collect(),
        })
}

#[derive(Debug, Clone)]
struct RegionShape {
    suffix: String,
    brokers: usize,
    kafka: bool,
    mirror: bool,
    certs: bool,
}

fn region_shape() -> impl Strategy<Value = RegionShape> {
    (
        "[a-z]{0,4}",
        1usize..=4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(suffix, brokers, kafka, mirror, certs)| RegionShape {
            suffix,
            brokers,
            kafka,
            mirror,
            certs,
        })
}

fn topology() -> impl Strategy<Value = Topology> {
    prop::collection::vec(region_shape(), 1..=3)
        .prop_flat_map(|shapes| {
            let min_brokers = shapes.iter().map(|s| s.brokers).min().unwrap_or(1) as u16;
            let pairs: Vec<(usize, usize)> = (0..shapes.len())
                .flat_map(|i| (0..shapes.len()).map(move |j| (i, j)))
                .filter(|(i, j)| i != j)
                .collect();
            let flows = prop::collection::vec(
                (
                    any::<bool>(),
                    filter(),
                    filter(),
                    any::<bool>(),
                    duration(),
                    any::<bool>(),
                ),
                pairs.len(),
            );
            let defaults = (1u16..=min_brokers).prop_flat_map(|rf| {
                (
                    1u32..10_000,
                    Just(rf),
                    1u16..=rf,
                    prop::option::of(duration()),
                    prop::option::of(size()),
                    (size(), duration()),
                    prop_oneof![
                        Just(FlushPolicy::EveryBatch),
                        Just(FlushPolicy::Never),
                        duration().prop_map(FlushPolicy::Interval)
                    ],
                    size(),
                    any::<bool>(),
                )
            });
            (
                Just(shapes),
                Just(pairs),
                flows,
                defaults,
                (mode(), mode(), mode(), mode(), mode()),
                prop::collection::vec(any::<[u8; 32]>(), 1..=3),
                (any::<bool>(), prop::option::of("[a-z]{1,6}\\.pem")),
                prop::sample::select(vec![".", "_", "-", ".."]),
                1u16..1000,
            )
        })
        .prop_map(
            |(shapes, pairs, flow_bits, d, modes, keys, (wan, ca), separator, port_base)| {
                let regions: Vec<Region> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| build_region(i, s, port_base))
                    .collect();
                let flows: Vec<Flow> = pairs
                    .iter()
                    .zip(flow_bits)
                    .filter(|(_, bits)| bits.0)
                    .map(
                        |(&(i, j), (_, topics, groups, sync, interval, enabled))| Flow {
                            source: regions[i].name.clone(),
                            target: regions[j].name.clone(),
                            // A region without a mirror worker can only be the target of a
                            // disabled flow.
                            enabled: enabled && shapes[j].mirror,
                            topics,
                            groups,
                            sync_group_offsets: sync,
                            checkpoint_interval: interval,
                            delete_remote_topics: false,
                        },
                    )
                    .collect();
                let (
                    partitions,
                    rf,
                    isr,
                    retention_time,
                    retention_bytes,
                    (seg, age),
                    flush,
                    max,
                    auto,
                ) = d;
                let inter_region = if !flows.is_empty() && modes.2 == TlsMode::Off {
                    TlsMode::Required
                } else {
                    modes.2
                };
                Topology {
                    deployment: Deployment {
                        name: "prop".to_owned(),
                        remote_topic_separator: separator.to_owned(),
                    },
                    tls: Tls {
                        dir: PathBuf::from("tls"),
                        ca: ca.map(PathBuf::from),
                        listeners: TlsListeners {
                            client: modes.0,
                            inter_broker: modes.1,
                            inter_region,
                            kafka: modes.3,
                            metrics: modes.4,
                        },
                    },
                    gossip: Gossip {
                        keyring: keys.into_iter().map(GossipKey).collect(),
                        profile: if wan {
                            GossipProfile::Wan
                        } else {
                            GossipProfile::Lan
                        },
                    },
                    cluster: Default::default(),
                    topic_defaults: TopicDefaults {
                        partitions,
                        replication_factor: rf,
                        min_insync_replicas: isr,
                        retention_time,
                        retention_bytes,
                        segment_bytes: seg.max(max),
                        segment_age: age,
                        flush,
                        max_message_bytes: max.min(seg),
                        auto_create_topics: auto,
                    },
                    regions,
                    flows,
                    // Both ACL shapes (literal allow, prefixed deny), picked by a drawn bit.
                    acls: vec![if wan {
                        topology::Acl {
                            principal: "*".to_owned(),
                            actions: vec!["produce".to_owned(), "consume".to_owned()],
                            resource: Some("orders".to_owned()),
                            resource_prefix: None,
                            permission: "allow".to_owned(),
                        }
                    } else {
                        topology::Acl {
                            principal: "meridian://r0/client/app".to_owned(),
                            actions: vec!["group-read".to_owned()],
                            resource: None,
                            resource_prefix: Some("billing.".to_owned()),
                            permission: "deny".to_owned(),
                        }
                    }],
                    base_dir: PathBuf::from("/deploy"),
                }
            },
        )
}

fn build_region(i: usize, s: &RegionShape, port_base: u16) -> Region {
    let name = format!("r{i}{}", s.suffix);
    let brokers: Vec<Broker> = (0..s.brokers)
        .map(|j| Broker {
            name: format!("b{j}"),
            id: (i * 10 + j) as u64,
            grpc: addr(i, j, port_base),
            kafka: s.kafka.then(|| addr(i, j, port_base + 1)),
            gossip: addr(i, j, port_base + 2),
            metrics: addr(i, j, port_base + 3),
            data_dir: PathBuf::from(format!("data/{name}/b{j}")),
            cert: s
                .certs
                .then(|| PathBuf::from(format!("/pki/{name}-b{j}.pem"))),
            key: s
                .certs
                .then(|| PathBuf::from(format!("/pki/{name}-b{j}.key"))),
        })
        .collect();
    let mirrors: Vec<Mirror> = if s.mirror {
        vec![Mirror {
            name: "m1".to_owned(),
            gossip: addr(i, 100, port_base + 2),
            metrics: addr(i, 100, port_base + 3),
            cert: None,
            key: None,
        }]
    } else {
        Vec::new()
    };
    let odd = if s.brokers % 2 == 1 {
        s.brokers
    } else {
        s.brokers - 1
    };
    Region {
        controller_quorum: brokers.iter().take(odd).map(|b| b.name.clone()).collect(),
        gossip_seeds: vec![brokers[0].gossip],
        name,
        brokers,
        mirrors,
    }
}

proptest! {
    // Failures print the minimal topology and its TOML; nothing to persist next to a
    // lib.rs that integration tests do not have.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_topology_round_trips_through_to_toml(t in topology()) {
        let text = t.to_toml();
        let parsed = parse(&text, Path::new("/deploy/t.toml"));
        match parsed {
            Ok(back) => prop_assert_eq!(back, t),
            Err(err) => prop_assert!(false, "to_toml wrote an invalid file: {}\n{}", err, text),
        }
    }
}
