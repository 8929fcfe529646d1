//! `meridian topic create|list|describe|delete|add-partitions|alter|elect-leaders`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;

use super::connect::ConnectArgs;

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the deployment's topic_defaults).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (default: the deployment's topic_defaults).
        #[arg(long)]
        replication_factor: Option<i32>,
        /// A per-topic config override, KEY=VALUE (Kafka names, e.g. retention.ms=7d); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed quietly if the topic exists.
        #[arg(long)]
        if_not_exists: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a topic's partitions, leaders, offsets and configs.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Grow a topic to more partitions (never fewer). Keyed records of existing keys
    /// may map to other partitions afterwards, as in Kafka.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total partition count.
        #[arg(long)]
        partitions: i32,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set per-topic config overrides (KEY=VALUE, Kafka names); KEY= removes one.
    Alter {
        /// Topic name.
        name: String,
        /// A config override, KEY=VALUE; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move leadership back to each partition's preferred replica (its first), where
    /// that broker is alive and in sync: after a broker returns from a failure, so that
    /// it leads its share again. The controller also does this on its own every
    /// `[cluster] leader_rebalance_interval`.
    ElectLeaders {
        /// Topics to rebalance (default: every topic).
        topics: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs a `topic` subcommand.
pub fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            TopicCommand::Create {
                name,
                partitions,
                replication_factor,
                configs,
                if_not_exists,
                connect,
            } => {
                let configs = parse_configs(&configs)?;
                let client = connect.connect().await?;
                let spec = broker::client::TopicSpec {
                    name: name.clone(),
                    partitions: partitions.unwrap_or(0),
                    replication_factor: replication_factor.unwrap_or(0),
                    configs,
                };
                match client.create_topic(spec).await {
                    Ok(()) => println!("created topic {name}"),
                    Err(broker::BrokerError::Remote {
                        code: broker::ErrorCode::TopicAlreadyExists,
                        ..
                    }) if if_not_exists => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("cannot create topic {name}"));
                    }
                }
            }
            TopicCommand::List { connect } => {
                let client = connect.connect().await?;
                for name in client.cached_metadata().topics.keys() {
                    println!("{name}");
                }
            }
            TopicCommand::Describe { name, connect } => {
                let client = connect.connect().await?;
                let topic = client.topic(&name).await?;
                let earliest = client
                    .list_offsets(&name, broker::client::OffsetSpec::Earliest)
                    .await?;
                let latest = client
                    .list_offsets(&name, broker::client::OffsetSpec::Latest)
                    .await?;
                println!("topic {name}: {} partitions", topic.partitions.len());
                println!(
                    "{:>9}  {:>6}  {:>12}  {:>14}  {:>8}  isr",
                    "partition", "leader", "start", "high watermark", "epoch"
                );
                for p in &topic.partitions {
                    let isr: Vec<String> = p.isr.iter().map(u64::to_string).collect();
                    println!(
                        "{:>9}  {:>6}  {:>12}  {:>14}  {:>8}  {}",
                        p.partition,
                        p.leader,
                        earliest.get(&p.partition).copied().unwrap_or(-1),
                        latest.get(&p.partition).copied().unwrap_or(-1),
                        p.leader_epoch,
                        isr.join(",")
                    );
                }
                println!("configs:");
                for (key, value) in &topic.configs {
                    println!("  {key}={value}");
                }
            }
            TopicCommand::Delete { name, connect } => {
                let client = connect.connect().await?;
                client
                    .delete_topics(vec![name.clone()])
                    .await?
                    .remove(0)
                    .1
                    .with_context(|| format!("cannot delete topic {name}"))?;
                println!("deleted topic {name}");
            }
            TopicCommand::AddPartitions {
                name,
                partitions,
                connect,
            } => {
                let client = connect.connect().await?;
                client
                    .create_partitions(&name, partitions)
                    .await
                    .with_context(|| format!("cannot grow topic {name}"))?;
                println!("topic {name} has {partitions} partitions");
            }
            TopicCommand::Alter {
                name,
                configs,
                connect,
            } => {
                let configs = parse_configs(&configs)?;
                let client = connect.connect().await?;
                client
                    .alter_topic_configs(&name, configs)
                    .await
                    .with_context(|| format!("cannot change the configs of {name}"))?;
                println!("topic {name} updated");
            }
            TopicCommand::ElectLeaders { topics, connect } => {
                let client = connect.connect().await?;
                let moved = client
                    .elect_leaders(topics)
                    .await
                    .context("preferred leader election failed")?;
                if moved.is_empty() {
                    println!(
                        "every partition is led by its preferred replica (or it is not in sync yet)"
                    );
                }
                let name = |id: u64| {
                    if id == 0 {
                        "none".to_string()
                    } else {
                        id.to_string()
                    }
                };
                for m in moved {
                    println!(
                        "{}-{}: leader {} -> {}",
                        m.topic,
                        m.partition,
                        name(m.previous_leader),
                        name(m.leader)
                    );
                }
            }
        }
        Ok(())
    })
}

fn parse_configs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| {
                    super::UsageError(format!("--config {pair:?} has no '='; write KEY=VALUE"))
                        .into()
                })
        })
        .collect()
}
