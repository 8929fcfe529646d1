//! Log append throughput without the network: 16 KiB batches of 100-B and 1-KiB
//! records, with `FlushPolicy::Never` (page cache only), `EveryBatch` with one
//! fdatasync per append (a group of one: the worst case), and `EveryBatch` with group
//! commit of 64 appends (1 MiB) per sync, as the server does under load. Criterion
//! reports the byte throughput per configuration.
//!
//! Run: `cargo bench -p broker --bench log_append` (add `-- --quick` for a smoke run).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use broker::log::batch::{HEADER_LEN, LOG_OVERHEAD, compute_crc};
use broker::log::{AppendMode, FlushPolicy, LogConfig, PartitionLog};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BATCH_BYTES: usize = 16 * 1024;

/// A valid v2 batch of about `BATCH_BYTES`, holding records of `record_size` value
/// bytes. Records are laid out as opaque bodies of the right size (the log never decodes
/// them), with one record slot per `record_size + 8` bytes.
fn make_batch(record_size: usize) -> Vec<u8> {
    let per_record = record_size + 8;
    let count = ((BATCH_BYTES - HEADER_LEN) / per_record).max(1) as i32;
    let body_len = count as usize * per_record;
    let mut b = Vec::with_capacity(HEADER_LEN + body_len);
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body_len) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend((0..body_len).map(|i| (i * 31 % 251) as u8));
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append_16KiB_batches");
    group.measurement_time(Duration::from_secs(5));
    for (policy_name, policy) in [
        ("never", FlushPolicy::Never),
        ("every_batch", FlushPolicy::EveryBatch),
    ] {
        for record_size in [100usize, 1024] {
            let template = make_batch(record_size);
            group.throughput(Throughput::Bytes(template.len() as u64));
            let id = BenchmarkId::new(policy_name, format!("{record_size}B_records"));
            group.bench_function(id, |bench| {
                let dir = tempfile::tempdir().unwrap();
                let config = LogConfig {
                    segment_bytes: 64 << 20,
                    retention_bytes: Some(256 << 20),
                    retention_time: None,
                    flush: policy,
                    ..LogConfig::default()
                };
                let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
                let mut buf = template.clone();
                let mut n = 0u64;
                bench.iter(|| {
                    let out = log
                        .append(black_box(&mut buf), AppendMode::AssignOffsets, Some(0))
                        .unwrap();
                    if policy == FlushPolicy::EveryBatch {
                        log.sync().unwrap();
                    }
                    n += 1;
                    if n.is_multiple_of(4096) {
                        log.enforce_retention(SystemTime::now()).unwrap();
                    }
                    out.last_offset
                });
            });
        }
    }
    // Group commit: 64 appends, then one sync, per iteration.
    for record_size in [100usize, 1024] {
        let template = make_batch(record_size);
        group.throughput(Throughput::Bytes(64 * template.len() as u64));
        let id = BenchmarkId::new("every_batch_group64", format!("{record_size}B_records"));
        group.bench_function(id, |bench| {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 64 << 20,
                retention_bytes: Some(256 << 20),
                retention_time: None,
                flush: FlushPolicy::EveryBatch,
                ..LogConfig::default()
            };
            let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
            let mut buf = template.clone();
            let mut n = 0u64;
            bench.iter(|| {
                for _ in 0..64 {
                    log.append(black_box(&mut buf), AppendMode::AssignOffsets, Some(0))
                        .unwrap();
                }
                log.sync().unwrap();
                n += 1;
                if n.is_multiple_of(64) {
                    log.enforce_retention(SystemTime::now()).unwrap();
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
