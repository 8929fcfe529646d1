//! `meridian broker`: runs one broker of a deployment until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Run one broker node.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The deployment file.
    #[arg(long, env = "MERIDIAN_TOPOLOGY")]
    pub topology: PathBuf,
    /// Which node to run, as REGION/NAME.
    #[arg(long)]
    pub node: String,
}

/// Runs the broker until a shutdown signal.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let topology = topology::load(&args.topology)?;
    let view = topology.node(&args.node)?;
    if view.role != topology::Role::Broker {
        return Err(super::UsageError(format!(
            "{} is a mirror worker in {}; run it with `meridian mirror`",
            args.node,
            args.topology.display()
        ))
        .into());
    }
    super::runtime()?.block_on(async move {
        broker::server::serve(&view, super::shutdown_signal())
            .await
            .with_context(|| format!("broker {} stopped", args.node))
    })
}
