//! Shared state: a small replicated map whose entries merge as CRDT registers.
//!
//! Each key holds a `crdts::LWWReg` whose marker is `(millis, node name)`: the
//! node name breaks ties so two writers never produce equal markers with different
//! values (which `LWWReg` would refuse). Merging is key by key, so a datagram only
//! carries one small delta per key, and any order of delivery converges to the
//! same map with no leader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crdts::{CvRDT, LWWReg};
use serde::{Deserialize, Serialize};

use crate::NodeIdentity;

/// Largest encoded entry (key + value + marker) accepted by `set`; leaves room in a
/// ~1,400-byte datagram for foca's header and membership updates.
pub const MAX_ENTRY_BYTES: usize = 512;

/// Last-writer-wins marker: later `millis` wins, the node name breaks ties.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Marker {
    /// Writer's clock (milliseconds), bumped past any marker already seen for the key.
    pub millis: u64,
    /// Writer's member name.
    pub node: String,
}

/// The replicated map held by every node.
///
/// It exists so that facts many nodes need (flow pause states, ownership hints,
/// region summaries) spread without a leader and converge whatever the order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedState {
    entries: BTreeMap<String, LWWReg<Vec<u8>, Marker>>,
}

impl SharedState {
    /// Current value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|r| r.val.as_slice())
    }

    /// All keys and values, sorted by key.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries
            .iter()
            .map(|(k, r)| (k.clone(), r.val.clone()))
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key was ever set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The marker a local write at `now_millis` by `node` gets: it always beats
    /// whatever this node has already seen for the key, even with a lagging clock.
    pub fn next_marker(&self, key: &str, now_millis: u64, node: &str) -> Marker {
        let floor = self.entries.get(key).map_or(0, |r| r.marker.millis + 1);
        Marker {
            millis: now_millis.max(floor),
            node: node.to_owned(),
        }
    }

    /// Merges one register into the map; returns true when it changed the map.
    /// A register with a conflicting marker (same marker, other value) is refused.
    pub fn merge_entry(&mut self, key: &str, value: Vec<u8>, marker: Marker) -> bool {
        let incoming = LWWReg { val: value, marker };
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(key.to_owned(), incoming);
                true
            }
            Some(reg) => {
                if reg.validate_merge(&incoming).is_err() || incoming.marker <= reg.marker {
                    return false;
                }
                reg.merge(incoming);
                true
            }
        }
    }

    /// Merges every entry of `other` (the whole-map CvRDT merge).
    pub fn merge(&mut self, other: &SharedState) {
        for (k, r) in &other.entries {
            self.merge_entry(k, r.val.clone(), r.marker.clone());
        }
    }

    pub(crate) fn entry(&self, key: &str) -> Option<(Vec<u8>, Marker)> {
        self.entries
            .get(key)
            .map(|r| (r.val.clone(), r.marker.clone()))
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

/// One custom-broadcast item as it travels inside foca messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Item {
    /// A shared-state delta: one key's register.
    Set {
        key: String,
        value: Vec<u8>,
        marker: Marker,
    },
    /// A member announcing a graceful leave, so peers report `Left`, not `Down`.
    Leave { addr: SocketAddr, incarnation: u64 },
}

impl Item {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("in-memory postcard encoding cannot fail")
    }
}

/// What foca keeps per pending broadcast, to drop superseded ones early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemKey {
    Set { key: String, marker: Marker },
    Leave { addr: SocketAddr, incarnation: u64 },
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Set { key: a, marker: ma }, Self::Set { key: b, marker: mb }) => {
                a == b && ma >= mb
            }
            (
                Self::Leave {
                    addr: a,
                    incarnation: ia,
                },
                Self::Leave {
                    addr: b,
                    incarnation: ib,
                },
            ) => a == b && ia >= ib,
            _ => false,
        }
    }
}

/// Everything the broadcast handler shares with the node that owns foca.
#[derive(Debug, Default)]
pub(crate) struct Replicated {
    pub(crate) state: SharedState,
    /// Members that announced a graceful leave: addr -> incarnation.
    pub(crate) left: BTreeMap<SocketAddr, u64>,
    /// Remote deltas that changed the map.
    pub(crate) applied: u64,
}

/// foca's `BroadcastHandler`: decodes items, merges them, and tells foca whether
/// to keep spreading them (only when they were news).
pub(crate) struct StateHandler {
    pub(crate) shared: Arc<Mutex<Replicated>>,
}

impl foca::BroadcastHandler<NodeIdentity> for StateHandler {
    type Key = ItemKey;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<ItemKey>, postcard::Error> {
        let item: Item = postcard::from_bytes(data)?;
        let mut shared = self.shared.lock().expect("state lock poisoned");
        let local = sender.is_none();
        Ok(match item {
            Item::Set { key, value, marker } => {
                let changed = shared.state.merge_entry(&key, value, marker.clone());
                if changed && !local {
                    shared.applied += 1;
                }
                // Local adds (writes and resyncs) always spread; remote ones only if news.
                (changed || local).then_some(ItemKey::Set { key, marker })
            }
            Item::Leave { addr, incarnation } => {
                let prev = shared.left.get(&addr).copied();
                let news = prev.is_none_or(|p| p < incarnation);
                if news {
                    shared.left.insert(addr, incarnation);
                }
                (news || local).then_some(ItemKey::Leave { addr, incarnation })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(millis: u64, node: &str) -> Marker {
        Marker {
            millis,
            node: node.into(),
        }
    }

    #[test]
    fn merge_is_order_independent() {
        let writes = [
            ("k", b"a".to_vec(), m(5, "n1")),
            ("k", b"b".to_vec(), m(5, "n2")),
            ("k", b"c".to_vec(), m(4, "n3")),
            ("j", b"x".to_vec(), m(1, "n1")),
        ];
        let mut fwd = SharedState::default();
        for (k, v, mk) in writes.iter().cloned() {
            fwd.merge_entry(k, v, mk);
        }
        let mut rev = SharedState::default();
        for (k, v, mk) in writes.iter().rev().cloned() {
            rev.merge_entry(k, v, mk);
        }
        assert_eq!(fwd, rev);
        assert_eq!(
            fwd.get("k"),
            Some(&b"b"[..]),
            "tie on millis broken by node name"
        );
    }

    #[test]
    fn conflicting_marker_is_refused() {
        let mut s = SharedState::default();
        assert!(s.merge_entry("k", b"a".to_vec(), m(1, "n1")));
        assert!(!s.merge_entry("k", b"evil".to_vec(), m(1, "n1")));
        assert_eq!(s.get("k"), Some(&b"a"[..]));
    }

    #[test]
    fn local_write_beats_seen_marker_despite_slow_clock() {
        let mut s = SharedState::default();
        s.merge_entry("k", b"remote".to_vec(), m(1_000, "fast"));
        let mk = s.next_marker("k", 10, "slow");
        assert!(s.merge_entry("k", b"mine".to_vec(), mk));
        assert_eq!(s.get("k"), Some(&b"mine"[..]));
    }

    #[test]
    fn newer_pending_broadcast_invalidates_older_for_same_key_only() {
        use foca::Invalidates;
        let a = ItemKey::Set {
            key: "k".into(),
            marker: m(2, "n"),
        };
        let b = ItemKey::Set {
            key: "k".into(),
            marker: m(1, "n"),
        };
        let c = ItemKey::Set {
            key: "j".into(),
            marker: m(1, "n"),
        };
        assert!(a.invalidates(&b));
        assert!(!b.invalidates(&a));
        assert!(!a.invalidates(&c));
    }
}
