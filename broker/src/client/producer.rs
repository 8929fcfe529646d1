//! The producer: records go into a per-topic accumulator (batching with linger and a
//! size limit, Kafka's partitioner), ready batches go to partition leaders.
//!
//! ```text
//!  send() ──lock──▶ accumulator.add ──(sealed)──▶ wake sender task
//!                                                      │ ready(now): encoded batches
//!                                                      ▼
//!                              per-partition queue ──▶ Produce requests (1, or up to 5
//!                                                      when idempotent) ──▶ replies, release
//! ```
//!
//! `send` adds the record to the accumulator itself, under a mutex held for
//! microseconds, instead of passing every record through a channel to one task: that
//! hop was the largest cost per record (BENCHMARKS.md). A background task only turns
//! ready batches into requests.
//!
//! Ordering: batches that become ready while a partition's requests are in flight queue
//! and leave together in its next request (the log appends a request's batches in order).
//! Without idempotence a partition has one request in flight, so nothing can overtake;
//! a retried request whose first attempt was in fact appended is then appended twice, as
//! in Kafka with `enable.idempotence=false`.
//!
//! With acks=all the producer is idempotent by default (Kafka's default too): it gets a
//! producer id from the cluster and stamps each batch, when first sent, with the id, an
//! epoch and the partition's next sequence number. The leader writes a batch only in
//! sequence and answers a retry with the offsets of its first write, so up to
//! `max_in_flight_per_partition` requests per partition can be in flight: a request the
//! leader receives before an earlier one waits there for it (up to 500 ms), or is refused
//! as out of sequence and sent again once the earlier ones are written. A request that fails for good leaves a hole no later batch can
//! pass, so the partition moves to a new epoch starting at sequence 0. The first request
//! of an epoch goes alone, because a leader accepts any first sequence from a producer
//! it does not know.
//!
//! Different partitions proceed in parallel, up to `max_in_flight` requests in all.

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
    /// With acks=all, stamp batches with a producer id and per-partition sequence
    /// numbers (Kafka's `enable.idempotence`, on by default there too): a retried
    /// request is written once, and several requests per partition can be in flight
    /// without reordering.
    pub idempotence: bool,
    /// Requests in flight per partition when idempotent (Kafka's
    /// `max.in.flight.requests.per.connection`, 5); otherwise always 1.
    pub max_in_flight_per_partition: usize,
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
            idempotence: true,
            max_in_flight_per_partition: 5,
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
    /// Ids of the requests in flight, oldest first.
    flights: VecDeque<u64>,
    /// Idempotence: the epoch and the sequence stamped on the next batch sent.
    epoch: i16,
    next_sequence: i32,
    /// A request of the current epoch was acknowledged, so the leader knows where this
    /// producer's sequence stands: more requests may follow it in flight. Until then one
    /// at a time (a leader accepts any first sequence from a producer it does not know).
    proven: bool,
}

impl PartitionQueue {
    /// How many requests may be in flight now.
    fn flight_limit(&self, idempotent: bool, max: usize) -> usize {
        if idempotent && self.proven {
            max.max(1)
        } else {
            1
        }
    }

    /// Stamps `batches` with the producer and the next sequence numbers.
    fn stamp(&mut self, producer_id: i64, batches: &mut [Pending]) {
        for pending in batches {
            // The encoder's buffer is usually ours alone: stamp it in place, no copy.
            let mut bytes = std::mem::take(&mut pending.batch.bytes)
                .try_into_mut()
                .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
            crate::log::batch::set_producer(
                &mut bytes,
                producer_id,
                self.epoch,
                self.next_sequence,
            );
            pending.batch.bytes = bytes.freeze();
            // Sequences wrap at i32::MAX back to 0, as Kafka's do.
            self.next_sequence = ((i64::from(self.next_sequence)
                + pending.batch.record_count as i64)
                % (i64::from(i32::MAX) + 1)) as i32;
        }
    }

    /// A request of epoch `epoch` finished. A failure leaves a hole in the sequence
    /// that no later batch can pass, so the next batch starts a new epoch at 0.
    fn finished(&mut self, id: u64, epoch: Option<i16>, succeeded: bool) {
        self.flights.retain(|f| *f != id);
        match epoch {
            Some(e) if e == self.epoch && succeeded => self.proven = true,
            Some(e) if e == self.epoch => {
                self.epoch = self.epoch.saturating_add(1);
                self.next_sequence = 0;
                self.proven = false;
            }
            _ => {}
        }
    }
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
                .all(|q| q.queued.is_empty() && q.flights.is_empty())
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
    /// The idempotent producer id (`None` inside: not idempotent, or the cluster could
    /// not give one).
    producer_id: tokio::sync::OnceCell<Option<i64>>,
    next_request: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn wants_idempotence(&self) -> bool {
        self.config.idempotence && self.config.acks == Acks::All
    }

    /// The producer id batches are stamped with, once obtained.
    fn stamping_id(&self) -> Option<i64> {
        self.producer_id.get().copied().flatten()
    }
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
            producer_id: tokio::sync::OnceCell::new(),
            next_request: std::sync::atomic::AtomicU64::new(0),
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
        if shared.wants_idempotence() {
            shared
                .producer_id
                .get_or_init(|| async {
                    match shared.client.init_producer_id().await {
                        Ok(id) => Some(id),
                        Err(err) => {
                            tracing::warn!(%err, "no producer id; sending without idempotence, one request per partition");
                            None
                        }
                    }
                })
                .await;
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

/// Starts requests for every partition with queued batches, up to its flight limit.
fn dispatch(shared: &Arc<Shared>, topic: &str, state: &mut TopicState) {
    let producer_id = shared.stamping_id();
    let max_per_partition = shared.config.max_in_flight_per_partition;
    for (&partition, queue) in state.queues.iter_mut() {
        while !queue.queued.is_empty()
            && queue.flights.len() < queue.flight_limit(producer_id.is_some(), max_per_partition)
        {
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
            let epoch = producer_id.map(|id| {
                queue.stamp(id, &mut pendings);
                queue.epoch
            });
            let id = shared
                .next_request
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            queue.flights.push_back(id);
            tokio::spawn(send_and_answer(
                shared.clone(),
                topic.to_owned(),
                partition,
                pendings,
                bytes,
                (id, epoch),
                permit,
            ));
        }
    }
}

/// Sends one request, answers its records' futures, and frees its place in flight.
async fn send_and_answer(
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    pendings: Vec<Pending>,
    bytes: usize,
    (id, epoch): (u64, Option<i16>),
    permit: tokio::sync::OwnedSemaphorePermit,
) {
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
    let started = Instant::now();
    let result = loop {
        let result = send_request(
            &shared.client,
            &topic,
            partition,
            records.clone(),
            config.acks,
            config.request_timeout,
        )
        .await;
        // With several requests in flight the leader may take a later one first and
        // refuse it as out of sequence: wait for the earlier ones, then send it again.
        // Only the oldest request in flight is refused for good (its predecessor failed).
        if let Err(err) = &result
            && epoch.is_some()
            && err.code() == crate::ErrorCode::OutOfOrderSequenceNumber
            && started.elapsed() < config.request_timeout
            && !is_oldest_in_flight(&shared, &topic, partition, id)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        break result;
    };
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
                queue.finished(id, epoch, result.is_ok());
            }
        }
    }
    shared.progress.notify_waiters();
    shared.wake.notify_one();
}

fn is_oldest_in_flight(shared: &Shared, topic: &str, partition: i32, id: u64) -> bool {
    let state = shared.state.lock().expect("producer state poisoned");
    state
        .topics
        .get(topic)
        .and_then(|t| t.queues.get(&partition))
        .is_none_or(|q| q.flights.front() == Some(&id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{tests::make_batch, validate_batch};

    fn pending(records: usize) -> Pending {
        let bytes = make_batch(0, records as i32 - 1, 1_000, b"records");
        Pending {
            batch: ReadyBatch {
                partition: 0,
                bytes: Bytes::from(bytes),
                record_count: records,
                reserved: 100,
            },
            replies: Vec::new(),
        }
    }

    fn sequences(batches: &[Pending]) -> Vec<(i16, i32)> {
        batches
            .iter()
            .map(|p| {
                let h = validate_batch(&p.batch.bytes).expect("valid after stamping");
                (h.producer_epoch, h.base_sequence)
            })
            .collect()
    }

    #[test]
    fn batches_get_consecutive_sequences_and_one_request_goes_alone_until_proven() {
        let mut queue = PartitionQueue::default();
        assert_eq!(queue.flight_limit(true, 5), 1, "unknown to the leader yet");
        let mut first = vec![pending(3), pending(2)];
        queue.stamp(42, &mut first);
        assert_eq!(sequences(&first), vec![(0, 0), (0, 3)]);
        queue.flights.push_back(1);
        queue.finished(1, Some(0), true);
        assert_eq!(queue.flight_limit(true, 5), 5);
        assert_eq!(queue.flight_limit(false, 5), 1, "never without idempotence");
        let mut next = vec![pending(1)];
        queue.stamp(42, &mut next);
        assert_eq!(sequences(&next), vec![(0, 5)]);
    }

    #[test]
    fn a_request_that_fails_for_good_starts_a_new_epoch_at_sequence_zero() {
        let mut queue = PartitionQueue::default();
        let mut sent = vec![pending(4)];
        queue.stamp(42, &mut sent);
        queue.flights.extend([1, 2]);
        queue.finished(1, Some(0), true);
        queue.finished(2, Some(0), false);
        assert_eq!((queue.epoch, queue.next_sequence), (1, 0));
        assert_eq!(
            queue.flight_limit(true, 5),
            1,
            "the new epoch proves itself first"
        );
        // A straggler of the old epoch finishing later changes nothing.
        queue.flights.push_back(3);
        queue.finished(3, Some(0), false);
        assert_eq!((queue.epoch, queue.next_sequence), (1, 0));
        let mut again = vec![pending(2)];
        queue.stamp(42, &mut again);
        assert_eq!(sequences(&again), vec![(1, 0)]);
    }
}
