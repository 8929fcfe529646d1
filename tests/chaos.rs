//! The chaos quick suite against real `meridian broker` and `meridian mirror` processes
//! in two regions (chaos-tests), and the checker's own proof: with a deliberately broken
//! guarantee it reports the loss.
//! Reports land in target/chaos/ (the run directory keeps every node's log).

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::run::{RunConfig, run};
use chaos_tests::scenario::Scenario;

fn config(octet: u8, broken_acks: bool) -> RunConfig {
    RunConfig {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_meridian")),
        out_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos"),
        octet,
        writers: 2,
        rate: 200,
        broken_acks,
    }
}

/// How many items the invariant's check looked at (0 when it did not run).
fn checked(report: &chaos_tests::report::Report, invariant: &str) -> u64 {
    report
        .verdicts
        .iter()
        .find(|v| v.invariant == invariant)
        .map_or(0, |v| v.checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_suite_holds_every_invariant_through_every_fault_kind() {
    let scenario = Scenario::build("quick", 1, Duration::from_secs(75)).unwrap();
    let report = run(&scenario, &config(161, false))
        .await
        .expect("the run itself works");
    assert!(
        report.passed(),
        "invariants failed; replay with `{}`:\n{}",
        report.replay,
        report.to_markdown()
    );
    assert_eq!(
        report.faults.len(),
        scenario.faults.len(),
        "every scheduled fault fired: {:?}",
        report.faults
    );
    // The network faults (inter-region cut and loss, gossip loss) need root and
    // iptables, added latency iptables' nat table (for the link proxy), the full disk
    // needs root to mount a tmpfs; without them the report says
    // SKIPPED and why, and so does this test.
    let network = chaos_tests::harness::partition::Cut::available();
    let disk = chaos_tests::harness::disk::SmallDisk::available();
    let link = chaos_tests::harness::proxy::LinkProxy::available();
    for fault in &report.faults {
        if !fault.target.starts_with("SKIPPED") {
            continue;
        }
        let allowed = match fault.kind.as_str() {
            "disk full" => disk.as_ref().err(),
            "inter-region latency + jitter" => link.as_ref().err(),
            _ => network.as_ref().err(),
        };
        match allowed {
            Some(why) => eprintln!("SKIPPED: {} in the quick suite: {why}", fault.kind),
            None => panic!(
                "{} was skipped on a machine that can run it: {fault:?}",
                fault.kind
            ),
        }
    }
    // Added latency went through the link proxy and held mirror traffic back.
    if link.is_ok() {
        let latency = report
            .faults
            .iter()
            .find(|f| f.kind == "inter-region latency + jitter")
            .expect("the latency fault fired");
        assert!(
            !latency.target.contains("; 0 chunks held"),
            "the proxy carried no inter-region traffic: {latency:?}"
        );
    }
    // The failover step ran and moved the group exactly: nothing skipped, nothing twice.
    let failover = report.failover.as_ref().expect("the failover step ran");
    assert_eq!(
        (failover.skipped, failover.redelivered),
        (0, 0),
        "{failover:?}"
    );
    assert!(
        checked(&report, "failover_once") > 1_000,
        "the group's deliveries were checked: {:?}",
        report.verdicts
    );
    // Every broker served its rotated certificate without a restart.
    let rotated = report
        .recoveries
        .iter()
        .filter(|r| r.what.ends_with("serves its rotated certificate") && r.took_ms.is_some())
        .count();
    assert_eq!(rotated, 6, "{:?}", report.recoveries);
    assert!(
        checked(&report, "mirror_exact") > 1_000,
        "the mirror was checked: {:?}",
        report.verdicts
    );
    assert!(
        report.acknowledged > 1_000,
        "the workload made progress: {}",
        report.acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_brokers_that_acknowledge_before_the_high_watermark() {
    // The debug switch makes acks=all answer before replication; the scenario freezes the
    // followers, lets the leader take writes, and kills it.
    let scenario = Scenario::build("stalled-followers", 7, Duration::from_secs(20)).unwrap();
    let report = run(&scenario, &config(164, true))
        .await
        .expect("the run itself works");
    assert!(
        !report.passed(),
        "the broken guarantee went unnoticed:\n{}",
        report.to_markdown()
    );
    assert!(report.lost > 0, "{}", report.to_markdown());
    let durable = report
        .verdicts
        .iter()
        .find(|v| v.invariant == "acked_durable")
        .unwrap();
    assert!(
        !durable.passed() && durable.violations[0].contains("acknowledged"),
        "{durable:?}"
    );
}
