//! The chaos quick suite against real `meridian broker` and `meridian mirror` processes
//! in two regions (chaos-tests), on both network paths: regions on loopback addresses,
//! regions in their own network namespaces joined by a veth link (root only), and loopback
//! again as an ordinary user inside a user namespace (the rootless path); and the
//! checker's own proof: with a deliberately broken guarantee it reports the loss.
//! Reports land in target/tmp/chaos/<network>/ (the run directory keeps every node's log).

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::harness::network::NetworkMode;
use chaos_tests::harness::rootless;
use chaos_tests::run::{RunConfig, run};
use chaos_tests::scenario::Scenario;

fn config(octet: u8, network: NetworkMode, broken_acks: bool) -> RunConfig {
    RunConfig {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_meridian")),
        // One directory per path: the quick suites are all seed 1, and a failed run's logs
        // must survive the next run. The rootless run is told where it may write.
        out_dir: std::env::var_os(ROOTLESS_OUT)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos"))
            .join(network.name()),
        octet,
        network,
        writers: 2,
        rate: 200,
        broken_acks,
    }
}

/// Where the quick suite inside the user namespace writes (a directory its user owns).
const ROOTLESS_OUT: &str = "MERIDIAN_CHAOS_ROOTLESS_OUT";
/// The uid and gid the rootless run takes when the tests run as root: `nobody`.
const NOBODY: u32 = 65534;

/// How many items the invariant's check looked at (0 when it did not run).
fn checked(report: &chaos_tests::report::Report, invariant: &str) -> u64 {
    report
        .verdicts
        .iter()
        .find(|v| v.invariant == invariant)
        .map_or(0, |v| v.checked)
}

/// One quick suite at a time: two deployments of seven processes at once would be a
/// test of this 2-core machine, not of the recovery bounds.
static ONE_QUICK_SUITE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_suite_holds_every_invariant_through_every_fault_kind() {
    let _turn = ONE_QUICK_SUITE_AT_A_TIME.lock().await;
    let report = quick_suite(161, NetworkMode::Loopback).await;
    // Added latency went through the link proxy and held mirror traffic back.
    if chaos_tests::harness::proxy::LinkProxy::available().is_ok() {
        assert_proxy_carried_traffic(&report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_suite_holds_every_invariant_with_regions_in_network_namespaces() {
    if let Err(why) = chaos_tests::harness::netns::RegionNetwork::available() {
        eprintln!("SKIPPED: the quick suite in network namespaces: {why}");
        return;
    }
    let _turn = ONE_QUICK_SUITE_AT_A_TIME.lock().await;
    let report = quick_suite(171, NetworkMode::Namespaces).await;
    assert_eq!(report.network, "namespaces");
    // The cut was the inter-region link going down (and it met traffic: quick_suite).
    let cut = report
        .faults
        .iter()
        .find(|f| f.kind == "inter-region cut + heal")
        .expect("the cut fired");
    assert!(cut.target.starts_with("link r1 <-> r2 down"), "{cut:?}");
    // The proxy inside r2's namespace carried the mirror's connections.
    assert_proxy_carried_traffic(&report);
}

/// `command` as nobody when the tests run as root (`setpriv`), so that the rootless path
/// is proven to need no privilege at all; unchanged otherwise.
fn unprivileged(command: std::process::Command) -> std::process::Command {
    if !rootless::is_root() {
        return command;
    }
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    wrapped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_suite_holds_every_invariant_for_a_user_without_root() {
    let probe = unprivileged(rootless::command(std::path::Path::new("true"), &[])).output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!("SKIPPED: the quick suite in a user namespace: cannot create one: {other:?}");
            return;
        }
    }
    let out_dir =
        std::env::temp_dir().join(format!("meridian-chaos-rootless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    if rootless::is_root() {
        std::os::unix::fs::chown(&out_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let _turn = ONE_QUICK_SUITE_AT_A_TIME.lock().await;
    let this = std::env::current_exe().unwrap();
    let inner = [
        "--ignored",
        "--exact",
        "quick_suite_inside_a_user_namespace",
        "--nocapture",
    ]
    .map(String::from);
    let mut command = unprivileged(rootless::command(&this, &inner));
    command.env(ROOTLESS_OUT, &out_dir);
    let ran = tokio::process::Command::from(command)
        .output()
        .await
        .expect("run the test binary again in a user namespace");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    assert!(
        ran.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the quick suite in a user namespace failed ({}); reports under {}\nstdout:\n{}\nstderr:\n{}",
        ran.status,
        out_dir.display(),
        tail(&stdout),
        tail(&stderr)
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by quick_suite_holds_every_invariant_for_a_user_without_root, inside its user namespace"]
async fn quick_suite_inside_a_user_namespace() {
    assert!(rootless::inside(), "run me through the rootless test");
    rootless::bring_up_loopback().unwrap();
    // Root of the user namespace: every fault is available, so none may be skipped.
    let report = quick_suite(181, NetworkMode::Loopback).await;
    assert!(
        report
            .faults
            .iter()
            .all(|f| !f.target.starts_with("SKIPPED")),
        "{:?}",
        report.faults
    );
    assert_proxy_carried_traffic(&report);
}

fn assert_proxy_carried_traffic(report: &chaos_tests::report::Report) {
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

/// Runs the quick suite and asserts what holds on either network path.
async fn quick_suite(octet: u8, network: NetworkMode) -> chaos_tests::report::Report {
    let scenario = Scenario::build("quick", 1, Duration::from_secs(75)).unwrap();
    let report = run(&scenario, &config(octet, network, false))
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
        assert!(!fault.target.starts_with("FAILED"), "{fault:?}");
        if !fault.target.starts_with("SKIPPED") {
            // A network fault that dropped nothing tested nothing.
            let network_fault = [
                "inter-region cut + heal",
                "inter-region packet loss",
                "gossip datagram loss",
            ];
            if network_fault.contains(&fault.kind.as_str()) {
                assert!(
                    fault.target.contains(" packets dropped")
                        && !fault.target.contains("; 0 packets dropped"),
                    "{fault:?}"
                );
            }
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
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_brokers_that_acknowledge_before_the_high_watermark() {
    // The debug switch makes acks=all answer before replication; the scenario freezes the
    // followers, lets the leader take writes, and kills it.
    let scenario = Scenario::build("stalled-followers", 7, Duration::from_secs(20)).unwrap();
    let report = run(&scenario, &config(164, NetworkMode::Loopback, true))
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
