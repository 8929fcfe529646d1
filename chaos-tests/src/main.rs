//! `cargo run -p chaos-tests -- --scenario NAME --seed N --duration 60s`: one chaos run
//! against real `meridian` processes; prints the report's path and exits 1 when an
//! invariant failed, with the command that replays it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chaos_tests::harness::network::NetworkMode;
use chaos_tests::harness::rootless;
use chaos_tests::run::{RunConfig, run};
use chaos_tests::scenario::{SCENARIOS, Scenario};
use clap::Parser;
use std::os::unix::process::CommandExt as _;

/// Seeded, reproducible fault injection against a real Meridian deployment.
#[derive(Debug, Parser)]
#[command(name = "chaos-tests")]
struct Args {
    /// Scenario: quick, leader-kills, stalled-followers or soak.
    #[arg(long, default_value = "quick")]
    scenario: String,
    /// Seed of the fault schedule (replays the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the workload runs, e.g. 60s or 30m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Runs this many seeds in a row, from --seed up (the soak profile).
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Where reports, logs and data go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// The meridian binary (default: next to this one, or MERIDIAN_BIN).
    #[arg(long, env = "MERIDIAN_BIN")]
    meridian: Option<PathBuf>,
    /// First region's third address octet (also names a namespaced run's namespaces).
    #[arg(long, default_value_t = 151)]
    octet: u8,
    /// Where the regions live: `namespaces` (one network namespace per region, joined by
    /// veth links; needs root), `loopback` (127.0.x.y addresses), or `auto` (namespaces
    /// when this machine can make them).
    #[arg(long, default_value = "auto", value_parser = ["auto", "namespaces", "loopback"])]
    network: String,
}

/// The asked-for network; `auto` picks the best this machine has.
fn network_mode(text: &str) -> NetworkMode {
    match text {
        "loopback" => NetworkMode::Loopback,
        "namespaces" => NetworkMode::Namespaces,
        _ => NetworkMode::best_available(),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 60s or 30m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?}: use s, m or h")),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if rootless::inside() {
        rootless::bring_up_loopback().context("bring up loopback in the user namespace")?;
    } else if !rootless::is_root() {
        match rootless::available() {
            Ok(()) => {
                // Root of a private user namespace can cut, thin and slow its own loopback.
                let this = std::env::current_exe().context("locate this binary")?;
                let again: Vec<String> = std::env::args().skip(1).collect();
                let err = rootless::command(&this, &again).exec();
                return Err(err).context("run again inside a user namespace (unshare)");
            }
            Err(why) => tracing::warn!(
                %why,
                "not root and no user namespace: the network and disk faults will say SKIPPED"
            ),
        }
    }
    tokio::runtime::Runtime::new()
        .context("start the async runtime")?
        .block_on(run_seeds(args))
}

async fn run_seeds(args: Args) -> anyhow::Result<()> {
    let binary = match args.meridian {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("meridian"),
    };
    let config = RunConfig {
        binary,
        out_dir: args.out.clone(),
        octet: args.octet,
        network: network_mode(&args.network),
        writers: 2,
        rate: 200,
        broken_acks: false,
    };
    let mut failed = Vec::new();
    for seed in args.seed..args.seed + args.runs {
        let scenario = Scenario::build(&args.scenario, seed, args.duration)
            .with_context(|| format!("known scenarios: {}", SCENARIOS.join(", ")))?;
        let report = run(&scenario, &config).await?;
        let path = args.out.join(format!("{}-{}.md", scenario.name, seed));
        println!(
            "{} seed {seed}: {} — produced {}, acknowledged {}, lost {}, duplicated {} — {}",
            scenario.name,
            if report.passed() { "passed" } else { "FAILED" },
            report.produced,
            report.acknowledged,
            report.lost,
            report.duplicated,
            path.display()
        );
        if !report.passed() {
            println!("replay: {}", report.replay);
            failed.push(seed);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "invariants failed for seeds {failed:?}; see the reports under {}",
            args.out.display()
        );
    }
    Ok(())
}
