//! One test per validation rule: each breaks one thing in a valid file and checks the
//! message and its line:column.

use std::path::Path;

use crate::{Problem, TopologyError, parse};

const KEY: &str = "Da5na0RKTnAlT5jPUa5V8JhGr+KdzeC0bPBBWUdcz14=";

/// A small valid deployment: regions "a" (1 broker) and "b" (1 broker, 1 mirror), a -> b.
fn base() -> String {
    format!(
        r#"[deployment]
name = "t"

[gossip]
keyring = ["{KEY}"]

[topic_defaults]
replication_factor = 1
min_insync_replicas = 1

[[regions]]
name = "a"

[[regions.brokers]]
name = "b1"
id = 1
grpc = "127.0.1.1:9090"
gossip = "127.0.1.1:7946"
metrics = "127.0.1.1:9100"
data_dir = "data/a/b1"

[[regions]]
name = "b"

[[regions.brokers]]
name = "b1"
id = 2
grpc = "127.0.2.1:9090"
gossip = "127.0.2.1:7946"
metrics = "127.0.2.1:9100"
data_dir = "data/b/b1"

[[regions.mirrors]]
name = "m1"
gossip = "127.0.2.10:7946"
metrics = "127.0.2.10:9100"

[[flows]]
source = "a"
target = "b"
"#
    )
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, Path::new("/deploy/t.toml")) {
        Ok(_) => panic!("expected problems, the file parsed:\n{text}"),
        Err(TopologyError::Invalid { problems }) => problems,
        Err(other) => panic!("expected Invalid, got {other}"),
    }
}

/// 1-based line:col of the `nth` (0-based) occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in text"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

/// Asserts exactly one problem whose message contains every fragment, at `at`.
#[track_caller]
fn assert_one(text: &str, at: (usize, usize), fragments: &[&str]) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    assert_has(&found, at, fragments);
}

#[track_caller]
fn assert_has(found: &[Problem], at: (usize, usize), fragments: &[&str]) {
    let hit = found
        .iter()
        .any(|p| (p.line, p.column) == at && fragments.iter().all(|f| p.message.contains(f)));
    assert!(
        hit,
        "no problem at {}:{} containing {fragments:?}; got:\n{}",
        at.0,
        at.1,
        found
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(found.iter().all(|p| p.file == Path::new("/deploy/t.toml")));
}

#[test]
fn base_file_is_valid() {
    let t = parse(&base(), Path::new("/deploy/t.toml")).unwrap();
    assert_eq!(t.regions().len(), 2);
    assert_eq!(t.flows().len(), 1);
}

#[test]
fn rejects_unknown_keys_and_still_reports_other_problems() {
    let text = base()
        .replace("name = \"t\"", "name = \"t\"\nnmae = \"x\"")
        .replace("id = 2", "id = 2\nport = 1")
        .replace("id = 1", "id = 0");
    let text = text.replace("replication_factor = 1", "replication_factor = 0");
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_has(
        &found,
        pos(&text, "nmae", 0),
        &["unknown field `nmae`", "spelling"],
    );
    assert_has(&found, pos(&text, "port", 0), &["unknown field `port`"]);
    assert_has(
        &found,
        pos(&text, "0\nmin_insync", 0),
        &["replication_factor = 0"],
    );
}

#[test]
fn rejects_wrong_types() {
    let text = base().replace("id = 2", "id = \"two\"");
    assert_one(
        &text,
        pos(&text, "\"two\"", 0),
        &["invalid type", "expected i64"],
    );
}

#[test]
fn rejects_toml_syntax_errors() {
    let text = base().replace("id = 2", "id = = 2");
    let found = problems(&text);
    assert!(
        found
            .iter()
            .all(|p| p.message.starts_with("TOML syntax error"))
    );
    assert_eq!(found[0].line, pos(&text, "id = =", 0).0);
}

#[test]
fn rejects_duplicate_region_names() {
    let text = base()
        .replace("name = \"b\"", "name = \"a\"")
        .replace("target = \"b\"", "target = \"c\"");
    let found = problems(&text);
    assert_has(
        &found,
        pos(&text, "\"a\"", 1),
        &["region \"a\" is defined twice", "line 12"],
    );
}

#[test]
fn rejects_duplicate_node_names_within_a_region() {
    let text = base().replace("name = \"m1\"", "name = \"b1\"");
    assert_one(
        &text,
        pos(&text, "\"b1\"", 2),
        &[
            "node name \"b1\" is used twice in region \"b\"",
            "share one namespace",
        ],
    );
}

#[test]
fn rejects_duplicate_broker_ids() {
    let text = base().replace("id = 2", "id = 1");
    assert_one(
        &text,
        pos(&text, "1\ngrpc = \"127.0.2.1", 0),
        &["broker id 1 of b/b1 is already used by a/b1", "unique"],
    );
}

#[test]
fn rejects_address_collisions() {
    let text = base().replace("127.0.2.10:9100", "127.0.1.1:9090");
    assert_one(
        &text,
        pos(&text, "\"127.0.1.1:9090\"", 1),
        &[
            "address 127.0.1.1:9090 of b/m1 metrics is already used by a/b1 grpc",
            "own address",
        ],
    );
}

#[test]
fn rejects_addresses_that_are_not_ip_and_port() {
    let text = base().replace("127.0.2.10:9100", "localhost:9100");
    assert_one(
        &text,
        pos(&text, "\"localhost", 0),
        &["\"localhost:9100\" is not IP:PORT"],
    );
}

#[test]
fn rejects_flow_to_unknown_region() {
    let text = base().replace("target = \"b\"", "target = \"zz\"");
    assert_one(
        &text,
        pos(&text, "\"zz\"", 0),
        &["flow target region \"zz\" does not exist", "a, b"],
    );
}

#[test]
fn rejects_flow_from_unknown_region() {
    let text = base().replace("source = \"a\"", "source = \"zz\"");
    assert_one(
        &text,
        pos(&text, "\"zz\"", 0),
        &["flow source region \"zz\" does not exist"],
    );
}

#[test]
fn rejects_flow_whose_source_is_its_target() {
    let text = base().replace("source = \"a\"", "source = \"b\"");
    assert_one(
        &text,
        pos(&text, "\"b\"", 2),
        &["flow from \"b\" to itself"],
    );
}

#[test]
fn rejects_duplicate_flows() {
    let text = format!("{}\n[[flows]]\nsource = \"a\"\ntarget = \"b\"\n", base());
    let second = pos(&text, "[[flows]]", 1);
    assert_one(&text, second, &["flow a -> b is defined twice", "merge"]);
}

#[test]
fn rejects_invalid_regexes() {
    let text = format!("{}topics = {{ include = [\"(unclosed\"] }}\n", base());
    assert_one(
        &text,
        pos(&text, "\"(unclosed\"", 0),
        &["topics.include regex \"(unclosed\" is invalid", "unclosed"],
    );
}

#[test]
fn rejects_invalid_durations() {
    let text = format!("{}checkpoint_interval = \"5 parsecs\"\n", base());
    assert_one(
        &text,
        pos(&text, "\"5 parsecs\"", 0),
        &[
            "checkpoint_interval: invalid duration \"5 parsecs\"",
            "500ms",
        ],
    );
}

#[test]
fn rejects_invalid_sizes() {
    let text = base().replace(
        "min_insync_replicas = 1",
        "min_insync_replicas = 1\nsegment_bytes = \"1GB2\"",
    );
    assert_one(
        &text,
        pos(&text, "\"1GB2\"", 0),
        &["segment_bytes: invalid size \"1GB2\"", "64KiB"],
    );
}

#[test]
fn rejects_invalid_flush_policy() {
    let text = base().replace(
        "min_insync_replicas = 1",
        "min_insync_replicas = 1\nflush = \"always\"",
    );
    assert_one(
        &text,
        pos(&text, "\"always\"", 0),
        &["flush = \"always\"", "\"batch\""],
    );
}

#[test]
fn rejects_replication_factor_above_smallest_region() {
    let text = base().replace("replication_factor = 1", "replication_factor = 2");
    assert_one(
        &text,
        pos(&text, "2\nmin_insync", 0),
        &[
            "replication_factor = 2 is above the 1 broker(s) of region \"a\"",
            "lower",
        ],
    );
}

#[test]
fn rejects_default_replication_factor_above_region_naming_the_region() {
    let text = base().replace("replication_factor = 1\n", "");
    let text = text.replace("min_insync_replicas = 1\n", "");
    assert_one(
        &text,
        pos(&text, "\"a\"", 0),
        &["replication_factor = 3 (the default)", "region \"a\""],
    );
}

#[test]
fn rejects_min_insync_replicas_above_replication_factor() {
    let text = base().replace("min_insync_replicas = 1", "min_insync_replicas = 2");
    assert_one(
        &text,
        pos(&text, "2\n", 0),
        &["min_insync_replicas = 2 is above replication_factor = 1"],
    );
}

#[test]
fn rejects_zero_partitions_replication_factor_and_min_insync_replicas() {
    let text = base()
        .replace(
            "replication_factor = 1",
            "partitions = 0\nreplication_factor = 0",
        )
        .replace("min_insync_replicas = 1", "min_insync_replicas = 0");
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_has(
        &found,
        pos(&text, "0\nreplication", 0),
        &["partitions = 0", "at least one partition"],
    );
    assert_has(
        &found,
        pos(&text, "0\nmin_insync", 0),
        &["replication_factor = 0"],
    );
    assert_has(&found, pos(&text, "0\n\n", 0), &["min_insync_replicas = 0"]);
}

#[test]
fn rejects_an_empty_keyring() {
    let text = base().replace(&format!("[\"{KEY}\"]"), "[]");
    assert_one(
        &text,
        pos(&text, "[]", 0),
        &["gossip.keyring is empty", "base64"],
    );
}

#[test]
fn rejects_keys_that_are_not_base64_of_32_bytes() {
    let text = base().replace(
        &format!("[\"{KEY}\"]"),
        &format!("[\"{KEY}\", \"c2hvcnQ=\", \"!!\"]"),
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_has(
        &found,
        pos(&text, "\"c2hvcnQ=\"", 0),
        &["gossip.keyring[1]", "5 bytes, not 32"],
    );
    assert_has(
        &found,
        pos(&text, "\"!!\"", 0),
        &["gossip.keyring[2]", "not valid base64"],
    );
}

#[test]
fn rejects_tls_off_between_regions_when_flows_exist() {
    let text = base().replace(
        "[gossip]",
        "[tls.listeners]\ninter_region = \"off\"\n\n[gossip]",
    );
    assert_one(
        &text,
        pos(&text, "\"off\"", 0),
        &[
            "tls.listeners.inter_region is \"off\"",
            "1 flow(s)",
            "\"required\"",
        ],
    );
    let no_flows = text[..text.find("[[flows]]").unwrap()].to_owned();
    assert!(parse(&no_flows, Path::new("t.toml")).is_ok());
}

#[test]
fn rejects_controller_quorum_naming_an_unknown_broker() {
    let text = base().replace(
        "name = \"b\"\n",
        "name = \"b\"\ncontroller_quorum = [\"m1\"]\n",
    );
    assert_one(
        &text,
        pos(&text, "\"m1\"", 0),
        &["names \"m1\", which is a mirror worker, not a broker", "b1"],
    );
}

#[test]
fn rejects_empty_controller_quorum() {
    let text = base().replace("name = \"b\"\n", "name = \"b\"\ncontroller_quorum = []\n");
    assert_one(
        &text,
        pos(&text, "[]", 0),
        &["controller_quorum of region \"b\" is empty"],
    );
}

#[test]
fn rejects_even_sized_controller_quorum() {
    let text = base()
        .replace("name = \"b\"\n", "name = \"b\"\ncontroller_quorum = [\"b1\", \"b2\"]\n")
        .replace(
            "[[regions.mirrors]]",
            "[[regions.brokers]]\nname = \"b2\"\nid = 3\ngrpc = \"127.0.2.2:9090\"\ngossip = \"127.0.2.2:7946\"\nmetrics = \"127.0.2.2:9100\"\ndata_dir = \"data/b/b2\"\n\n[[regions.mirrors]]",
        );
    assert_one(
        &text,
        pos(&text, "[\"b1\", \"b2\"]", 0),
        &["has 2 members", "use an odd number"],
    );
}

#[test]
fn rejects_region_with_no_brokers() {
    let text = format!("{}\n[[regions]]\nname = \"empty\"\n", base());
    assert_one(
        &text,
        pos(&text, "\"empty\"", 0),
        &["region \"empty\" has no brokers", "[[regions.brokers]]"],
    );
}

#[test]
fn rejects_flow_target_without_mirror_worker() {
    let text = base().replace(
        "source = \"a\"\ntarget = \"b\"",
        "source = \"b\"\ntarget = \"a\"",
    );
    let (line, _) = pos(&text, "target = \"a\"", 0);
    assert_one(
        &text,
        (line, 10),
        &["region \"a\" has no mirror worker", "nobody would serve"],
    );
    let disabled = format!("{text}enabled = false\n");
    assert!(parse(&disabled, Path::new("t.toml")).is_ok());
}

#[test]
fn rejects_empty_names() {
    let text = base().replace("name = \"m1\"", "name = \"\"");
    assert_one(&text, pos(&text, "\"\"", 0), &["node name is empty"]);
}

#[test]
fn rejects_names_containing_a_slash() {
    let text = base().replace("name = \"m1\"", "name = \"m/1\"");
    assert_one(
        &text,
        pos(&text, "\"m/1\"", 0),
        &["contains '/'", "REGION/NAME"],
    );
}

#[test]
fn rejects_names_containing_whitespace() {
    let text = base().replace("name = \"t\"", "name = \"my deployment\"");
    assert_one(
        &text,
        pos(&text, "\"my deployment\"", 0),
        &["contains whitespace"],
    );
}

#[test]
fn rejects_region_names_containing_the_remote_topic_separator() {
    let text = base()
        .replace("name = \"a\"", "name = \"us.east\"")
        .replace("source = \"a\"", "source = \"us.east\"");
    assert_one(
        &text,
        pos(&text, "\"us.east\"", 0),
        &[
            "contains the remote-topic separator \".\"",
            "remote_topic_separator",
        ],
    );
    let other_separator = text.replace(
        "name = \"t\"",
        "name = \"t\"\nremote_topic_separator = \"_\"",
    );
    assert!(parse(&other_separator, Path::new("t.toml")).is_ok());
}

#[test]
fn rejects_an_empty_remote_topic_separator() {
    let text = base().replace(
        "name = \"t\"",
        "name = \"t\"\nremote_topic_separator = \"\"",
    );
    assert_one(
        &text,
        pos(&text, "\"\"", 0),
        &["remote_topic_separator is empty"],
    );
}

#[test]
fn rejects_brokers_sharing_a_data_dir() {
    let text = base().replace("data/b/b1", "data/a/b1");
    assert_one(
        &text,
        pos(&text, "\"data/a/b1\"", 1),
        &["data_dir \"data/a/b1\" of b/b1 is also used by a/b1"],
    );
}

#[test]
fn rejects_cert_without_key() {
    let text = base().replace(
        "data_dir = \"data/b/b1\"",
        "data_dir = \"data/b/b1\"\ncert = \"b1.pem\"",
    );
    assert_one(
        &text,
        pos(&text, "\"b1.pem\"", 0),
        &["only one of cert and key"],
    );
}

#[test]
fn rejects_a_deployment_without_regions() {
    let text = format!("[deployment]\nname = \"t\"\n\n[gossip]\nkeyring = [\"{KEY}\"]\n");
    assert_one(&text, (1, 1), &["no regions"]);
}

#[test]
fn rejects_missing_required_keys() {
    let text = base().replace("id = 2\n", "");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].message.contains("missing field `id`"),
        "{found:#?}"
    );
}

#[test]
fn problems_are_listed_in_file_order_and_all_at_once() {
    let text = base()
        .replace("target = \"b\"", "target = \"zz\"")
        .replace("id = 2", "id = 1")
        .replace(&format!("[\"{KEY}\"]"), "[]");
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    let lines: Vec<usize> = found.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn rejects_zero_durations_where_they_make_no_sense() {
    let text = base().replace(
        "min_insync_replicas = 1",
        "min_insync_replicas = 1\nretention_time = \"0s\"\nsegment_age = \"0ms\"\nflush = \"0s\"",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_has(
        &found,
        pos(&text, "\"0s\"", 0),
        &["retention_time is 0", "forever"],
    );
    assert_has(&found, pos(&text, "\"0ms\"", 0), &["segment_age is 0"]);
    assert_has(
        &found,
        pos(&text, "\"0s\"", 1),
        &["flush interval is 0", "\"batch\""],
    );
}

#[test]
fn rejects_max_message_bytes_above_segment_bytes() {
    let text = base().replace(
        "min_insync_replicas = 1",
        "min_insync_replicas = 1\nsegment_bytes = \"1MiB\"\nmax_message_bytes = \"2MiB\"",
    );
    assert_one(
        &text,
        pos(&text, "\"2MiB\"", 0),
        &["max_message_bytes (2MiB) is above segment_bytes (1MiB)"],
    );
}

#[test]
fn cluster_timing_is_read_and_defaults_when_absent() {
    let t = parse(&base(), Path::new("/deploy/t.toml")).unwrap();
    assert_eq!(t.cluster, crate::ClusterSettings::default());
    let text = base().replace(
        "[[regions]]\nname = \"a\"",
        "[cluster]\nsession_timeout = \"1500ms\"\nreplica_lag_max = \"2s\"\n\n[[regions]]\nname = \"a\"",
    );
    let t = parse(&text, Path::new("/deploy/t.toml")).unwrap();
    assert_eq!(
        t.cluster.session_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(t.cluster.replica_lag_max, std::time::Duration::from_secs(2));
    assert_eq!(
        t.node("a/b1").unwrap().cluster.session_timeout,
        std::time::Duration::from_millis(1500),
        "brokers see the cluster timing in their view"
    );
    let again = parse(&t.to_toml(), Path::new("/deploy/t.toml")).unwrap();
    assert_eq!(again.cluster, t.cluster, "round-trips through to_toml");
}

#[test]
fn rejects_cluster_timing_that_would_fence_or_drop_everyone() {
    let text = base().replace(
        "[[regions]]\nname = \"a\"",
        "[cluster]\nsession_timeout = \"10ms\"\n\n[[regions]]\nname = \"a\"",
    );
    assert_one(
        &text,
        pos(&text, "\"10ms\"", 0),
        &["cluster.session_timeout", "below 100ms"],
    );
    let text = base().replace(
        "[[regions]]\nname = \"a\"",
        "[cluster]\nreplica_lag_max = \"0s\"\n\n[[regions]]\nname = \"a\"",
    );
    assert_one(
        &text,
        pos(&text, "\"0s\"", 0),
        &["cluster.replica_lag_max is 0"],
    );
    let text = base().replace(
        "[[regions]]\nname = \"a\"",
        "[cluster]\nreplica_lag_max = \"soon\"\n\n[[regions]]\nname = \"a\"",
    );
    assert_one(
        &text,
        pos(&text, "\"soon\"", 0),
        &["cluster.replica_lag_max"],
    );
}
