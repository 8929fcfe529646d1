//! `meridian mirror`: run a mirror worker (`--topology FILE --node REGION/NAME`); its
//! operator subcommands (`status`, `translate`) live in `mirror_admin`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Run a mirror worker, or show mirror status.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    /// Operator commands; without one, runs a worker.
    #[command(subcommand)]
    pub command: Option<super::mirror_admin::MirrorCommand>,
    /// The deployment file (to run a worker).
    #[arg(long, env = "MERIDIAN_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Which worker to run, as REGION/NAME.
    #[arg(long)]
    pub node: Option<String>,
}

/// Runs the worker or the operator command.
pub fn run(args: MirrorArgs) -> anyhow::Result<()> {
    match args.command {
        Some(command) => super::mirror_admin::run(command),
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
