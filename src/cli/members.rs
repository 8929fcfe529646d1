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
        let view = client.membership().await?;
        let mut members = view.members;
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
        // Shared state every node converges on without a leader: the mirror workers'
        // per-flow summaries, among others.
        let mut shared: Vec<(String, String)> = view.shared.into_iter().collect();
        shared.sort();
        for (key, value) in shared {
            if args.json {
                println!("{}", serde_json::json!({"shared": key, "value": value}));
            } else {
                println!("shared {key}: {value}");
            }
        }
        Ok(())
    })
}
