//! Property: any sequence of appends (both modes, random sizes, gaps, re-sends and
//! truncations) reads back as the model says, and identically after a reopen.

mod log_support;

use broker::log::{AppendMode, PartitionLog};
use log_support::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Leader append of one batch.
    Assign { count: i32, len: usize },
    /// Mirror append at log end + gap.
    Keep { gap: i64, count: i32, len: usize },
    /// Re-send of the n-th stored batch (must be a duplicate).
    Resend { nth: usize },
    /// Truncate to the base of the n-th stored batch from the end.
    Truncate { back: usize },
    /// Close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6i32, 0..700usize).prop_map(|(count, len)| Op::Assign { count, len }),
        3 => (0..30i64, 1..6i32, 0..700usize).prop_map(|(gap, count, len)| Op::Keep { gap, count, len }),
        1 => (0..100usize).prop_map(|nth| Op::Resend { nth }),
        1 => (0..4usize).prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::Reopen),
    ]
}

fn check(log: &PartitionLog, model: &[(i64, i64, Vec<u8>)]) {
    assert_eq!(
        read_all(log),
        model
            .iter()
            .flat_map(|(_, _, b)| b.clone())
            .collect::<Vec<u8>>()
    );
    for (base, last, bytes) in model {
        for off in [*base, *last] {
            let r = log.read(off, 0).unwrap();
            assert_eq!(&r.bytes[..], &bytes[..], "read at {off}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_appends_read_back_identically_after_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(2048);
        let mut log = open(dir.path(), cfg.clone());
        let mut model: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        let mut seed = 0u64;
        for op in ops {
            seed += 1;
            match op {
                Op::Assign { count, len } => {
                    let mut b = batch(0, count, seed as i64, len, seed);
                    let o = log.append(&mut b, AppendMode::AssignOffsets, Some(0)).unwrap();
                    model.push((o.base_offset, o.last_offset, b));
                }
                Op::Keep { gap, count, len } => {
                    let base = log.log_end_offset() + gap;
                    let mut b = batch(base, count, seed as i64, len, seed);
                    let o = log.append(&mut b, AppendMode::KeepOffsets, Some(0)).unwrap();
                    prop_assert!(!o.duplicate);
                    model.push((base, o.last_offset, b));
                }
                Op::Resend { nth } => {
                    if !model.is_empty() {
                        let mut b = model[nth % model.len()].2.clone();
                        prop_assert!(log.append(&mut b, AppendMode::KeepOffsets, Some(0)).unwrap().duplicate);
                    }
                }
                Op::Truncate { back } => {
                    if back < model.len() {
                        let keep = model.len() - 1 - back;
                        let to = model[keep].0;
                        log.truncate_to(to).unwrap();
                        model.truncate(keep);
                        if keep == 0 {
                            prop_assert_eq!(log.log_end_offset(), to);
                        } else {
                            prop_assert!(log.log_end_offset() <= to);
                        }
                    }
                }
                Op::Reopen => {
                    drop(log);
                    let (l, report) = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, 0);
                    log = l;
                }
            }
            if let Some((_, last, _)) = model.last() {
                prop_assert_eq!(log.log_end_offset(), last + 1);
            }
        }
        check(&log, &model);
        let before = read_all(&log);
        let leo = log.log_end_offset();
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), cfg).unwrap();
        prop_assert_eq!(report.truncated_bytes, 0);
        prop_assert_eq!(report.rebuilt_indexes, 0);
        prop_assert_eq!(log.log_end_offset(), leo);
        prop_assert_eq!(read_all(&log), before);
        check(&log, &model);
    }
}
