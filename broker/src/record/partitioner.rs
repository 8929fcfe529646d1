//! Kafka's default partitioner: murmur2 of the key for keyed records, sticky
//! partitioning for records without a key.
//!
//! Keyed placement must match Kafka bit for bit, so that a key lands on the same
//! partition whether a Kafka client or Meridian produced it (and per-key order holds
//! across both). Unkeyed records stick to one partition until its batch is handed to
//! the sender, which fills batches instead of spreading single records thin
//! (Kafka KIP-480).

use crate::error::{BrokerError, Result};

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): 32-bit MurmurHash2
/// with seed `0x9747b28c`, little-endian 4-byte blocks, Java `int` wrap-around.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `seed ^ length` on ints; the length of a Java byte[] fits in i32.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on
/// `i32::MIN`), so the modulo below is never negative.
pub fn to_positive(h: i32) -> i32 {
    h & 0x7fff_ffff
}

/// The partition Kafka's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % num_partitions`.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> Result<i32> {
    check_partitions(num_partitions)?;
    Ok(to_positive(murmur2(key)) % num_partitions)
}

fn check_partitions(num_partitions: i32) -> Result<()> {
    if num_partitions <= 0 {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "cannot choose a partition among {num_partitions}; the topic's metadata must list at least one partition (refresh metadata)"
            ),
        });
    }
    Ok(())
}

/// Sticky partitioning for records without a key, for one topic.
///
/// It stays on one partition until the batch being filled there is handed to the
/// sender ([`StickyPartitioner::on_batch_ready`]), then moves to another partition chosen
/// at random (never the same one when there are two or more). The randomness is a
/// seeded SplitMix64, injected so that a test or a simulation replays exactly.
#[derive(Debug, Clone)]
pub struct StickyPartitioner {
    current: Option<i32>,
    rng: u64,
}

impl StickyPartitioner {
    /// A partitioner whose choices are fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        StickyPartitioner {
            current: None,
            rng: seed,
        }
    }

    /// The partition the next unkeyed record goes to. Picks one at random the first
    /// time, and again if the partition count shrank below the current choice.
    pub fn partition(&mut self, num_partitions: i32) -> Result<i32> {
        check_partitions(num_partitions)?;
        match self.current {
            Some(p) if p < num_partitions => Ok(p),
            _ => {
                let p = self.random_below(num_partitions);
                self.current = Some(p);
                Ok(p)
            }
        }
    }

    /// Tells the partitioner a batch for `partition` went to the sender. If that is the
    /// sticky partition, the next unkeyed record goes elsewhere; batches of other
    /// partitions (keyed records, or an older sticky choice) change nothing.
    pub fn on_batch_ready(&mut self, partition: i32, num_partitions: i32) {
        if self.current != Some(partition) || num_partitions <= 0 {
            return;
        }
        let next = if num_partitions == 1 {
            0
        } else {
            // Uniform over the other n-1 partitions.
            let r = self.random_below(num_partitions - 1);
            if r >= partition { r + 1 } else { r }
        };
        self.current = Some(next);
    }

    /// The current sticky choice, if one was made; for logs and tests.
    pub fn current(&self) -> Option<i32> {
        self.current
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough to spread
        // partitions; not for anything secret.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_below(&mut self, n: i32) -> i32 {
        debug_assert!(n > 0);
        (self.next_u64() % n as u64) as i32
    }
}

/// Kafka's default partitioner for one topic: keyed records by murmur2, unkeyed ones
/// sticky. One value per topic, because the sticky choice is per topic.
#[derive(Debug, Clone)]
pub struct Partitioner {
    sticky: StickyPartitioner,
}

impl Partitioner {
    /// A partitioner whose unkeyed choices are determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Partitioner {
            sticky: StickyPartitioner::new(seed),
        }
    }

    /// The partition for a record with this key (`None` for a null key).
    pub fn partition(&mut self, key: Option<&[u8]>, num_partitions: i32) -> Result<i32> {
        match key {
            Some(k) => partition_for_key(k, num_partitions),
            None => self.sticky.partition(num_partitions),
        }
    }

    /// Forwards a ready batch to the sticky part; see [`StickyPartitioner::on_batch_ready`].
    pub fn on_batch_ready(&mut self, partition: i32, num_partitions: i32) {
        self.sticky.on_batch_ready(partition, num_partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`
    /// (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
    const KAFKA_VECTORS: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        for (input, expected) in KAFKA_VECTORS {
            assert_eq!(
                murmur2(input),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn murmur2_covers_every_tail_length() {
        // Kafka's vectors have no 1-byte tail; these four from librdkafka's rdmurmur2
        // table (Java-compatible) give one input per remainder length.
        assert_eq!(murmur2(b"kafka"), 0xd067_cf64_u32 as i32); // tail 1
        assert_eq!(murmur2(b"1234"), 0x9fc9_7b14_u32 as i32); // tail 0
        assert_eq!(murmur2(b"234"), 0xe7c0_09ca_u32 as i32); // tail 3
        assert_eq!(murmur2(b"34"), 0x8739_30da_u32 as i32); // tail 2
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(42), 42);
    }

    #[test]
    fn keyed_partition_is_to_positive_murmur2_mod_n() {
        // "foobar" hashes to -790332482; toPositive gives 1357151166; mod 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50).unwrap(), 16);
        for (input, hash) in KAFKA_VECTORS {
            for n in [1, 2, 3, 7, 12, 64] {
                assert_eq!(
                    partition_for_key(input, n).unwrap(),
                    (hash & 0x7fff_ffff) % n
                );
            }
        }
    }

    #[test]
    fn partition_for_key_rejects_zero_partitions() {
        let msg = partition_for_key(b"k", 0).unwrap_err().to_string();
        assert!(msg.contains("at least one partition"), "{msg}");
    }

    #[test]
    fn sticky_partitioner_stays_until_its_batch_is_ready_then_moves() {
        let mut p = StickyPartitioner::new(7);
        let first = p.partition(6).unwrap();
        for _ in 0..100 {
            assert_eq!(p.partition(6).unwrap(), first);
        }
        // A batch of another partition is not the sticky batch: no move.
        p.on_batch_ready((first + 1) % 6, 6);
        assert_eq!(p.partition(6).unwrap(), first);
        // The sticky batch went out: move to a different partition, and stay there.
        p.on_batch_ready(first, 6);
        let second = p.partition(6).unwrap();
        assert_ne!(second, first);
        for _ in 0..100 {
            assert_eq!(p.partition(6).unwrap(), second);
        }
    }

    #[test]
    fn sticky_partitioner_visits_every_partition_over_many_batches() {
        let mut p = StickyPartitioner::new(1);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let cur = p.partition(5).unwrap();
            seen[cur as usize] = true;
            p.on_batch_ready(cur, 5);
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn sticky_partitioner_replays_from_its_seed() {
        let run = |seed| {
            let mut p = StickyPartitioner::new(seed);
            (0..20)
                .map(|_| {
                    let cur = p.partition(8).unwrap();
                    p.on_batch_ready(cur, 8);
                    cur
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(99), run(99));
        assert_ne!(run(99), run(100));
    }

    #[test]
    fn sticky_partitioner_rechooses_when_partitions_shrink() {
        let mut p = StickyPartitioner::new(3);
        // Find a seed state whose choice is high, then shrink below it.
        let mut cur = p.partition(100).unwrap();
        while cur < 10 {
            p.on_batch_ready(cur, 100);
            cur = p.partition(100).unwrap();
        }
        assert!(p.partition(10).unwrap() < 10);
    }

    #[test]
    fn partitioner_routes_keyed_by_hash_and_unkeyed_sticky() {
        let mut p = Partitioner::new(5);
        assert_eq!(p.partition(Some(b"foobar"), 50).unwrap(), 16);
        let s = p.partition(None, 50).unwrap();
        assert_eq!(p.partition(None, 50).unwrap(), s);
    }
}
