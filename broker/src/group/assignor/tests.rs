//! Assignors against Kafka's documented examples, and the ConsumerProtocol bytes.

use proptest::prelude::*;

use super::*;

fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, Subscription> {
    members
        .iter()
        .map(|(m, topics)| (m.to_string(), Subscription::new(topics.iter().copied())))
        .collect()
}

fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
    topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// `member → ["t0p0", ...]` for compact expectations.
fn names(result: &BTreeMap<String, Assignment>) -> BTreeMap<String, Vec<String>> {
    result
        .iter()
        .map(|(m, a)| {
            (
                m.clone(),
                a.partitions
                    .iter()
                    .map(|tp| format!("{}p{}", tp.topic, tp.partition))
                    .collect(),
            )
        })
        .collect()
}

fn expect(rows: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    rows.iter()
        .map(|(m, ps)| (m.to_string(), ps.iter().map(|p| p.to_string()).collect()))
        .collect()
}

#[test]
fn range_matches_kafka_javadoc_example() {
    // RangeAssignor javadoc: t0, t1 with 3 partitions each; C0 and C1 subscribe to both.
    let result = RangeAssignor.assign(
        &counts(&[("t0", 3), ("t1", 3)]),
        &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
    );
    assert_eq!(
        names(&result),
        expect(&[
            ("C0", &["t0p0", "t0p1", "t1p0", "t1p1"]),
            ("C1", &["t0p2", "t1p2"])
        ])
    );
}

#[test]
fn range_gives_the_extra_partitions_to_the_first_members_per_topic() {
    let result = RangeAssignor.assign(
        &counts(&[("t", 7)]),
        &subs(&[("c", &["t"]), ("a", &["t"]), ("b", &["t"])]),
    );
    assert_eq!(
        names(&result),
        expect(&[
            ("a", &["tp0", "tp1", "tp2"]),
            ("b", &["tp3", "tp4"]),
            ("c", &["tp5", "tp6"])
        ])
    );
}

#[test]
fn roundrobin_matches_kafka_javadoc_examples() {
    // Same subscriptions: t0, t1 with 3 partitions, C0 and C1 subscribe to both.
    let result = RoundRobinAssignor.assign(
        &counts(&[("t0", 3), ("t1", 3)]),
        &subs(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]),
    );
    assert_eq!(
        names(&result),
        expect(&[
            ("C0", &["t0p0", "t0p2", "t1p1"]),
            ("C1", &["t0p1", "t1p0", "t1p2"])
        ])
    );
    // Different subscriptions: t0 (1 partition), t1 (2), t2 (3); C0: t0; C1: t0, t1;
    // C2: t0, t1, t2.
    let result = RoundRobinAssignor.assign(
        &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]),
        &subs(&[
            ("C0", &["t0"]),
            ("C1", &["t0", "t1"]),
            ("C2", &["t0", "t1", "t2"]),
        ]),
    );
    assert_eq!(
        names(&result),
        expect(&[
            ("C0", &["t0p0"]),
            ("C1", &["t1p0"]),
            ("C2", &["t1p1", "t2p0", "t2p1", "t2p2"])
        ])
    );
}

#[test]
fn topics_without_metadata_are_skipped_and_every_member_gets_an_entry() {
    for assignor in [&RangeAssignor as &dyn Assignor, &RoundRobinAssignor] {
        let result = assignor.assign(
            &counts(&[("known", 2)]),
            &subs(&[("a", &["known"]), ("b", &["missing"])]),
        );
        assert_eq!(
            names(&result),
            expect(&[("a", &["knownp0", "knownp1"]), ("b", &[])]),
            "{}",
            assignor.name()
        );
    }
    assert_eq!(assignor_by_name("range").map(|a| a.name()), Some("range"));
    assert_eq!(
        assignor_by_name("roundrobin").map(|a| a.name()),
        Some("roundrobin")
    );
    assert!(assignor_by_name("sticky").is_none());
}

#[test]
fn version_0_bytes_are_kafkas_consumer_protocol_bytes() {
    let sub = Subscription::new(["t0"]).encode(0).expect("encode");
    let expected: &[u8] = &[
        0, 0, // version
        0, 0, 0, 1, 0, 2, b't', b'0', // topics
        0xff, 0xff, 0xff, 0xff, // null user data
    ];
    assert_eq!(&sub[..], expected);
    let assignment = Assignment {
        partitions: vec![TopicPartition::new("t0", 0), TopicPartition::new("t0", 1)],
        user_data: None,
    };
    let bytes = assignment.encode(0).expect("encode");
    let expected: &[u8] = &[
        0, 0, // version
        0, 0, 0, 1, 0, 2, b't', b'0', // one topic
        0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, // partitions 0, 1
        0xff, 0xff, 0xff, 0xff, // null user data
    ];
    assert_eq!(&bytes[..], expected);
    assert_eq!(Assignment::decode(&bytes).expect("decode"), assignment);
}

#[test]
fn subscriptions_round_trip_and_version_0_drops_owned_partitions() {
    let sub = Subscription {
        topics: vec!["orders".into(), "audit".into()],
        user_data: Some(Bytes::from_static(b"hint")),
        owned_partitions: vec![TopicPartition::new("orders", 2)],
        group_instance_id: None,
    };
    for version in 1..=3 {
        let bytes = sub.encode(version).expect("encode");
        assert_eq!(
            Subscription::decode(&bytes).expect("decode"),
            sub,
            "v{version}"
        );
    }
    let v0 = Subscription::decode(&sub.encode(0).expect("encode")).expect("decode");
    assert!(v0.owned_partitions.is_empty());
    assert_eq!(v0.topics, sub.topics);
    // A newer client's version reads as the newest we know (fields are only appended).
    let mut newer = sub.encode(3).expect("encode").to_vec();
    newer[1] = 9;
    assert_eq!(Subscription::decode(&newer).expect("decode"), sub);
}

#[test]
fn malformed_consumer_protocol_bytes_are_refused_with_a_reason() {
    let err = Subscription::decode(&[0]).expect_err("too short");
    assert!(err.to_string().contains("too short"), "{err}");
    let err = Subscription::decode(&[0, 0, 0, 0, 0, 5, 0]).expect_err("truncated");
    assert!(err.to_string().contains("malformed"), "{err}");
    let err = Assignment::decode(&[0xff, 0xff]).expect_err("negative version");
    assert!(err.to_string().contains("negative"), "{err}");
    assert!(Subscription::default().encode(4).is_err());
    assert_eq!(
        Assignment::decode(&[]).expect("empty"),
        Assignment::default()
    );
}

#[test]
fn assign_group_decodes_subscriptions_and_encodes_assignments() {
    let members: Vec<JoinMember> = ["m1", "m2"]
        .iter()
        .map(|m| JoinMember {
            member_id: m.to_string(),
            group_instance_id: None,
            metadata: Subscription::new(["t"]).encode(1).expect("encode"),
        })
        .collect();
    let plan = assign_group(&RangeAssignor, &members, &counts(&[("t", 3)])).expect("assign");
    let decoded: Vec<(String, Vec<i32>)> = plan
        .iter()
        .map(|(m, b)| {
            let a = Assignment::decode(b).expect("decode");
            (
                m.clone(),
                a.partitions.iter().map(|tp| tp.partition).collect(),
            )
        })
        .collect();
    assert_eq!(
        decoded,
        vec![("m1".to_string(), vec![0, 1]), ("m2".to_string(), vec![2])]
    );
    let bad = [JoinMember {
        member_id: "m3".into(),
        group_instance_id: None,
        metadata: Bytes::from_static(&[1]),
    }];
    let err = assign_group(&RangeAssignor, &bad, &counts(&[])).expect_err("bad metadata");
    assert!(err.to_string().contains("\"m3\""), "{err}");
}

fn scenario() -> impl Strategy<Value = (BTreeMap<String, i32>, BTreeMap<String, Subscription>)> {
    let topics = proptest::collection::btree_map("t[0-4]", 0..8i32, 1..5);
    topics.prop_flat_map(|topics| {
        let mut names: Vec<String> = topics.keys().cloned().collect();
        names.push("unknown".to_string());
        let most = names.len().min(3);
        let subscription =
            proptest::sample::subsequence(names, 0..=most).prop_map(Subscription::new);
        let members = proptest::collection::btree_map("[a-f][0-9]", subscription, 1..7);
        (Just(topics), members)
    })
}

proptest! {
    #[test]
    fn assignors_assign_every_subscribed_partition_exactly_once((topics, members) in scenario()) {
        for assignor in [&RangeAssignor as &dyn Assignor, &RoundRobinAssignor] {
            let result = assignor.assign(&topics, &members);
            prop_assert_eq!(result.len(), members.len());
            let mut seen = BTreeSet::new();
            for (member, assignment) in &result {
                for tp in &assignment.partitions {
                    prop_assert!(members[member].topics.contains(&tp.topic), "{} got {:?} unsubscribed", member, tp);
                    prop_assert!(seen.insert(tp.clone()), "{:?} assigned twice by {}", tp, assignor.name());
                }
            }
            let wanted: BTreeSet<TopicPartition> = members
                .values()
                .flat_map(|s| s.topics.iter())
                .filter_map(|t| topics.get(t).map(|n| (t, *n)))
                .flat_map(|(t, n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
                .collect();
            prop_assert_eq!(seen, wanted);
        }
    }
}

#[test]
fn static_members_come_first_in_instance_id_order_as_in_kafka() {
    let mut members = subs(&[("a", &["t"]), ("m", &["t"]), ("z", &["t"])]);
    members.get_mut("z").unwrap().group_instance_id = Some("i-1".to_string());
    members.get_mut("m").unwrap().group_instance_id = Some("i-0".to_string());
    let expected = expect(&[("a", &["tp2"]), ("m", &["tp0"]), ("z", &["tp1"])]);
    let counts = counts(&[("t", 3)]);
    assert_eq!(names(&RangeAssignor.assign(&counts, &members)), expected);
    assert_eq!(
        names(&RoundRobinAssignor.assign(&counts, &members)),
        expected
    );
}
