//! Rendezvous (highest-random-weight) hashing: every node computes the same owner of a
//! key from the same membership view with no coordination, and when a candidate leaves
//! only its keys move. Mirror workers share source partitions with it; brokers place
//! consumer group coordinators with it.

/// FNV-1a: a hash that is the same on every machine and every build, which the
/// workers of a region rely on to agree.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // FNV's low bits mix poorly for short, similar inputs; finish with a mixer.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// The candidate (by name) that owns `key` among `candidates`; `None` when there are none.
pub fn owner<'a>(key: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .max_by_key(|c| (fnv1a(&[key, c]), c.as_str()))
        .map(String::as_str)
}
