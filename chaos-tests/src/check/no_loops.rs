//! No mirror loops: in active/active pairs and chains, a topic never comes back to the
//! region it came from. By the naming rule (`<source><sep><topic>`), a topic in region R
//! whose region prefixes name R, or name any region twice, was mirrored around a loop
//! (the `A.B.orders`-style topics MirrorMaker 2 set-ups grow, KAFKA-9914).

use std::collections::BTreeMap;

use super::Verdict;

/// The guarantee, as the report states it.
pub const GUARANTEE: &str =
    "Active/active and chained flows never mirror a topic back into the region it came from.";

/// Checks every region's topic list. `regions` are all region names of the deployment;
/// `separator` is the deployment's remote-topic separator.
pub fn check(
    topics_by_region: &BTreeMap<String, Vec<String>>,
    regions: &[String],
    separator: &str,
) -> Verdict {
    let mut verdict = Verdict::new("no_loops", GUARANTEE);
    for (region, topics) in topics_by_region {
        for topic in topics {
            verdict.checked_one();
            let prefixes = region_prefixes(topic, regions, separator);
            if prefixes.iter().any(|p| p == region) {
                verdict.violation(format!(
                    "region {region} holds {topic:?}, a copy of its own data mirrored back"
                ));
                continue;
            }
            let mut seen = prefixes.clone();
            seen.sort();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                verdict.violation(format!(
                    "region {region} holds {topic:?}, which went around a loop of regions"
                ));
            }
        }
    }
    verdict
}

/// The leading region names of a topic name, outermost first: `b.a.orders` → [b, a].
fn region_prefixes(topic: &str, regions: &[String], separator: &str) -> Vec<String> {
    let mut prefixes = Vec::new();
    let mut rest = topic;
    'outer: loop {
        for region in regions {
            if let Some(tail) = rest
                .strip_prefix(region.as_str())
                .and_then(|t| t.strip_prefix(separator))
                && !tail.is_empty()
            {
                prefixes.push(region.clone());
                rest = tail;
                continue 'outer;
            }
        }
        return prefixes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        vec!["us-east".into(), "eu-west".into(), "ap-south".into()]
    }

    fn layout(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(r, ts)| (r.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn active_active_remote_topics_pass() {
        let topics = layout(&[
            ("us-east", &["orders", "eu-west.orders"]),
            ("eu-west", &["orders", "us-east.orders"]),
        ]);
        assert!(check(&topics, &regions(), ".").passed());
    }

    #[test]
    fn a_chain_passes() {
        let topics = layout(&[("ap-south", &["eu-west.us-east.orders"])]);
        assert!(check(&topics, &regions(), ".").passed());
    }

    #[test]
    fn a_topic_mirrored_back_home_is_a_loop() {
        let topics = layout(&[("us-east", &["eu-west.us-east.orders"])]);
        let verdict = check(&topics, &regions(), ".");
        assert_eq!(verdict.violation_count, 1);
        assert!(verdict.violations[0].contains("mirrored back"));
    }

    #[test]
    fn a_region_named_twice_is_a_loop() {
        let topics = layout(&[("ap-south", &["us-east.eu-west.us-east.orders"])]);
        assert_eq!(check(&topics, &regions(), ".").violation_count, 1);
    }

    #[test]
    fn a_local_topic_that_merely_starts_like_a_region_is_not_a_prefix() {
        let topics = layout(&[("us-east", &["us-eastern-orders"])]);
        assert!(check(&topics, &regions(), ".").passed());
    }
}
