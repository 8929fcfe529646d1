//! The producer: records go into a per-topic accumulator (batching with linger and a
//! size limit, Kafka's partitioner), ready batches go to partition leaders.
//!
//! ```text
//!  send() ──lock──▶ accumulator.add ──(sealed)──▶ wake sender task
//!                                                      │ ready(now): encoded batches
//!                                                      ▼
//!                              per-partition queue ──▶ Produce request (one in flight
//!                                                      per partition) ──▶ replies, release
//! ```
//!
//! `send` adds the record to the accumulator itself, under a mutex held for
//! microseconds, instead of passing every record through a channel to one task: that
//! hop was the largest cost per record (BENCHMARKS.md). A background task only turns
//! ready batches into requests.
//!
//! Ordering: a partition has at most one Produce request in flight; batches that become
//! ready meanwhile queue and leave together in the next request (the log appends a
//! request's batches in order). Different partitions proceed in parallel, up to
//! `max_in_flight` requests, so a producer keeps many partitions busy without ever
//! reordering one. Without idempotence (not built yet) a retried request whose first
//! attempt was in fact appended is appended twice, as in Kafka with
//! `enable.idempotence=false`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::client::{Client, status_to_error};
use crate::error::{BrokerError, Result};
use crate::proto;
use crate::record::{
    Accumulator, AccumulatorConfig, Append, Partitioner, ReadyBatch, Record, SealedBatch,
};

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

/// A batch waiting to be sent, with the replies of its records in order.
struct Pending {
    batch: ReadyBatch,
    replies: Vec<Reply>,
}

#[derive(Default)]
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

impl TopicState {
    /// Moves an encoded batch to its partition's queue with its records' replies.
    fn enqueue(&mut self, batch: ReadyBatch, replies: Vec<Reply>) {
        self.partitioner
            .on_batch_ready(batch.partition, self.partition_count);
        self.queues
            .entry(batch.partition)
            .or_default()
            .queued
            .push_back(Pending { batch, replies });
    }

    fn is_idle(&self) -> bool {
        self.accumulator.is_empty()
            && self
                .queues
                .values()
                .all(|q| q.queued.is_empty() && !q.in_flight)
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<String, TopicState>,
    /// Set by `flush`: drain every accumulator now, regardless of linger.
    drain: bool,
    closed: bool,
    /// Batches the sender task took out and is encoding (in neither accumulator nor queue).
    encoding: usize,
}

impl State {
    fn is_idle(&self) -> bool {
        self.encoding == 0 && self.topics.values().all(TopicState::is_idle)
    }
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the sender task: a batch was sealed, a request finished, a flush began.
    wake: Notify,
    /// Wakes senders blocked on a full buffer, and flushers, when memory is released.
    progress: Notify,
    permits: Arc<Semaphore>,
}

/// Sends records to one region's cluster. Cheap to clone; every clone shares the same
/// buffers and background task. Dropping the last clone stops the producer after
/// flushing what was buffered.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _stopper: Arc<Stopper>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// Closes the producer when the last handle goes away.
struct Stopper(Arc<Shared>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.state.lock().expect("producer state poisoned").closed = true;
        self.0.wake.notify_one();
    }
}

impl Producer {
    /// Starts a producer on `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        config.batching.validate()?;
        let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let shared = Arc::new(Shared {
            client,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: Notify::new(),
            permits,
        });
        tokio::spawn(run_sender(shared.clone()));
        Ok(Self {
            _stopper: Arc::new(Stopper(shared.clone())),
            shared,
        })
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
        self.add(topic, partition, record, reply).await?;
        Ok(async move { delivery.await.map_err(|_| closed())? })
    }

    async fn add(
        &self,
        topic: &str,
        partition: Option<i32>,
        mut record: Record,
        reply: Reply,
    ) -> Result<()> {
        let shared = &self.shared;
        let known = shared
            .state
            .lock()
            .expect("producer state poisoned")
            .topics
            .contains_key(topic);
        if !known {
            let meta = shared.client.topic(topic).await?;
            let accumulator = Accumulator::new(shared.config.batching)?;
            let mut state = shared.state.lock().expect("producer state poisoned");
            state
                .topics
                .entry(topic.to_owned())
                .or_insert_with(|| TopicState {
                    accumulator,
                    partitioner: Partitioner::new(rand_seed()),
                    partition_count: meta.partitions.len() as i32,
                    waiting: HashMap::new(),
                    queues: HashMap::new(),
                });
        }
        let mut chosen_partition = partition;
        loop {
            // Register interest before looking, so a release between the look and the
            // wait is not missed.
            let released = shared.progress.notified();
            {
                let mut guard = shared.state.lock().expect("producer state poisoned");
                let t = guard
                    .topics
                    .get_mut(topic)
                    .expect("topic state inserted above");
                let chosen = match chosen_partition {
                    Some(p) if (0..t.partition_count).contains(&p) => p,
                    Some(p) => {
                        return Err(BrokerError::InvalidPartition {
                            topic: topic.to_owned(),
                            partition: p,
                            count: t.partition_count,
                        });
                    }
                    None => t
                        .partitioner
                        .partition(record.key.as_deref(), t.partition_count)?,
                };
                match t.accumulator.add(chosen, record, Instant::now())? {
                    Append::Added { batch_sealed } => {
                        let waiting = t.waiting.entry(chosen).or_default();
                        let first = waiting.is_empty();
                        waiting.push_back(reply);
                        if batch_sealed {
                            t.partitioner.on_batch_ready(chosen, t.partition_count);
                        }
                        drop(guard);
                        if batch_sealed || first {
                            // A sealed batch can leave now; a first record starts a linger.
                            shared.wake.notify_one();
                        }
                        return Ok(());
                    }
                    Append::Full(back) => {
                        record = back;
                        chosen_partition = Some(chosen);
                    }
                }
            }
            shared.wake.notify_one();
            released.await;
        }
    }

    /// Sends everything buffered now and waits until every record sent before this call
    /// is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.shared;
        loop {
            let progressed = shared.progress.notified();
            {
                let mut state = shared.state.lock().expect("producer state poisoned");
                if state.is_idle() {
                    return Ok(());
                }
                state.drain = true;
            }
            shared.wake.notify_one();
            progressed.await;
        }
    }
}

fn closed() -> BrokerError {
    BrokerError::InvalidRequest {
        reason: "the producer has stopped".into(),
    }
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Turns ready batches into requests until the producer is closed and idle.
async fn run_sender(shared: Arc<Shared>) {
    loop {
        let woken = shared.wake.notified();
        // Take what is ready under the lock, with the replies of its records...
        let taken: Vec<(String, SealedBatch, Vec<Reply>)> = {
            let mut state = shared.state.lock().expect("producer state poisoned");
            let state = &mut *state;
            let now = Instant::now();
            let drain = std::mem::take(&mut state.drain) || state.closed;
            let mut taken = Vec::new();
            for (name, t) in state.topics.iter_mut() {
                let sealed = if drain {
                    t.accumulator.take_all()
                } else if t.accumulator.next_ready_at().is_some_and(|at| at <= now) {
                    t.accumulator.take_ready(now)
                } else {
                    continue;
                };
                for batch in sealed {
                    let waiting = t.waiting.entry(batch.partition()).or_default();
                    let replies: Vec<Reply> = waiting
                        .drain(..batch.record_count().min(waiting.len()))
                        .collect();
                    taken.push((name.clone(), batch, replies));
                }
            }
            state.encoding = taken.len();
            taken
        };
        // ...encode outside it, so that send() is never held up by an encode...
        let compression = shared.config.batching.compression;
        let encoded: Vec<_> = taken
            .into_iter()
            .map(|(topic, batch, replies)| {
                let reserved = batch.reserved();
                (
                    topic,
                    batch.encode(compression).map_err(|e| (e, reserved)),
                    replies,
                )
            })
            .collect();
        // ...and queue and send under it again, in the order taken.
        let next_ready = {
            let mut state = shared.state.lock().expect("producer state poisoned");
            let state = &mut *state;
            state.encoding = 0;
            for (topic, batch, replies) in encoded {
                let Some(t) = state.topics.get_mut(&topic) else {
                    continue;
                };
                match batch {
                    Ok(batch) => t.enqueue(batch, replies),
                    Err((err, reserved)) => {
                        t.accumulator.release_reserved(reserved);
                        for reply in replies {
                            let _ = reply.send(Err(clone_error(&err)));
                        }
                    }
                }
            }
            for (name, t) in state.topics.iter_mut() {
                dispatch(&shared, name, t);
            }
            if state.closed && state.is_idle() {
                shared.progress.notify_waiters();
                return;
            }
            state
                .topics
                .values()
                .filter_map(|t| t.accumulator.next_ready_at())
                .min()
        };
        match next_ready {
            Some(at) => {
                let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(at), woken).await;
            }
            None => woken.await,
        }
    }
}

/// Starts a request for every partition with queued batches and nothing in flight.
fn dispatch(shared: &Arc<Shared>, topic: &str, state: &mut TopicState) {
    for (&partition, queue) in state.queues.iter_mut() {
        if queue.in_flight || queue.queued.is_empty() {
            continue;
        }
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            return;
        };
        let mut pendings = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.queued.front() {
            if !pendings.is_empty()
                && bytes + next.batch.bytes.len() > shared.config.max_request_bytes
            {
                break;
            }
            bytes += next.batch.bytes.len();
            pendings.push(queue.queued.pop_front().expect("front exists"));
        }
        queue.in_flight = true;
        let shared = shared.clone();
        let topic = topic.to_owned();
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
            let config = &shared.config;
            let result = send_request(
                &shared.client,
                &topic,
                partition,
                records,
                config.acks,
                config.request_timeout,
            )
            .await;
            let mut next_offset = result.as_ref().map(|base| *base).unwrap_or(-1);
            let mut batches = Vec::with_capacity(pendings.len());
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
            {
                let mut state = shared.state.lock().expect("producer state poisoned");
                if let Some(t) = state.topics.get_mut(&topic) {
                    for batch in &batches {
                        t.accumulator.release(batch);
                    }
                    if let Some(queue) = t.queues.get_mut(&partition) {
                        queue.in_flight = false;
                    }
                }
            }
            shared.progress.notify_waiters();
            shared.wake.notify_one();
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
                let result = super::raw::produce_result(response, topic, partition)?;
                Ok(result.base_offset)
            }
        })
        .await
}
