//! The report of one run, in Markdown for people and JSON for scripts, written under
//! `target/chaos/`. It says what was done (scenario, seed, faults with times), what
//! happened (records produced, acknowledged, lost, duplicated; recovery times; mirror lag;
//! the failover's RPO and RTO) and how each invariant was judged.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check::Verdict;
use crate::check::recovery::Recovery;

/// One fault the harness injected, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// The fault, e.g. "kill -9", "SIGSTOP", "partition us-east|eu-west".
    pub kind: String,
    /// What it hit, e.g. "us-east/b2".
    pub target: String,
}

/// The failover step's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverFigures {
    /// Recovery point objective, in records: what the source had acknowledged and the
    /// target did not yet hold when the failover began (lost had the region died then).
    pub rpo_records: u64,
    /// Source records the group never got, across both regions.
    pub skipped: u64,
    /// Source records the group got more than once, across both regions.
    pub redelivered: u64,
    /// Replays inside one region after a rebalance, dropped by the application.
    pub in_region_replays: u64,
    /// From the failover command's start until the group read in the target region.
    pub rto_ms: u64,
}

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed that replays the run.
    pub seed: u64,
    /// The command that replays the run.
    pub replay: String,
    /// Where the regions lived: `loopback` or `namespaces`.
    #[serde(default)]
    pub network: String,
    /// Run length in milliseconds.
    pub duration_ms: u64,
    /// Faults in the order injected.
    pub faults: Vec<FaultEvent>,
    /// Records the workload tried to produce.
    pub produced: u64,
    /// Records acknowledged with acks=all.
    pub acknowledged: u64,
    /// Acknowledged records missing at the end.
    pub lost: u64,
    /// Record ids stored more than once.
    pub duplicated: u64,
    /// Recoveries the harness timed.
    pub recoveries: Vec<Recovery>,
    /// Largest mirror lag seen during the run, in records.
    pub max_mirror_lag_records: i64,
    /// The failover step, when the scenario has one.
    pub failover: Option<FailoverFigures>,
    /// One verdict per invariant.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// True when every invariant passed.
    pub fn passed(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(Verdict::passed)
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let outcome = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            md,
            "# Chaos run `{}` seed {} — {outcome}\n",
            self.scenario, self.seed
        );
        let _ = writeln!(md, "Replay: `{}`\n", self.replay);
        let _ = writeln!(md, "| figure | value |\n|---|---|");
        let _ = writeln!(md, "| network | {} |", self.network);
        let _ = writeln!(
            md,
            "| duration | {:.1} s |",
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(md, "| records produced | {} |", self.produced);
        let _ = writeln!(md, "| acknowledged (acks=all) | {} |", self.acknowledged);
        let _ = writeln!(md, "| lost | {} |", self.lost);
        let _ = writeln!(md, "| duplicated | {} |", self.duplicated);
        let _ = writeln!(
            md,
            "| max mirror lag | {} records |",
            self.max_mirror_lag_records
        );
        if let Some(f) = &self.failover {
            let _ = writeln!(md, "| failover RPO | {} records |", f.rpo_records);
            let _ = writeln!(md, "| failover skipped | {} records |", f.skipped);
            let _ = writeln!(md, "| failover re-delivered | {} records |", f.redelivered);
            let _ = writeln!(
                md,
                "| in-region replays dropped by the application | {} records |",
                f.in_region_replays
            );
            let _ = writeln!(md, "| failover RTO | {:.1} s |", f.rto_ms as f64 / 1000.0);
        }
        let _ = writeln!(
            md,
            "\n## Invariants\n\n| invariant | guarantee | checked | violations |\n|---|---|---|---|"
        );
        for v in &self.verdicts {
            let mark = if v.passed() { "✅" } else { "❌" };
            let _ = writeln!(
                md,
                "| {mark} {} | {} | {} | {} |",
                v.invariant, v.guarantee, v.checked, v.violation_count
            );
        }
        for v in self.verdicts.iter().filter(|v| !v.violations.is_empty()) {
            let _ = writeln!(md, "\n### {} violations\n", v.invariant);
            for line in &v.violations {
                let _ = writeln!(md, "- {line}");
            }
            if v.violation_count > v.violations.len() as u64 {
                let _ = writeln!(
                    md,
                    "- … and {} more",
                    v.violation_count - v.violations.len() as u64
                );
            }
        }
        let _ = writeln!(md, "\n## Faults\n\n| at | fault | target |\n|---|---|---|");
        for f in &self.faults {
            let _ = writeln!(
                md,
                "| {:.1} s | {} | {} |",
                f.at_ms as f64 / 1000.0,
                f.kind,
                f.target
            );
        }
        let _ = writeln!(
            md,
            "\n## Recoveries\n\n| what | took | bound |\n|---|---|---|"
        );
        for r in &self.recoveries {
            let took = r.took_ms.map_or("never".to_string(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            });
            let _ = writeln!(
                md,
                "| {} | {took} | {:.1} s |",
                r.what,
                r.bound_ms as f64 / 1000.0
            );
        }
        md
    }

    /// Writes `<dir>/<scenario>-<seed>.md` and `.json`; returns the Markdown path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("{}-{}", self.scenario, self.seed);
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{stem}.json")), json)?;
        let md = dir.join(format!("{stem}.md"));
        std::fs::write(&md, self.to_markdown())?;
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdicts: Vec<Verdict>) -> Report {
        Report {
            scenario: "quick".into(),
            seed: 7,
            replay: "cargo run -p chaos-tests -- --scenario quick --seed 7".into(),
            network: "loopback".into(),
            duration_ms: 60_000,
            faults: vec![FaultEvent {
                at_ms: 1_500,
                kind: "kill -9".into(),
                target: "us-east/b2".into(),
            }],
            produced: 10,
            acknowledged: 9,
            lost: 0,
            duplicated: 0,
            recoveries: vec![],
            max_mirror_lag_records: 3,
            failover: None,
            verdicts,
        }
    }

    #[test]
    fn a_failed_invariant_fails_the_report_and_is_listed() {
        let mut bad = Verdict::new("order", "order holds");
        bad.checked_one();
        bad.violation("a/t-0: offset 3 follows offset 4".into());
        let r = report(vec![bad]);
        assert!(!r.passed());
        let md = r.to_markdown();
        assert!(
            md.contains("FAILED") && md.contains("offset 3 follows offset 4"),
            "{md}"
        );
        assert!(md.contains("--seed 7"));
    }

    #[test]
    fn the_json_round_trips_and_both_files_are_written() {
        let mut ok = Verdict::new("order", "order holds");
        ok.checked_one();
        let r = report(vec![ok]);
        let dir = std::env::temp_dir().join(format!("chaos-report-{}", std::process::id()));
        let md = r.write(&dir).unwrap();
        let json = std::fs::read_to_string(dir.join("quick-7.json")).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(std::fs::read_to_string(md).unwrap().contains("PASSED"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
