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
    // iptables; without them the report says SKIPPED and why, and so does this test.
    match chaos_tests::harness::partition::Cut::available() {
        Ok(()) => assert!(
            report
                .faults
                .iter()
                .all(|f| !f.target.starts_with("SKIPPED")),
            "{:?}",
            report.faults
        ),
        Err(why) => eprintln!("SKIPPED: the network faults of the quick suite: {why}"),
    }
    assert!(
        report
            .verdicts
            .iter()
            .any(|v| v.invariant == "mirror_exact" && v.checked > 1_000),
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
