//! `meridian mirror translate|status` and `meridian failover`: operator commands for
//! moving consumer groups between regions at their exact positions. The logic lives in
//! the `mirror` crate; this file resolves regions from the topology and prints.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use broker::client::{Client, RetryPolicy};
use clap::{Args, Subcommand, ValueEnum};
use mirror::failover::{FailoverOptions, FailoverReport, failover};
use mirror::status::flow_status;
use mirror::translate::OffsetTranslator;
use topology::Topology;

use super::UsageError;

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON document.
    Json,
}

/// Mirror inspection commands.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Print a group's exact positions in the target region (nothing is committed).
    Translate {
        /// The deployment file.
        #[arg(long)]
        topology: PathBuf,
        /// The consumer group.
        #[arg(long)]
        group: String,
        /// The region the group consumed in.
        #[arg(long)]
        from: String,
        /// The region the group moves to.
        #[arg(long)]
        to: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Per flow and partition: offsets, lag, checkpoint age, state, retention gaps.
    Status {
        /// The deployment file.
        #[arg(long)]
        topology: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// `meridian failover` arguments.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The deployment file.
    #[arg(long)]
    topology: PathBuf,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// The region the group consumed in (may be down).
    #[arg(long)]
    from: String,
    /// The region the group moves to.
    #[arg(long)]
    to: String,
    /// Compute and verify the positions, commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait (up to 60 s) until the mirror has copied everything the group read.
    #[arg(long)]
    wait_for_lag_zero: bool,
    /// Commit even when records are missing or the group is active in the target.
    #[arg(long)]
    force: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn bootstrap(topology: &Topology, region: &str) -> anyhow::Result<String> {
    let r = topology
        .regions()
        .iter()
        .find(|r| r.name == region)
        .ok_or_else(|| {
            UsageError(format!(
                "region {region:?} is not in the topology; it has {}",
                topology
                    .regions()
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    Ok(r.brokers
        .iter()
        .map(|b| b.grpc.to_string())
        .collect::<Vec<_>>()
        .join(","))
}

fn translator(topology: &Topology, from: &str, to: &str) -> anyhow::Result<OffsetTranslator> {
    let flow = topology
        .flows()
        .iter()
        .find(|f| f.source == from && f.target == to)
        .ok_or_else(|| {
            UsageError(format!(
                "no flow from {from} to {to} in the topology; add a [[flows]] entry with source = {from:?}, target = {to:?}"
            ))
        })?;
    Ok(OffsetTranslator::new(topology, flow)?)
}

async fn connect(topology: &Topology, region: &str, quick: bool) -> anyhow::Result<Client> {
    let addrs = bootstrap(topology, region)?;
    let retry = if quick {
        RetryPolicy {
            attempts: 2,
            ..RetryPolicy::default()
        }
    } else {
        RetryPolicy::default()
    };
    super::connect::connect_to(&addrs, retry)
        .await
        .with_context(|| format!("connecting to region {region}"))
}

fn print_report(report: &FailoverReport, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Format::Table => {
            println!(
                "{:<20} {:<20} {:>9} {:>15} {:>15} {:>9} {:>8} {:>8}",
                "topic",
                "target topic",
                "partition",
                "source position",
                "target position",
                "verified",
                "lag",
                "missing"
            );
            for r in &report.partitions {
                let p = &r.position;
                let verified = match r.verified {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                println!(
                    "{:<20} {:<20} {:>9} {:>15} {:>15} {:>9} {:>8} {:>8}",
                    p.source_topic,
                    p.target_topic,
                    p.partition,
                    p.source_offset,
                    p.target_offset,
                    verified,
                    r.lag,
                    p.missing
                );
            }
        }
    }
    Ok(())
}

/// Runs a `mirror` subcommand.
pub fn run(cmd: MirrorCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            MirrorCommand::Translate { topology, group, from, to, format } => {
                let topology = topology::load(&topology)?;
                let translator = translator(&topology, &from, &to)?;
                let source = connect(&topology, &from, true).await?;
                let target = connect(&topology, &to, false).await?;
                let options = FailoverOptions { dry_run: true, ..Default::default() };
                let report = failover(Some(&source), &target, &translator, &group, false, options).await?;
                print_report(&report, format)?;
            }
            MirrorCommand::Status { topology, format } => {
                let topology = topology::load(&topology)?;
                let mut rows = Vec::new();
                for flow in topology.flows().iter().filter(|f| f.enabled) {
                    let translator = OffsetTranslator::new(&topology, flow)?;
                    let source = connect(&topology, &flow.source, true).await?;
                    let target = connect(&topology, &flow.target, false).await?;
                    rows.extend(flow_status(&source, &target, &translator).await?);
                }
                match format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                    Format::Table => {
                        println!(
                            "{:<6} {:<6} {:<20} {:>4} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:<10}",
                            "from", "to", "topic", "part", "log start", "hw", "mirrored", "lag", "lag s", "gap", "ckpt age", "state"
                        );
                        for s in rows {
                            let age = s.checkpoint_age_seconds.map_or("-".to_owned(), |a| format!("{a:.1}"));
                            let state = serde_json::to_value(s.state)?;
                            println!(
                                "{:<6} {:<6} {:<20} {:>4} {:>10} {:>10} {:>10} {:>8} {:>8.1} {:>8} {:>10} {:<10}",
                                s.source, s.target, s.topic, s.partition, s.source_log_start, s.source_high_watermark,
                                s.mirrored, s.lag_records, s.lag_seconds, s.gap_records, age, state.as_str().unwrap_or("")
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// Runs `meridian failover`; fails (exit 1) unless every partition is exact.
pub fn run_failover(args: FailoverArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let topology = topology::load(&args.topology)?;
        let translator = translator(&topology, &args.from, &args.to)?;
        let source = match connect(&topology, &args.from, true).await {
            Ok(c) => Some(c),
            Err(err) => {
                eprintln!("source region {} does not answer ({err:#}); using the latest checkpoints in {}", args.from, args.to);
                None
            }
        };
        let target = connect(&topology, &args.to, false).await?;
        // Committing under live members would race with their own commits (and they
        // would not re-read their positions until they rebalance).
        let membership = target
            .describe_group(&args.group)
            .await
            .with_context(|| format!("cannot ask {} whether group {} has members there", args.to, args.group))?;
        let active = !membership.members.is_empty();
        if active {
            eprintln!(
                "group {} has {} live member(s) in {} ({})",
                args.group,
                membership.members.len(),
                args.to,
                membership.state
            );
        }
        let options = FailoverOptions {
            dry_run: args.dry_run,
            force: args.force,
            wait_for_lag_zero: args.wait_for_lag_zero.then_some(Duration::from_secs(60)),
        };
        let report = failover(source.as_ref(), &target, &translator, &args.group, active, options).await?;
        print_report(&report, args.format)?;
        if !report.all_exact() {
            anyhow::bail!("group {} is not exact on every partition in {} (see the report)", args.group, args.to);
        }
        if args.format == Format::Table {
            println!(
                "{} {} partitions of group {} in {}",
                if report.committed { "committed" } else { "dry run: would commit" },
                report.partitions.len(),
                args.group,
                args.to
            );
        }
        Ok(())
    })
}
