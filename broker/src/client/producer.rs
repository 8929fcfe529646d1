//! The producer: records go into a per-topic accumulator (batching with linger and a
//! size limit, Kafka's partitioner), ready batches go to partition leaders.
//!
//! Ordering: a partition has at most one Produce request in flight; batches that become
//! ready meanwhile queue and leave together in the next request (the log appends a
//! request's batches in order). Different partitions proceed in parallel, up to
//! `max_in_flight` requests, so a producer keeps many partitions busy without ever
//! reordering one. Without idempotence (not built yet) a retried request whose first
//! attempt was in fact appended is appended twice, as in Kafka with
//! `enable.idempotence=false`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::client::{Client, remote_error, status_to_error};
use crate::error::{BrokerError, Result};
use crate::proto;
use crate::record::{Accumulator, AccumulatorConfig, Append, Partitioner, ReadyBatch, Record};

/// How many replicas must have a record before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Do not wait (acks=0).
    None,
    /// The leader has it, durable per the topic's flush policy (acks=1).
    Leader,
    /// Every in-sync replica has it (acks=all).
    All,
}

/// Producer settings, with Kafka-like defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level.
    pub acks: Acks,
    /// Batching: size, linger, memory, compression.
    pub batching: AccumulatorConfig,
    /// Produce requests in flight at once (across partitions).
    pub max_in_flight: usize,
    /// Most bytes of batches one request carries for one partition.
    pub max_request_bytes: usize,
    /// Server-side timeout of a request.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::Leader,
            batching: AccumulatorConfig::default(),
            max_in_flight: 16,
            max_request_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with acks=0.
    pub offset: i64,
}

type Reply = oneshot::Sender<Result<Delivery>>;

enum Command {
    Send {
        topic: String,
        partition: Option<i32>,
        record: Record,
        reply: Reply,
    },
    Flush(oneshot::Sender<()>),
}

/// Sends records to one region's cluster. Cheap to clone; every clone feeds the same
/// background task.
#[derive(Debug, Clone)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
}

impl Producer {
    /// Starts a producer on `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        config.batching.validate()?;
        let (commands, receiver) = mpsc::channel(4096);
        tokio::spawn(run(client, config, receiver));
        Ok(Self { commands })
    }

    /// Queues a record; `partition` overrides the partitioner. The returned future
    /// resolves once the record is acknowledged (or fails). Waits while the producer's
    /// buffer is full.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: Record,
    ) -> Result<impl std::future::Future<Output = Result<Delivery>> + use<>> {
        let (reply, delivery) = oneshot::channel();
        self.commands
            .send(Command::Send {
                topic: topic.to_owned(),
                partition,
                record,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        Ok(async move { delivery.await.map_err(|_| closed())? })
    }

    /// Sends everything buffered now and waits until every record sent before this call
    /// is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| closed())?;
        wait.await.map_err(|_| closed())
    }
}

fn closed() -> BrokerError {
    BrokerError::InvalidRequest {
        reason: "the producer has stopped".into(),
    }
}

/// A batch waiting to be sent, with the replies of its records in order.
struct Pending {
    batch: ReadyBatch,
    replies: Vec<Reply>,
}

struct PartitionQueue {
    queued: VecDeque<Pending>,
    in_flight: bool,
}

struct TopicState {
    accumulator: Accumulator,
    partitioner: Partitioner,
    partition_count: i32,
    /// Replies of buffered records, per partition, in add order.
    waiting: HashMap<i32, VecDeque<Reply>>,
    queues: HashMap<i32, PartitionQueue>,
}

/// A finished request: which partition, and the batches to release.
struct Completed {
    topic: String,
    partition: i32,
    batches: Vec<ReadyBatch>,
}

async fn run(client: Client, config: ProducerConfig, mut commands: mpsc::Receiver<Command>) {
    let mut topics: HashMap<String, TopicState> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completed>();
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut blocked: Option<Command> = None;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;

    loop {
        let next_ready = topics
            .values()
            .filter_map(|t| t.accumulator.next_ready_at())
            .min();
        let sleep_until = next_ready.map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                if let Some(state) = topics.get_mut(&done.topic) {
                    for batch in &done.batches {
                        state.accumulator.release(batch);
                    }
                    if let Some(queue) = state.queues.get_mut(&done.partition) {
                        queue.in_flight = false;
                    }
                }
                if let Some(command) = blocked.take() {
                    blocked = handle(&client, &config, &mut topics, command, &mut flushes).await;
                }
            }
            command = commands.recv(), if open && blocked.is_none() => match command {
                Some(command) => blocked = handle(&client, &config, &mut topics, command, &mut flushes).await,
                None => {
                    open = false;
                    for state in topics.values_mut() {
                        drain(state, true);
                    }
                }
            },
            _ = async { match sleep_until { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
        }
        let now = Instant::now();
        for state in topics.values_mut() {
            if state
                .accumulator
                .next_ready_at()
                .is_some_and(|at| at <= now)
            {
                match state.accumulator.ready(now) {
                    Ok(batches) => enqueue(state, batches),
                    Err(err) => fail_all(state, &err),
                }
            }
        }
        for (name, state) in topics.iter_mut() {
            dispatch(&client, &config, name, state, &permits, &done_tx);
        }
        let idle = topics.values().all(|t| {
            t.accumulator.is_empty()
                && t.queues
                    .values()
                    .all(|q| q.queued.is_empty() && !q.in_flight)
        });
        if idle {
            for flush in flushes.drain(..) {
                let _ = flush.send(());
            }
            if !open {
                return;
            }
        }
    }
}

/// Handles one command; returns it back when the buffer is full and it must wait.
async fn handle(
    client: &Client,
    config: &ProducerConfig,
    topics: &mut HashMap<String, TopicState>,
    command: Command,
    flushes: &mut Vec<oneshot::Sender<()>>,
) -> Option<Command> {
    match command {
        Command::Flush(done) => {
            for state in topics.values_mut() {
                drain(state, false);
            }
            flushes.push(done);
            None
        }
        Command::Send {
            topic,
            partition,
            record,
            reply,
        } => {
            if !topics.contains_key(&topic) {
                let meta = match client.topic(&topic).await {
                    Ok(meta) => meta,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return None;
                    }
                };
                let accumulator = match Accumulator::new(config.batching) {
                    Ok(a) => a,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return None;
                    }
                };
                topics.insert(
                    topic.clone(),
                    TopicState {
                        accumulator,
                        partitioner: Partitioner::new(rand_seed()),
                        partition_count: meta.partitions.len() as i32,
                        waiting: HashMap::new(),
                        queues: HashMap::new(),
                    },
                );
            }
            let state = topics.get_mut(&topic).expect("inserted above");
            let chosen = match partition {
                Some(p) if (0..state.partition_count).contains(&p) => Ok(p),
                Some(p) => Err(BrokerError::InvalidPartition {
                    topic: topic.clone(),
                    partition: p,
                    count: state.partition_count,
                }),
                None => state
                    .partitioner
                    .partition(record.key.as_deref(), state.partition_count),
            };
            let chosen = match chosen {
                Ok(p) => p,
                Err(err) => {
                    let _ = reply.send(Err(err));
                    return None;
                }
            };
            match state.accumulator.add(chosen, record, Instant::now()) {
                Ok(Append::Added { batch_sealed }) => {
                    state.waiting.entry(chosen).or_default().push_back(reply);
                    if batch_sealed {
                        state
                            .partitioner
                            .on_batch_ready(chosen, state.partition_count);
                    }
                    None
                }
                Ok(Append::Full(record)) => Some(Command::Send {
                    topic,
                    partition: Some(chosen),
                    record,
                    reply,
                }),
                Err(err) => {
                    let _ = reply.send(Err(err));
                    None
                }
            }
        }
    }
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

fn drain(state: &mut TopicState, _closing: bool) {
    match state.accumulator.drain_all() {
        Ok(batches) => enqueue(state, batches),
        Err(err) => fail_all(state, &err),
    }
}

fn enqueue(state: &mut TopicState, batches: Vec<ReadyBatch>) {
    for batch in batches {
        let waiting = state.waiting.entry(batch.partition).or_default();
        let replies: Vec<Reply> = waiting
            .drain(..batch.record_count.min(waiting.len()))
            .collect();
        state
            .partitioner
            .on_batch_ready(batch.partition, state.partition_count);
        state
            .queues
            .entry(batch.partition)
            .or_insert_with(|| PartitionQueue {
                queued: VecDeque::new(),
                in_flight: false,
            })
            .queued
            .push_back(Pending { batch, replies });
    }
}

fn fail_all(state: &mut TopicState, err: &BrokerError) {
    let message = err.to_string();
    for (_, waiting) in state.waiting.drain() {
        for reply in waiting {
            let _ = reply.send(Err(BrokerError::InvalidRequest {
                reason: message.clone(),
            }));
        }
    }
}

/// Starts a request for every partition with queued batches and nothing in flight.
fn dispatch(
    client: &Client,
    config: &ProducerConfig,
    topic: &str,
    state: &mut TopicState,
    permits: &Arc<Semaphore>,
    done: &mpsc::UnboundedSender<Completed>,
) {
    for (&partition, queue) in state.queues.iter_mut() {
        if queue.in_flight || queue.queued.is_empty() {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return;
        };
        let mut pendings = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.queued.front() {
            if !pendings.is_empty() && bytes + next.batch.bytes.len() > config.max_request_bytes {
                break;
            }
            bytes += next.batch.bytes.len();
            pendings.push(queue.queued.pop_front().expect("front exists"));
        }
        queue.in_flight = true;
        let client = client.clone();
        let topic = topic.to_owned();
        let done = done.clone();
        let acks = config.acks;
        let timeout = config.request_timeout;
        tokio::spawn(async move {
            // One batch goes as it is; several are concatenated into one request.
            let records = match pendings.as_slice() {
                [only] => only.batch.bytes.clone(),
                _ => {
                    let mut joined = Vec::with_capacity(bytes);
                    for pending in &pendings {
                        joined.extend_from_slice(&pending.batch.bytes);
                    }
                    Bytes::from(joined)
                }
            };
            let result = send_request(&client, &topic, partition, records, acks, timeout).await;
            let mut batches = Vec::with_capacity(pendings.len());
            let mut next_offset = result.as_ref().map(|base| *base).unwrap_or(-1);
            for pending in pendings {
                for reply in pending.replies {
                    let outcome = match &result {
                        Ok(_) => {
                            let offset = next_offset;
                            if next_offset >= 0 {
                                next_offset += 1;
                            }
                            Ok(Delivery { partition, offset })
                        }
                        Err(err) => Err(clone_error(err)),
                    };
                    let _ = reply.send(outcome);
                }
                batches.push(pending.batch);
            }
            drop(permit);
            let _ = done.send(Completed {
                topic,
                partition,
                batches,
            });
        });
    }
}

fn clone_error(err: &BrokerError) -> BrokerError {
    match err {
        BrokerError::Remote { code, message } => BrokerError::Remote {
            code: *code,
            message: message.clone(),
        },
        BrokerError::Unreachable { addr, reason } => BrokerError::Unreachable {
            addr: addr.clone(),
            reason: reason.clone(),
        },
        other => BrokerError::InvalidRequest {
            reason: other.to_string(),
        },
    }
}

/// Sends one partition's batches to its leader, retrying retriable errors; returns the
/// base offset the leader assigned.
async fn send_request(
    client: &Client,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: Acks,
    timeout: Duration,
) -> Result<i64> {
    let acks = match acks {
        Acks::None => proto::Acks::None,
        Acks::Leader => proto::Acks::Leader,
        Acks::All => proto::Acks::All,
    } as i32;
    client
        .with_leader(topic, partition, |mut stub, addr| {
            let request = proto::ProduceRequest {
                topics: vec![proto::TopicRecords {
                    topic: topic.to_owned(),
                    partitions: vec![proto::PartitionRecords {
                        partition,
                        records: records.clone(),
                    }],
                }],
                acks,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                keep_offsets: false,
            };
            async move {
                let response = stub
                    .produce(request)
                    .await
                    .map_err(|s| status_to_error(&addr, s))?
                    .into_inner();
                let result = response
                    .topics
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .find(|p| p.partition == partition)
                    .ok_or_else(|| BrokerError::InvalidRequest {
                        reason: format!(
                            "the broker's answer has no result for {topic}-{partition}"
                        ),
                    })?;
                if result.error_code != 0 {
                    return Err(remote_error(result.error_code, result.error_message));
                }
                Ok(result.base_offset)
            }
        })
        .await
}
