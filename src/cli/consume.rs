//! `meridian consume TOPIC`: prints one value per line, or one JSON object per record.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::connect::ConnectArgs;
use broker::client::{Consumer, ConsumerConfig, StartOffset};

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
    /// Consumer group: start from its committed offsets and commit as records are printed.
    #[arg(long)]
    pub group: Option<String>,
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
        let mut config = ConsumerConfig::new(args.topic.clone());
        config.partitions = (!args.partitions.is_empty()).then(|| args.partitions.clone());
        config.start = start;
        config.group = args.group.clone();
        let mut consumer = Consumer::new(client, config)
            .await
            .with_context(|| format!("cannot consume {}", args.topic))?;
        let ends: BTreeMap<i32, i64> = if args.exit_at_end {
            consumer.end_offsets().await?
        } else {
            BTreeMap::new()
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let mut printed: u64 = 0;
        let mut last_commit = Instant::now();
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        let mut polled = false;
        'outer: loop {
            // Poll at least once, so that a start position past the end is reported.
            let at_end = args.exit_at_end
                && polled
                && ends
                    .iter()
                    .all(|(p, end)| consumer.positions().get(p).is_some_and(|pos| pos >= end));
            if at_end || args.max.is_some_and(|m| printed >= m) {
                break;
            }
            let records = tokio::select! {
                records = consumer.poll() => { polled = true; records? },
                _ = &mut shutdown => break,
            };
            for (index, consumed) in records.iter().enumerate() {
                if args.max.is_some_and(|m| printed >= m) {
                    // Rewind to the first record not printed, so a commit skips nothing.
                    for unprinted in records[index..].iter().rev() {
                        consumer.seek(unprinted.partition, unprinted.record.offset);
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
                            "topic": args.topic,
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
                consumer
                    .commit()
                    .await
                    .context("cannot commit the group's offsets")?;
                last_commit = Instant::now();
            }
        }
        let _ = out.flush();
        if args.group.is_some() {
            consumer
                .commit()
                .await
                .context("cannot commit the group's offsets")?;
        }
        Ok(())
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
