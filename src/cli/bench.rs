//! `meridian bench produce|consume`: throughput and latency against a running broker,
//! through `broker::client` exactly as applications use it. Figures go in BENCHMARKS.md.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};

use super::connect::ConnectArgs;
use super::produce::AcksArg;
use broker::client::{Acks, Consumer, ConsumerConfig, Producer, ProducerConfig, TopicSpec};
use broker::record::Record;

/// Benchmarks against a running deployment.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce N records of a fixed size as fast as the producer allows.
    Produce(ProduceBench),
    /// Consume a topic from the beginning to its end.
    Consume(ConsumeBench),
}

/// `bench produce` settings.
#[derive(Debug, Args)]
pub struct ProduceBench {
    /// Topic to write (created with --partitions if missing).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value = "1")]
    pub acks: AcksArg,
    /// Largest batch in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_size: usize,
    /// Batch linger, e.g. 2ms.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `bench consume` settings.
#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Topic to read from the beginning to its current end.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs a benchmark and prints its figures.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            BenchCommand::Produce(args) => produce(args).await,
            BenchCommand::Consume(args) => consume(args).await,
        }
    })
}

async fn produce(args: ProduceBench) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    if client.topic(&args.topic).await.is_err() {
        client
            .create_topic(TopicSpec {
                name: args.topic.clone(),
                partitions: args.partitions,
                ..TopicSpec::default()
            })
            .await
            .with_context(|| format!("cannot create benchmark topic {}", args.topic))?;
    }
    let mut config = ProducerConfig {
        acks: match args.acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        },
        ..ProducerConfig::default()
    };
    config.batching.max_batch_bytes = args.batch_size;
    config.batching.linger = args.linger;
    config.batching.buffer_memory = (args.batch_size * 64).max(64 << 20);
    let producer = Producer::new(client, config)?;
    let value = Bytes::from(
        (0..args.record_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, _)>(1 << 16);
    let collector = tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let mut latencies: Vec<Duration> = Vec::new();
        let mut failed = 0u64;
        let mut first_error = None;
        let mut open = true;
        while open || !pending.is_empty() {
            tokio::select! {
                next = rx.recv(), if open => match next {
                    Some((sent, delivery)) => pending.push(async move {
                        let result: Result<broker::client::Delivery, broker::BrokerError> = delivery.await;
                        (sent, result)
                    }),
                    None => open = false,
                },
                Some((sent, result)) = pending.next(), if !pending.is_empty() => match result {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(err) => {
                        failed += 1;
                        first_error.get_or_insert(err);
                    }
                },
            }
        }
        (latencies, failed, first_error)
    });

    let started = Instant::now();
    let mut last_progress = Instant::now();
    for i in 0..args.records {
        let record = Record {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: 0,
        };
        let delivery = producer.send(&args.topic, None, record).await?;
        // Every record is awaited (so failures count), its latency sampled from send to ack.
        tx.send((Instant::now(), Box::pin(delivery)))
            .await
            .context("collector stopped")?;
        if last_progress.elapsed() >= Duration::from_secs(2) && !args.json {
            last_progress = Instant::now();
            eprintln!("bench: {i} of {} records sent", args.records);
        }
    }
    producer.flush().await?;
    drop(tx);
    let (mut latencies, failed, first_error) = collector.await?;
    let elapsed = started.elapsed();
    if let Some(err) = first_error {
        return Err(err).with_context(|| format!("{failed} records failed"));
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let secs = elapsed.as_secs_f64();
    let records_per_s = args.records as f64 / secs;
    let mb_per_s = (args.records as f64 * args.record_size as f64) / secs / 1e6;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": args.records, "record_size": args.record_size, "seconds": secs,
                "records_per_s": records_per_s, "mb_per_s": mb_per_s,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            })
        );
    } else {
        println!(
            "produce: {} records of {} B in {secs:.2}s: {records_per_s:.0} records/s, {mb_per_s:.1} MB/s, latency p50 {:.2} ms p99 {:.2} ms",
            args.records,
            args.record_size,
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(())
}

async fn consume(args: ConsumeBench) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let mut config = ConsumerConfig::new(args.topic.clone());
    config.max_wait = Duration::from_millis(100);
    let mut consumer = Consumer::new(client, config).await?;
    let ends = consumer.end_offsets().await?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while ends
        .iter()
        .any(|(p, end)| consumer.positions().get(p).is_some_and(|pos| pos < end))
    {
        for r in consumer.poll().await? {
            records += 1;
            bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let records_per_s = records as f64 / secs;
    let mb_per_s = bytes as f64 / secs / 1e6;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"records": records, "seconds": secs, "records_per_s": records_per_s, "mb_per_s": mb_per_s})
        );
    } else {
        println!(
            "consume: {records} records in {secs:.2}s: {records_per_s:.0} records/s, {mb_per_s:.1} MB/s"
        );
    }
    Ok(())
}
