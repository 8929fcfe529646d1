//! `meridian groups list|describe`: consumer groups, their committed offsets and lag.

use clap::Subcommand;

use super::connect::ConnectArgs;
use broker::client::OffsetSpec;

/// Consumer group inspection.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the groups that have committed offsets.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's committed offset, the partition's end and the lag, per partition.
    Describe {
        /// The group.
        group: String,
        /// Print one JSON object per partition instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs a `groups` subcommand.
pub fn run(cmd: GroupsCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            GroupsCommand::List { connect } => {
                let client = connect.connect().await?;
                for (group, topics) in client.list_groups().await? {
                    println!("{group}\t{}", topics.join(","));
                }
            }
            GroupsCommand::Describe { group, json, connect } => {
                let client = connect.connect().await?;
                let committed = client.fetch_offsets(&group, &[]).await?;
                if committed.is_empty() {
                    return Err(super::UsageError(format!(
                        "group {group:?} has no committed offsets; `meridian groups list` shows the groups"
                    ))
                    .into());
                }
                let mut topics: Vec<&String> = committed.keys().map(|(t, _)| t).collect();
                topics.dedup();
                if !json {
                    println!("{:<24} {:>9} {:>16} {:>14} {:>10}", "topic", "partition", "committed offset", "high watermark", "lag");
                }
                for topic in topics {
                    let partitions: Vec<i32> =
                        committed.keys().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect();
                    let ends = client.list_offsets_of(topic, &partitions, OffsetSpec::Latest).await?;
                    for partition in partitions {
                        let offset = committed[&(topic.clone(), partition)];
                        let end = ends.get(&partition).copied().unwrap_or(-1);
                        let lag = (end - offset).max(0);
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"group": group, "topic": topic, "partition": partition,
                                    "committed_offset": offset, "high_watermark": end, "lag": lag})
                            );
                        } else {
                            println!("{topic:<24} {partition:>9} {offset:>16} {end:>14} {lag:>10}");
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
