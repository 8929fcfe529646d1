//! `meridian consume TOPIC`: prints one value per line, or one JSON object per record.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::connect::ConnectArgs;
use broker::ErrorCode;
use broker::client::{
    ConsumedRecord, Consumer, ConsumerConfig, GroupConsumer, GroupConsumerConfig, StartOffset,
};

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// The value of each record, one per line.
    Text,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// Consume records from a topic.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition; repeatable.
    #[arg(long = "partition")]
    pub partitions: Vec<i32>,
    /// Where to start without a committed group offset: earliest, latest or an offset.
    #[arg(long, default_value = "latest")]
    pub offset: String,
    /// Same as --offset earliest.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Stop once every partition has been read up to where it ended at start-up.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Consumer group: join it (the group splits the topic's partitions among its
    /// members and rebalances as they come and go), start from its committed offsets and
    /// commit as records are printed. With --partition, read those partitions without
    /// joining, committing for the group.
    #[arg(long)]
    pub group: Option<String>,
    /// How a group splits partitions among its members: range or roundrobin.
    #[arg(long, default_value = "range")]
    pub assignor: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Consumes until --max, --exit-at-end or Ctrl-C.
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let start = if args.from_beginning {
        StartOffset::Earliest
    } else {
        match args.offset.as_str() {
            "earliest" | "beginning" => StartOffset::Earliest,
            "latest" | "end" => StartOffset::Latest,
            n => StartOffset::Offset(n.parse().map_err(|_| {
                super::UsageError(format!(
                    "--offset {n:?} is not earliest, latest or a number"
                ))
            })?),
        }
    };
    super::runtime()?.block_on(async move {
        let client = args.connect.connect().await?;
        let mut reader = match (&args.group, args.partitions.is_empty()) {
            (Some(group), true) => {
                let mut config = GroupConsumerConfig::new(group.clone(), vec![args.topic.clone()]);
                config.start = start;
                config.assignor = args.assignor.clone();
                config.client_id = "meridian-consume".into();
                client
                    .topic(&args.topic)
                    .await
                    .with_context(|| format!("cannot consume {}", args.topic))?;
                Reader::Group(GroupConsumer::new(client, config)?)
            }
            _ => {
                let mut config = ConsumerConfig::new(args.topic.clone());
                config.partitions = (!args.partitions.is_empty()).then(|| args.partitions.clone());
                config.start = start;
                config.group = args.group.clone();
                let consumer = Consumer::new(client, config)
                    .await
                    .with_context(|| format!("cannot consume {}", args.topic))?;
                let ends = if args.exit_at_end {
                    consumer.end_offsets().await?
                } else {
                    BTreeMap::new()
                };
                Reader::Single(consumer, ends)
            }
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let mut printed: u64 = 0;
        let mut last_commit = Instant::now();
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        let mut polled = false;
        let mut last_was_empty = false;
        'outer: loop {
            // Poll at least once, so that a start position past the end is reported.
            let at_end = args.exit_at_end && polled && reader.at_end(last_was_empty).await?;
            if at_end || args.max.is_some_and(|m| printed >= m) {
                break;
            }
            let records = tokio::select! {
                records = reader.poll() => { polled = true; records? },
                _ = &mut shutdown => break,
            };
            last_was_empty = records.is_empty();
            for (index, consumed) in records.iter().enumerate() {
                if args.max.is_some_and(|m| printed >= m) {
                    // Rewind to the first record not printed, so a commit skips nothing.
                    for unprinted in records[index..].iter().rev() {
                        reader.seek(unprinted);
                    }
                    break 'outer;
                }
                let r = &consumed.record;
                let written = match args.format {
                    Format::Text => out
                        .write_all(r.value.as_deref().unwrap_or_default())
                        .and_then(|()| out.write_all(b"\n")),
                    Format::Json => {
                        let headers: serde_json::Map<String, serde_json::Value> = r
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_deref().map(lossy).into()))
                            .collect();
                        let line = serde_json::json!({
                            "topic": consumed.topic,
                            "partition": consumed.partition,
                            "offset": r.offset,
                            "timestamp": r.timestamp_ms,
                            "key": r.key.as_deref().map(lossy),
                            "value": r.value.as_deref().map(lossy),
                            "headers": headers,
                        });
                        writeln!(out, "{line}")
                    }
                };
                if let Err(err) = written {
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        break 'outer;
                    }
                    return Err(err).context("cannot write to stdout");
                }
                printed += 1;
            }
            if let Err(err) = out.flush() {
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(err).context("cannot write to stdout");
            }
            if args.group.is_some() && last_commit.elapsed() >= Duration::from_secs(1) {
                reader.commit().await?;
                last_commit = Instant::now();
            }
        }
        let _ = out.flush();
        if args.group.is_some() {
            reader.close().await?;
        }
        Ok(())
    })
}

/// What `consume` reads through: a member of a group, or a plain consumer of chosen (or
/// all) partitions with the end offsets it saw at start.
enum Reader {
    Group(GroupConsumer),
    Single(Consumer, BTreeMap<i32, i64>),
}

impl Reader {
    async fn poll(&mut self) -> anyhow::Result<Vec<ConsumedRecord>> {
        Ok(match self {
            Reader::Group(c) => c.poll().await?,
            Reader::Single(c, _) => c.poll().await?,
        })
    }

    fn seek(&mut self, unprinted: &ConsumedRecord) {
        match self {
            Reader::Group(c) => c.seek(
                &unprinted.topic,
                unprinted.partition,
                unprinted.record.offset,
            ),
            Reader::Single(c, _) => c.seek(unprinted.partition, unprinted.record.offset),
        }
    }

    /// A plain consumer ends where the partitions ended at start; a group member ends
    /// when a poll came back empty and its assigned partitions are read to their end
    /// (its assignment may change while it runs, so there is no fixed end).
    async fn at_end(&self, last_was_empty: bool) -> anyhow::Result<bool> {
        Ok(match self {
            Reader::Single(c, ends) => ends
                .iter()
                .all(|(p, end)| c.positions().get(p).is_some_and(|pos| pos >= end)),
            Reader::Group(c) => last_was_empty && c.caught_up().await?,
        })
    }

    async fn commit(&self) -> anyhow::Result<()> {
        let committed = match self {
            Reader::Group(c) => c.commit().await,
            Reader::Single(c, _) => c.commit().await,
        };
        match (self, committed) {
            (_, Ok(())) => Ok(()),
            // A member that lost its partitions in a rebalance cannot commit them; it
            // rejoins at the next poll and the new owner reads from the last commit.
            (Reader::Group(_), Err(err)) if lost_partitions(&err) => {
                tracing::info!(%err, "commit refused during a rebalance; rejoining");
                Ok(())
            }
            (_, Err(err)) => Err(err).context("cannot commit the group's offsets"),
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        match self {
            Reader::Group(c) => match c.close().await {
                Err(err) if lost_partitions(&err) => {
                    tracing::info!(%err, "final commit refused: the partitions moved to another member");
                    Ok(())
                }
                other => other.context("cannot commit the group's offsets"),
            },
            Reader::Single(c, _) => c
                .commit()
                .await
                .context("cannot commit the group's offsets"),
        }
    }
}

/// Whether a commit failed because this member no longer owns its partitions (the group
/// rebalanced, or its coordinator moved): not an error for a group member, whose
/// partitions' new owners read from the last commit.
fn lost_partitions(err: &broker::BrokerError) -> bool {
    broker::client::is_retriable(err)
        || matches!(
            err.code(),
            ErrorCode::UnknownMemberId
                | ErrorCode::IllegalGeneration
                | ErrorCode::RebalanceInProgress
        )
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
