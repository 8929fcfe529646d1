//! The workload: writers that produce unique record ids (`<writer>:<sequence>`, also the
//! value) with acks=all and keep every acknowledgement the cluster gave. Sends that fail
//! are counted, not retried by hand: the client already retries leader changes, and a
//! write that was never acknowledged promises nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use broker::client::{Acks, Client, Producer, ProducerConfig};
use broker::record::Record;
use bytes::Bytes;
use tokio::sync::{Mutex, Semaphore};

use crate::history::{Ack, PartitionId, record_id};

/// What the writers recorded.
#[derive(Debug, Default)]
pub struct WorkloadLog {
    /// Records handed to the producer.
    pub produced: AtomicU64,
    /// Sends that failed (never acknowledged).
    pub failed: AtomicU64,
    /// Every acknowledgement, in the order they arrived.
    pub acks: Mutex<Vec<Ack>>,
}

/// Running writers; [`Workload::stop`] ends them and waits for outstanding sends.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Shared with the writers.
    pub log: Arc<WorkloadLog>,
}

impl Workload {
    /// Starts `writers` writers on `topic` in `region`, each sending about `rate` records a
    /// second.
    pub fn start(client: Client, region: &str, topic: &str, writers: u32, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(WorkloadLog::default());
        let config = ProducerConfig {
            acks: Acks::All,
            request_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        };
        let tasks = (0..writers)
            .map(|w| {
                let writer = format!("{region}-w{w}");
                let (client, stop, log, topic, region) = (
                    client.clone(),
                    stop.clone(),
                    log.clone(),
                    topic.to_string(),
                    region.to_string(),
                );
                let config = config.clone();
                tokio::spawn(async move {
                    let Ok(producer) = Producer::new(client, config) else {
                        log.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    write_loop(producer, &writer, &region, &topic, rate, &stop, &log).await;
                })
            })
            .collect();
        Self { stop, tasks, log }
    }

    /// Stops the writers and waits until every outstanding send has an answer.
    pub async fn stop(self) -> Arc<WorkloadLog> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.log
    }
}

async fn write_loop(
    producer: Producer,
    writer: &str,
    region: &str,
    topic: &str,
    rate: u32,
    stop: &AtomicBool,
    log: &Arc<WorkloadLog>,
) {
    let outstanding = Arc::new(Semaphore::new(2_000));
    let pause = Duration::from_secs(1) / rate.max(1);
    let mut sequence = 0u64;
    let mut replies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(permit) = outstanding.clone().acquire_owned().await else {
            break;
        };
        let id = record_id(writer, sequence);
        let mut record = Record::new(Bytes::from(id.clone()), now_ms());
        record.key = Some(Bytes::from(format!("key-{}", sequence % 32)));
        record.headers = vec![("writer".to_string(), Some(Bytes::from(writer.to_string())))];
        sequence += 1;
        log.produced.fetch_add(1, Ordering::Relaxed);
        match producer.send(topic, None, record).await {
            Ok(delivery) => {
                let (log, region, topic) = (log.clone(), region.to_string(), topic.to_string());
                replies.push(tokio::spawn(async move {
                    let _permit = permit;
                    match delivery.await {
                        Ok(d) => log.acks.lock().await.push(Ack {
                            record_id: id,
                            at: PartitionId::new(&region, &topic, d.partition),
                            offset: d.offset,
                        }),
                        Err(_) => {
                            log.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            Err(_) => {
                log.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(pause).await;
    }
    let _ = producer.flush().await;
    for reply in replies {
        let _ = reply.await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
