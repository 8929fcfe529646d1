//! `meridian members`: the live membership view (SWIM gossip) of a region's brokers.

use clap::Args;

use super::connect::ConnectArgs;

/// Show who is alive, as the answering broker's gossip sees it.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Print one JSON object per member instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Prints the membership view.
pub fn run(args: MembersArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let client = args.connect.connect().await?;
        let mut members = client.members().await?;
        members.sort_by(|a, b| (&a.region, &a.name).cmp(&(&b.region, &b.name)));
        if !args.json {
            println!(
                "{:<10} {:<8} {:<7} {:<8} {:>14}  {:<22} {:<22}",
                "region", "name", "role", "state", "incarnation", "grpc", "gossip"
            );
        }
        for m in members {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"name": m.name, "region": m.region, "role": m.role,
                        "state": m.state, "incarnation": m.incarnation, "gossip": m.gossip_addr,
                        "grpc": m.grpc_addr, "kafka": m.kafka_addr, "metrics": m.metrics_addr})
                );
            } else {
                println!(
                    "{:<10} {:<8} {:<7} {:<8} {:>14}  {:<22} {:<22}",
                    m.region, m.name, m.role, m.state, m.incarnation, m.grpc_addr, m.gossip_addr
                );
            }
        }
        Ok(())
    })
}
