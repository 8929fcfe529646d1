//! `meridian groups list|describe`: consumer groups, their committed offsets and lag.

use std::collections::{BTreeMap, BTreeSet};

use clap::Subcommand;

use super::connect::ConnectArgs;
use broker::client::OffsetSpec;

/// Consumer group inspection.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the groups that have committed offsets, with their state.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's state and members, and per partition its committed offset, the
    /// partition's end, the lag and the member reading it.
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
                    let state = client
                        .describe_group(&group)
                        .await
                        .map(|d| d.state)
                        .unwrap_or_else(|_| "Unknown".into());
                    println!("{group}\t{state}\t{}", topics.join(","));
                }
            }
            GroupsCommand::Describe { group, json, connect } => {
                let client = connect.connect().await?;
                let membership = client.describe_group(&group).await?;
                let committed = client.fetch_offsets(&group, &[]).await?;
                // Who reads each partition now, from the members' assignments.
                let mut owners: BTreeMap<(String, i32), &broker::proto::GroupMemberDescription> =
                    BTreeMap::new();
                for member in &membership.members {
                    for assigned in &member.assigned {
                        for p in &assigned.partitions {
                            owners.insert((assigned.topic.clone(), *p), member);
                        }
                    }
                }
                let mut rows: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
                rows.extend(owners.keys().cloned());
                if rows.is_empty() && membership.members.is_empty() {
                    return Err(super::UsageError(format!(
                        "group {group:?} has no members and no committed offsets; `meridian groups list` shows the groups"
                    ))
                    .into());
                }
                if !json {
                    println!(
                        "group {group}: {} (generation {}, {} members, assignor {}, coordinator broker {})",
                        membership.state,
                        membership.generation_id,
                        membership.members.len(),
                        if membership.protocol_name.is_empty() { "-" } else { &membership.protocol_name },
                        membership.coordinator_id,
                    );
                    println!(
                        "{:<24} {:>9} {:>16} {:>14} {:>10}  {:<48} {:<16} client",
                        "topic", "partition", "committed offset", "high watermark", "lag", "member", "host"
                    );
                }
                let mut topics: Vec<&String> = rows.iter().map(|(t, _)| t).collect();
                topics.dedup();
                for topic in topics {
                    let partitions: Vec<i32> =
                        rows.iter().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect();
                    let ends = client.list_offsets_of(topic, &partitions, OffsetSpec::Latest).await?;
                    for partition in partitions {
                        let key = (topic.clone(), partition);
                        let offset = committed.get(&key).copied();
                        let end = ends.get(&partition).copied().unwrap_or(-1);
                        let lag = offset.map(|o| (end - o).max(0));
                        let owner = owners.get(&key);
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"group": group, "state": membership.state,
                                    "topic": topic, "partition": partition,
                                    "committed_offset": offset, "high_watermark": end, "lag": lag,
                                    "member_id": owner.map(|m| &m.member_id),
                                    "host": owner.map(|m| &m.client_host),
                                    "client_id": owner.map(|m| &m.client_id)})
                            );
                        } else {
                            let dash = || "-".to_string();
                            println!(
                                "{topic:<24} {partition:>9} {:>16} {end:>14} {:>10}  {:<48} {:<16} {}",
                                offset.map_or_else(dash, |o| o.to_string()),
                                lag.map_or_else(dash, |l| l.to_string()),
                                owner.map_or_else(dash, |m| m.member_id.clone()),
                                owner.map_or_else(dash, |m| m.client_host.clone()),
                                owner.map_or_else(dash, |m| m.client_id.clone()),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })
}
