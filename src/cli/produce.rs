//! `meridian produce TOPIC`: one record per stdin line.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::AsyncBufReadExt;

use super::connect::ConnectArgs;
use broker::client::{Acks, Producer, ProducerConfig};
use broker::record::Record;

/// Acknowledgement level, as Kafka's `acks`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    /// acks=0: do not wait.
    #[value(name = "0")]
    None,
    /// acks=1: the leader has it.
    #[value(name = "1")]
    Leader,
    /// acks=all: every in-sync replica has it.
    All,
}

/// Produce records read from stdin, one per line.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header for every record, KEY=VALUE; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition instead of using the partitioner.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    pub acks: AcksArg,
    /// How long a batch waits for more records, e.g. 5ms.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Largest batch in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_size: usize,
    /// Print a progress line every second on stderr.
    #[arg(long)]
    pub progress: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Reads stdin to the end, producing a record per line; fails if any record failed.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let headers = args
        .headers
        .iter()
        .map(|h| {
            broker::record::parse_header(h).map_err(|e| super::UsageError(e.to_string()).into())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err(super::UsageError("--key-separator must not be empty".into()).into());
    }
    super::runtime()?.block_on(async move {
        let client = args.connect.connect().await?;
        client.topic(&args.topic).await.with_context(|| format!("cannot produce to {}", args.topic))?;
        let mut config = ProducerConfig {
            acks: match args.acks {
                AcksArg::None => Acks::None,
                AcksArg::Leader => Acks::Leader,
                AcksArg::All => Acks::All,
            },
            ..ProducerConfig::default()
        };
        config.batching.linger = args.linger;
        config.batching.max_batch_bytes = args.batch_size;
        config.batching.buffer_memory = config.batching.buffer_memory.max(args.batch_size * 4);
        let producer = Producer::new(client, config)?;

        let (deliveries_tx, mut deliveries_rx) = tokio::sync::mpsc::channel(65536);
        let collector = tokio::spawn(async move {
            let mut pending = FuturesOrdered::new();
            let mut acked: u64 = 0;
            let mut first_error: Option<broker::BrokerError> = None;
            loop {
                tokio::select! {
                    delivery = deliveries_rx.recv() => match delivery {
                        Some(d) => pending.push_back(d),
                        None => break,
                    },
                    Some(result) = pending.next(), if !pending.is_empty() => match result {
                        Ok(_) => acked += 1,
                        Err(err) => { first_error.get_or_insert(err); }
                    },
                }
            }
            while let Some(result) = pending.next().await {
                match result {
                    Ok(_) => acked += 1,
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
            (acked, first_error)
        });

        let key = args.key.map(Bytes::from);
        let mut lines = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
        let mut line = Vec::new();
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let mut sent: u64 = 0;
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await.context("cannot read stdin")? == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let (record_key, value) = match &args.key_separator {
                Some(sep) => {
                    let at = find(&line, sep.as_bytes()).ok_or_else(|| {
                        super::UsageError(format!(
                            "line {} has no key separator {sep:?}; every line must be KEY{sep}VALUE",
                            sent + 1
                        ))
                    })?;
                    (Some(Bytes::copy_from_slice(&line[..at])), Bytes::copy_from_slice(&line[at + sep.len()..]))
                }
                None => (key.clone(), Bytes::copy_from_slice(&line)),
            };
            let record = Record {
                key: record_key,
                value: Some(value),
                headers: headers.clone(),
                timestamp_ms: now_ms(),
            };
            let delivery = producer.send(&args.topic, args.partition, record).await?;
            if deliveries_tx.send(Box::pin(delivery)).await.is_err() {
                break;
            }
            sent += 1;
            if args.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                let rate = sent as f64 / started.elapsed().as_secs_f64();
                eprintln!("produce: {sent} records sent to {} ({rate:.0} records/s)", args.topic);
            }
        }
        producer.flush().await?;
        drop(deliveries_tx);
        let (acked, first_error) = collector.await.context("delivery collector failed")?;
        let elapsed = started.elapsed().as_secs_f64();
        if args.progress || first_error.is_some() {
            eprintln!(
                "produce: {acked} of {sent} records acknowledged by {} in {elapsed:.1}s",
                args.topic
            );
        }
        if let Some(err) = first_error {
            return Err(err).with_context(|| format!("{} of {sent} records were not acknowledged", sent - acked));
        }
        Ok(())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
