//! Examples, node views and read errors through the public API, on real files.

use std::path::{Path, PathBuf};

use topology::{Role, TopologyError, load, parse};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn every_example_serialises_and_parses_back_equal() {
    for name in ["dr-active-passive", "active-active", "hub-and-spoke"] {
        let path = examples_dir().join(format!("{name}.toml"));
        let t = load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = parse(&t.to_toml(), &path).unwrap();
        assert_eq!(again, t, "{name}");
    }
}

#[test]
fn broken_example_reports_at_least_five_kinds_of_problem() {
    let err = load(&examples_dir().join("broken.toml")).unwrap_err();
    let TopologyError::Invalid { problems } = err else {
        panic!("expected Invalid, got {err}");
    };
    for fragment in [
        "unknown field `replicas`",
        "invalid duration \"7 fortnights\"",
        "broker id 1",
        "is above the 1 broker(s) of region \"us-east\"",
        "address 127.0.1.1:9100",
        "flow target region \"ap-south\" does not exist",
    ] {
        assert!(
            problems.iter().any(|p| p.message.contains(fragment)),
            "missing {fragment:?} in {problems:#?}"
        );
    }
}

#[test]
fn missing_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, TopologyError::Read { .. }));
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn broker_view_has_its_peers_quorum_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.toml");
    std::fs::copy(examples_dir().join("active-active.toml"), &path).unwrap();
    let t = load(&path).unwrap();
    let view = t.node("eu-west/b2").unwrap();
    assert_eq!(view.role, Role::Broker);
    assert_eq!(view.broker_id, Some(202));
    assert_eq!(view.grpc_addr, Some("127.0.2.2:9090".parse().unwrap()));
    assert_eq!(view.data_dir, Some(dir.path().join("data/eu-west/b2")));
    let peers: Vec<&str> = view
        .region_brokers
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(peers, ["b1", "b2", "b3"]);
    assert_eq!(view.controller_quorum.len(), 3);
    assert_eq!(
        view.gossip_seeds.len(),
        4,
        "3 brokers and the mirror by default"
    );
    assert!(view.flows_served.is_empty());
    assert_eq!(view.tls.ca, dir.path().join("tls/ca.pem"));
    assert_eq!(view.tls.cert, dir.path().join("tls/eu-west/b2/cert.pem"));
    assert_eq!(view.tls.key, dir.path().join("tls/eu-west/b2/key.pem"));
    assert_eq!(view.gossip.keyring.len(), 1);
}

#[test]
fn mirror_view_serves_the_flows_into_its_region() {
    let t = load(&examples_dir().join("hub-and-spoke.toml")).unwrap();
    let view = t.node("hub/m1").unwrap();
    assert_eq!(view.role, Role::Mirror);
    assert_eq!(view.broker_id, None);
    assert_eq!(view.data_dir, None);
    let sources: Vec<&str> = view
        .flows_served
        .iter()
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(sources, ["spoke-a", "spoke-b"]);
    assert_eq!(view.source_brokers["spoke-b"].len(), 3);
    assert_eq!(
        view.source_brokers["spoke-b"][0].grpc_addr,
        "127.0.3.1:9090".parse().unwrap()
    );
    assert_eq!(t.remote_topic_name("spoke-a", "orders"), "spoke-a.orders");
}

#[test]
fn unknown_node_lists_the_valid_names() {
    let t = load(&examples_dir().join("dr-active-passive.toml")).unwrap();
    for spec in ["eu-west/b9", "mars/b1", "b1"] {
        let err = t.node(spec).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TopologyError::UnknownNode { .. }));
        assert!(
            text.contains("us-east/b1") && text.contains("eu-west/m1"),
            "{text}"
        );
    }
    assert!(
        t.node("b1")
            .unwrap_err()
            .to_string()
            .contains("REGION/NAME")
    );
}

#[test]
fn shown_view_never_prints_gossip_keys() {
    let path = examples_dir().join("active-active.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("keyring = [\""))
        .and_then(|l| l.split('"').next())
        .unwrap()
        .to_owned();
    let shown = load(&path).unwrap().node("us-east/m1").unwrap().to_toml();
    assert!(!shown.contains(&key), "{shown}");
    assert!(shown.contains("redacted"));
    assert!(format!("{:?}", load(&path).unwrap()).contains("redacted"));
}
