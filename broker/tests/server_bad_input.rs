//! The gRPC server refuses bad input with a precise code and appends nothing: garbage
//! bytes, a batch whose CRC is wrong, an unknown topic, an invalid partition, and an
//! offset outside the log. A real server on a real loopback socket, driven with the raw
//! gRPC stub so that the client's own validation cannot hide anything.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;

use broker::ErrorCode;
use broker::proto::{self, broker_client::BrokerClient};
use broker::record::{Record, encode_batch};
use bytes::Bytes;

fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

async fn start(
    dir: &Path,
    ip: Ipv4Addr,
    auto_create: bool,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let grpc = free_addr(ip);
    let text = format!(
        r#"[deployment]
name = "t"
[tls]
dir = "tls"
[tls.listeners]
client = "off"
inter_broker = "off"
inter_region = "required"
kafka = "off"
metrics = "off"
[gossip]
keyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
[topic_defaults]
partitions = 2
replication_factor = 1
min_insync_replicas = 1
auto_create_topics = {auto_create}
[[regions]]
name = "r"
[[regions.brokers]]
name = "b1"
id = 7
grpc = "{grpc}"
gossip = "{}"
metrics = "{}"
data_dir = "data"
"#,
        free_addr(ip),
        free_addr(ip)
    );
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    let view = topology::load(&path).unwrap().node("r/b1").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        broker::server::serve(&view, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (format!("http://{grpc}"), stop)
}

fn produce(topic: &str, partition: i32, records: Bytes) -> proto::ProduceRequest {
    proto::ProduceRequest {
        topics: vec![proto::TopicRecords {
            topic: topic.into(),
            partitions: vec![proto::PartitionRecords { partition, records }],
        }],
        acks: proto::Acks::Leader as i32,
        timeout_ms: 5000,
        keep_offsets: false,
    }
}

async fn result(
    stub: &mut BrokerClient<tonic::transport::Channel>,
    request: proto::ProduceRequest,
) -> proto::PartitionProduceResult {
    stub.produce(request)
        .await
        .unwrap()
        .into_inner()
        .topics
        .remove(0)
        .partitions
        .remove(0)
}

async fn high_watermark(stub: &mut BrokerClient<tonic::transport::Channel>, topic: &str) -> i64 {
    let response = stub
        .list_offsets(proto::ListOffsetsRequest {
            topic: topic.into(),
            partitions: vec![0],
            timestamp: -1,
        })
        .await
        .unwrap()
        .into_inner();
    response.partitions[0].offset
}

#[tokio::test]
async fn bad_input_is_refused_with_a_precise_code_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start(dir.path(), Ipv4Addr::new(127, 0, 0, 31), false).await;
    let mut stub = BrokerClient::connect(url).await.unwrap();
    stub.create_topics(proto::CreateTopicsRequest {
        topics: vec![proto::TopicSpec {
            name: "t".into(),
            partitions: 1,
            ..Default::default()
        }],
        validate_only: false,
    })
    .await
    .unwrap();

    let good = encode_batch(&[Record::new("hello", 1)], Default::default()).unwrap();
    let accepted = result(&mut stub, produce("t", 0, good.clone())).await;
    assert_eq!(accepted.error_code, 0, "{}", accepted.error_message);
    assert_eq!(high_watermark(&mut stub, "t").await, 1);

    // Garbage bytes.
    let garbage = result(
        &mut stub,
        produce("t", 0, Bytes::from_static(b"this is not a record batch")),
    )
    .await;
    assert_eq!(
        ErrorCode::from_i32(garbage.error_code),
        ErrorCode::CorruptMessage,
        "{}",
        garbage.error_message
    );

    // A batch whose CRC does not match its contents.
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let crc = result(&mut stub, produce("t", 0, Bytes::from(corrupt))).await;
    assert_eq!(
        ErrorCode::from_i32(crc.error_code),
        ErrorCode::CorruptMessage,
        "{}",
        crc.error_message
    );
    assert!(
        crc.error_message.to_lowercase().contains("crc"),
        "{}",
        crc.error_message
    );

    // A good batch followed by a bad one in the same request: all or nothing.
    let mut mixed = good.to_vec();
    mixed.extend_from_slice(b"trailing junk that is not a batch header at all");
    let mixed = result(&mut stub, produce("t", 0, Bytes::from(mixed))).await;
    assert_ne!(mixed.error_code, 0);

    // Unknown topic and invalid partition.
    let unknown = result(&mut stub, produce("nope", 0, good.clone())).await;
    assert_eq!(
        ErrorCode::from_i32(unknown.error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    assert!(
        unknown.error_message.contains("nope"),
        "{}",
        unknown.error_message
    );
    let partition = result(&mut stub, produce("t", 3, good.clone())).await;
    assert_eq!(
        ErrorCode::from_i32(partition.error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    assert!(
        partition.error_message.contains("no partition 3"),
        "{}",
        partition.error_message
    );

    // Nothing of the refused input was appended.
    assert_eq!(high_watermark(&mut stub, "t").await, 1);

    // Fetch out of range names the valid range.
    let fetched = stub
        .fetch(proto::FetchRequest {
            topics: vec![proto::FetchTopic {
                topic: "t".into(),
                partitions: vec![proto::FetchPartition {
                    partition: 0,
                    offset: 42,
                    max_bytes: 1 << 20,
                }],
            }],
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p = &fetched.topics[0].partitions[0];
    assert_eq!(
        ErrorCode::from_i32(p.error_code),
        ErrorCode::OffsetOutOfRange
    );
    assert!(p.error_message.contains("0 to 1"), "{}", p.error_message);

    // Invalid topic names and duplicate creation.
    let created = stub
        .create_topics(proto::CreateTopicsRequest {
            topics: vec![
                proto::TopicSpec {
                    name: "bad/name".into(),
                    ..Default::default()
                },
                proto::TopicSpec {
                    name: "t".into(),
                    ..Default::default()
                },
            ],
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ErrorCode::from_i32(created.results[0].error_code),
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        ErrorCode::from_i32(created.results[1].error_code),
        ErrorCode::TopicAlreadyExists
    );
}

#[tokio::test]
async fn unknown_topics_are_created_on_produce_when_the_deployment_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start(dir.path(), Ipv4Addr::new(127, 0, 0, 32), true).await;
    let mut stub = BrokerClient::connect(url).await.unwrap();
    let good = encode_batch(&[Record::new("hello", 1)], Default::default()).unwrap();
    let accepted = result(&mut stub, produce("fresh", 1, good)).await;
    assert_eq!(accepted.error_code, 0, "{}", accepted.error_message);
    let meta = stub
        .metadata(proto::MetadataRequest {
            topics: vec!["fresh".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        meta.topics[0].partitions.len(),
        2,
        "created with the deployment's default partition count"
    );
}

#[tokio::test]
async fn long_poll_fetch_returns_as_soon_as_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start(dir.path(), Ipv4Addr::new(127, 0, 0, 33), true).await;
    let mut stub = BrokerClient::connect(url).await.unwrap();
    let good = encode_batch(&[Record::new("first", 1)], Default::default()).unwrap();
    assert_eq!(
        result(&mut stub, produce("lp", 0, good.clone()))
            .await
            .error_code,
        0
    );
    let mut fetcher = stub.clone();
    let waiting = tokio::spawn(async move {
        fetcher
            .fetch(proto::FetchRequest {
                topics: vec![proto::FetchTopic {
                    topic: "lp".into(),
                    partitions: vec![proto::FetchPartition {
                        partition: 0,
                        offset: 1,
                        max_bytes: 1 << 20,
                    }],
                }],
                max_wait_ms: 20_000,
                min_bytes: 1,
                max_bytes: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the fetch should wait for data, not answer empty"
    );
    let second = encode_batch(&[Record::new("second", 2)], Default::default()).unwrap();
    assert_eq!(
        result(&mut stub, produce("lp", 0, second)).await.error_code,
        0
    );
    let fetched = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("long poll woke up")
        .unwrap();
    let records = broker::record::decode_batches(&fetched.topics[0].partitions[0].records).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].offset, 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"second"[..]));
}
