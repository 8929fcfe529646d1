//! The ops assets in deploy/ stay true to the metrics contract: the Grafana dashboard is
//! valid JSON with unique panel ids, and every `meridian_` metric the dashboard or the
//! alert rules query is one docs/metrics.md documents (so a renamed metric cannot leave a
//! dashboard panel or an alert silently empty). promtool checks the rules' syntax and
//! unit tests in CI (.ci/run).

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `meridian_...` identifier in `text`, with histogram suffixes folded into the
/// family name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("meridian_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        at = end;
    }
    names
}

fn documented() -> BTreeSet<String> {
    metric_names(&read("docs/metrics.md"))
}

#[test]
fn the_dashboard_is_valid_and_queries_only_documented_metrics() {
    let text = read("deploy/grafana/meridian-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = String::new();
    for panel in panels {
        let id = panel["id"].as_i64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        assert!(panel["gridPos"].is_object(), "panel {id} has no gridPos");
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    assert!(
        panels.len() >= 20,
        "a dashboard worth opening: {} panels",
        panels.len()
    );
    let used = metric_names(&exprs);
    let documented = documented();
    let missing: Vec<_> = used.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries undocumented metrics: {missing:?}"
    );
    for needed in [
        "meridian_mirror_lag_records",
        "meridian_broker_under_replicated_partitions",
        "meridian_mirror_replication_latency_seconds",
        "meridian_gossip_members",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
}

#[test]
fn the_alert_rules_query_only_documented_metrics() {
    let rules = read("deploy/prometheus/alerts.yml");
    let used = metric_names(
        &rules
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let documented = documented();
    let missing: Vec<_> = used.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "alerts on undocumented metrics: {missing:?}"
    );
    for alert in [
        "MeridianMirrorLagHigh",
        "MeridianMirrorRetentionGap",
        "MeridianUnderReplicatedPartitions",
        "MeridianOfflinePartitions",
        "MeridianNoActiveController",
        "MeridianGossipMembersDown",
        "MeridianCertificateExpiringSoon",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} is defined"
        );
    }
}
