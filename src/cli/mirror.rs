//! `meridian mirror`: run a mirror worker (`--topology FILE --node REGION/NAME`), or ask
//! how the flows are doing (`meridian mirror status --topology FILE`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Run a mirror worker, or show mirror status.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    /// Operator commands; without one, runs a worker.
    #[command(subcommand)]
    pub command: Option<MirrorCommand>,
    /// The deployment file (to run a worker).
    #[arg(long, env = "MERIDIAN_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Which worker to run, as REGION/NAME.
    #[arg(long)]
    pub node: Option<String>,
}

/// Mirror operator commands.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Per flow and partition: source offsets, mirrored offset, lag, state, gaps.
    Status(StatusArgs),
}

/// `meridian mirror status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The deployment file: every region's brokers are found there.
    #[arg(long, env = "MERIDIAN_TOPOLOGY")]
    pub topology: PathBuf,
    /// table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Runs the worker or the operator command.
pub fn run(args: MirrorArgs) -> anyhow::Result<()> {
    match args.command {
        Some(MirrorCommand::Status(status)) => run_status(status),
        None => {
            let (Some(path), Some(node)) = (args.topology, args.node) else {
                return Err(super::UsageError(
                    "run a worker with `meridian mirror --topology FILE --node REGION/NAME`, or see `meridian mirror status --help`".into(),
                )
                .into());
            };
            let topology = topology::load(&path)?;
            let view = topology.node(&node)?;
            if view.role != topology::Role::Mirror {
                return Err(super::UsageError(format!(
                    "{node} is a broker in {}; run it with `meridian broker`",
                    path.display()
                ))
                .into());
            }
            super::runtime()?.block_on(async move {
                mirror::worker::run(&topology, &view, super::shutdown_signal())
                    .await
                    .with_context(|| format!("mirror worker {node} stopped"))
            })
        }
    }
}

fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    if args.format != "table" && args.format != "json" {
        return Err(
            super::UsageError(format!("--format {:?}: use table or json", args.format)).into(),
        );
    }
    let topology = topology::load(&args.topology)?;
    super::runtime()?.block_on(async move {
        let mut flows = Vec::new();
        for flow in topology.flows().iter().filter(|f| f.enabled) {
            let rules = mirror::plan::FlowRules::for_flow(&topology, flow)?;
            let source = broker::client::Client::connect(&mirror::worker::region_bootstrap(
                &topology,
                &flow.source,
            ))
            .await
            .with_context(|| format!("cannot reach region {}", flow.source))?;
            let target = broker::client::Client::connect(&mirror::worker::region_bootstrap(
                &topology,
                &flow.target,
            ))
            .await
            .with_context(|| format!("cannot reach region {}", flow.target))?;
            flows.push(mirror::status::flow_status(&rules, &source, &target).await?);
        }
        if args.format == "json" {
            println!("{}", serde_json::to_string_pretty(&flows)?);
            return Ok(());
        }
        for flow in &flows {
            let heartbeat = flow
                .heartbeat_age_seconds
                .map_or("no heartbeat mirrored yet".to_string(), |s| {
                    format!("latest heartbeat {s:.1} s old")
                });
            println!("flow {} ({heartbeat})", flow.flow);
            println!(
                "  {:<28} {:>4} {:>12} {:>12} {:>12} {:>10} {:>9}  STATE",
                "TOPIC", "PART", "LOG-START", "SOURCE-HW", "MIRRORED", "LAG", "LAG-SEC"
            );
            for p in &flow.partitions {
                let state = if p.gap_records > 0 {
                    format!("{} ({} records deleted unmirrored)", p.state, p.gap_records)
                } else {
                    p.state.clone()
                };
                println!(
                    "  {:<28} {:>4} {:>12} {:>12} {:>12} {:>10} {:>9.1}  {state}",
                    p.remote_topic,
                    p.partition,
                    p.source_log_start,
                    p.source_high_watermark,
                    p.mirrored_offset,
                    p.lag_records,
                    p.lag_seconds
                );
            }
        }
        Ok(())
    })
}
