//! Exact offset translation of consumer-group positions from one region to another.
//!
//! Remote topics are offset-preserving: the mirror appends every source batch at its
//! source offsets, so a group's committed position `P` on `orders` in region A is the
//! same `P` on `A.orders` in region B — provided the record at `P - 1` has been mirrored
//! (`P <= ` the remote partition's log end offset). This module is pure: callers fetch
//! the committed offsets and log end offsets, the translator decides.

use std::collections::BTreeMap;

use serde::Serialize;
use topology::{Flow, Topology};

use crate::error::{MirrorError, Result};

/// Maps topic names of a source region to the target region, following one flow.
///
/// It exists so that the checkpointer, `meridian mirror translate` and `meridian failover`
/// agree on one naming rule, including the way back: a topic `B.orders` in A is B's own
/// `orders`, mirrored into A, so a group reading it in A continues on `orders` in B.
#[derive(Debug, Clone)]
pub struct OffsetTranslator {
    source: String,
    target: String,
    separator: String,
    topics: Option<topology::CompiledFilter>,
}

/// One group partition's translated position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Translated {
    /// The group.
    pub group: String,
    /// The topic in the source region.
    pub source_topic: String,
    /// The topic in the target region.
    pub target_topic: String,
    /// The partition (same number on both sides).
    pub partition: i32,
    /// The group's committed position in the source.
    pub source_offset: i64,
    /// The position to commit in the target: equal to `source_offset` when exact.
    pub target_offset: i64,
    /// The target partition's log end offset when translated.
    pub target_end: i64,
    /// Records the group read in the source that the target does not have (0 when exact;
    /// non-zero only with `force`).
    pub missing: i64,
}

impl Translated {
    /// True when the target position is the source position, with nothing missing.
    pub fn is_exact(&self) -> bool {
        self.missing == 0 && self.source_offset == self.target_offset
    }
}

impl OffsetTranslator {
    /// The translator for `flow` (its source and target regions, its topic filter).
    pub fn new(topology: &Topology, flow: &Flow) -> Result<Self> {
        let topics = flow.topics.compile().map_err(|e| MirrorError::Topology {
            reason: format!(
                "flow {} -> {} has a bad topic regex: {e}",
                flow.source, flow.target
            ),
        })?;
        Ok(Self::from_parts(
            &flow.source,
            &flow.target,
            &topology.deployment.remote_topic_separator,
            Some(topics),
        ))
    }

    /// A translator without a topology file (tests, tools): every topic is mirrored.
    pub fn from_parts(
        source: &str,
        target: &str,
        separator: &str,
        topics: Option<topology::CompiledFilter>,
    ) -> Self {
        Self {
            source: source.to_owned(),
            target: target.to_owned(),
            separator: separator.to_owned(),
            topics,
        }
    }

    /// The name `source_topic` of the source region has in the target region, or `None`
    /// when the flow does not mirror it (remote topics of third regions, filtered topics,
    /// internal topics).
    pub fn target_topic(&self, source_topic: &str) -> Option<String> {
        let back = format!("{}{}", self.target, self.separator);
        if let Some(own) = source_topic.strip_prefix(&back) {
            // The target's own topic, mirrored into the source: same offsets there.
            return Some(own.to_owned());
        }
        if source_topic.starts_with('_') || source_topic.contains(&self.separator) {
            return None;
        }
        if let Some(filter) = &self.topics
            && !filter.is_match(source_topic)
        {
            return None;
        }
        Some(format!("{}{}{source_topic}", self.source, self.separator))
    }

    /// Translates a group's committed offsets (`(topic, partition) → position` in the
    /// source) using the target partitions' log end offsets (`(target topic, partition)
    /// → end`). A position beyond the target's end is refused with
    /// [`MirrorError::NotMirrored`] unless `force`, which clamps it to the end and reports
    /// the missing records. Topics the flow does not mirror are left out; a target
    /// partition with no known end counts as empty.
    pub fn translate(
        &self,
        group: &str,
        committed: &BTreeMap<(String, i32), i64>,
        target_ends: &BTreeMap<(String, i32), i64>,
        force: bool,
    ) -> Result<Vec<Translated>> {
        let mut out = Vec::new();
        for ((topic, partition), &position) in committed {
            let Some(target_topic) = self.target_topic(topic) else {
                continue;
            };
            let end = target_ends
                .get(&(target_topic.clone(), *partition))
                .copied()
                .unwrap_or(0);
            let missing = (position - end).max(0);
            if missing > 0 && !force {
                return Err(MirrorError::NotMirrored {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    partition: *partition,
                    target_topic,
                    committed: position,
                    mirrored: end,
                    missing,
                });
            }
            out.push(Translated {
                group: group.to_owned(),
                source_topic: topic.clone(),
                target_topic,
                partition: *partition,
                source_offset: position,
                target_offset: position.min(end),
                target_end: end,
                missing,
            });
        }
        Ok(out)
    }

    /// True for a topic of the source that is the target's own topic mirrored back
    /// (`B.orders` in A for a flow A → B): status reports skip it, it is not copied.
    pub fn is_target_origin(&self, source_topic: &str) -> bool {
        source_topic.starts_with(&format!("{}{}", self.target, self.separator))
    }

    /// The source region.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The target region.
    pub fn target(&self) -> &str {
        &self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translator() -> OffsetTranslator {
        OffsetTranslator::from_parts("A", "B", ".", None)
    }

    fn map(entries: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
        entries
            .iter()
            .map(|(t, p, o)| ((t.to_string(), *p), *o))
            .collect()
    }

    #[test]
    fn mirrored_position_translates_to_the_same_offset_on_the_remote_topic() {
        let out = translator()
            .translate(
                "G",
                &map(&[("orders", 0, 40), ("orders", 1, 7)]),
                &map(&[("A.orders", 0, 50), ("A.orders", 1, 7)]),
                false,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].target_topic, "A.orders");
        assert_eq!((out[0].source_offset, out[0].target_offset), (40, 40));
        assert_eq!((out[1].source_offset, out[1].target_offset), (7, 7));
        assert!(out.iter().all(Translated::is_exact));
    }

    #[test]
    fn position_beyond_the_mirrored_end_is_refused_naming_the_gap() {
        let err = translator()
            .translate(
                "G",
                &map(&[("orders", 0, 40)]),
                &map(&[("A.orders", 0, 35)]),
                false,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, MirrorError::NotMirrored { missing: 5, .. }),
            "{text}"
        );
        assert!(
            text.contains("orders-0") && text.contains("--force"),
            "{text}"
        );
    }

    #[test]
    fn forced_translation_clamps_to_the_mirrored_end_and_counts_missing_records() {
        let out = translator()
            .translate("G", &map(&[("orders", 0, 40)]), &map(&[]), true)
            .unwrap();
        assert_eq!((out[0].target_offset, out[0].missing), (0, 40));
        assert!(!out[0].is_exact());
    }

    #[test]
    fn target_regions_own_topic_read_through_its_remote_copy_maps_back() {
        let out = translator()
            .translate(
                "G",
                &map(&[("B.orders", 2, 9)]),
                &map(&[("orders", 2, 12)]),
                false,
            )
            .unwrap();
        assert_eq!(out[0].target_topic, "orders");
        assert_eq!(out[0].target_offset, 9);
    }

    #[test]
    fn third_region_remote_topics_internal_and_filtered_topics_are_not_translated() {
        let filter = topology::Filter {
            include: vec!["^orders$".into()],
            exclude: vec![],
        }
        .compile()
        .unwrap();
        let t = OffsetTranslator::from_parts("A", "B", ".", Some(filter));
        assert_eq!(t.target_topic("C.orders"), None);
        assert_eq!(t.target_topic("_meridian.checkpoints.B"), None);
        assert_eq!(t.target_topic("payments"), None);
        assert_eq!(t.target_topic("orders").as_deref(), Some("A.orders"));
    }
}
