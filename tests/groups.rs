//! Consumer groups over the wire: `meridian consume --group` processes join the group
//! through its coordinator, split the partitions, and when one is killed the other takes
//! its partitions over from the committed offsets with nothing skipped; a member that
//! stops cleanly leaves at once; `groups describe` shows members and assignments.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use broker::client::{Client, OffsetSpec};
use support::deployment::{create, produce};
use support::{Region, meridian, run_ok};

const PARTITIONS: i32 = 6;

/// A `meridian consume --group` process writing JSON lines to a file.
struct Member {
    child: Child,
    out: PathBuf,
}

impl Member {
    fn start(dir: &Path, name: &str, bootstrap: &str) -> Self {
        let out = dir.join(format!("{name}.jsonl"));
        let err = dir.join(format!("{name}.err"));
        let child = meridian()
            .args([
                "consume",
                "orders",
                "--group",
                "billing",
                "--from-beginning",
                "--format",
                "json",
                "--bootstrap",
                bootstrap,
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(err).expect("err"))
            .spawn()
            .expect("spawn consume");
        Member { child, out }
    }

    /// (partition, offset) → value of every record printed so far, and how many lines.
    fn printed(&self) -> (Vec<(i32, i64, String)>, usize) {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut rows = Vec::new();
        // A line being written may be cut; only whole lines count.
        for line in text.lines().filter(|l| l.ends_with('}')) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            rows.push((
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
                v["value"].as_str().unwrap().to_string(),
            ));
        }
        let n = rows.len();
        (rows, n)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Rows = BTreeMap<i32, (Option<String>, Option<i64>)>;

/// `groups describe billing --json`: the group's state, and per partition the member
/// reading it and the committed offset. Fails while the group has neither.
fn try_describe(bootstrap: &str) -> Option<(String, Rows)> {
    let out = meridian()
        .args([
            "groups",
            "describe",
            "billing",
            "--json",
            "--bootstrap",
            bootstrap,
        ])
        .output()
        .expect("run meridian");
    out.status
        .success()
        .then(|| parse_describe(&String::from_utf8_lossy(&out.stdout)))
}

fn describe(bootstrap: &str) -> (String, Rows) {
    parse_describe(&run_ok(&[
        "groups",
        "describe",
        "billing",
        "--json",
        "--bootstrap",
        bootstrap,
    ]))
}

fn parse_describe(out: &str) -> (String, Rows) {
    let mut state = String::new();
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json row");
        state = v["state"].as_str().unwrap().to_string();
        rows.insert(
            v["partition"].as_i64().unwrap() as i32,
            (
                v["member_id"].as_str().map(str::to_string),
                v["committed_offset"].as_i64(),
            ),
        );
    }
    (state, rows)
}

fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn connect(bootstrap: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(bootstrap).await {
            Ok(client)
                if client
                    .refresh_metadata()
                    .await
                    .is_ok_and(|m| m.brokers.len() == 3) =>
            {
                return client;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("three brokers did not register: {:?}", other.err()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_a_killed_members_share_moves_without_a_skip() {
    let region = Region::start(71, 3, "");
    let bootstrap = region.bootstrap_all();
    let client = connect(&bootstrap).await;
    create(&client, "orders", PARTITIONS).await;
    produce(&client, "orders", "first", 3_000).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Member::start(dir.path(), "first", &bootstrap);
    let second = Member::start(dir.path(), "second", &bootstrap);

    // Both join one generation and split the six partitions three and three.
    let owners = wait_until(
        "two members to share the partitions",
        Duration::from_secs(60),
        || {
            let (state, rows) = try_describe(&bootstrap)?;
            let owners: BTreeMap<i32, String> = rows
                .iter()
                .filter_map(|(p, (m, _))| m.clone().map(|m| (*p, m)))
                .collect();
            let members: BTreeSet<&String> = owners.values().collect();
            (state == "Stable" && owners.len() == PARTITIONS as usize && members.len() == 2)
                .then_some(owners)
        },
    );
    let mut per_member: BTreeMap<&String, usize> = BTreeMap::new();
    for m in owners.values() {
        *per_member.entry(m).or_default() += 1;
    }
    assert!(
        per_member.values().all(|n| *n == 3),
        "range assignor splits 6 partitions 3/3: {owners:?}"
    );

    // Each member prints only its own partitions; together they print everything once.
    wait_until(
        "both members to read the first 3,000",
        Duration::from_secs(60),
        || (first.printed().1 + second.printed().1 >= 3_000).then_some(()),
    );
    let (a, _) = first.printed();
    let (b, _) = second.printed();
    let a_parts: BTreeSet<i32> = a.iter().map(|r| r.0).collect();
    let b_parts: BTreeSet<i32> = b.iter().map(|r| r.0).collect();
    assert!(
        a_parts.is_disjoint(&b_parts),
        "a partition read by both: {a_parts:?} {b_parts:?}"
    );
    assert_eq!(
        a.len() + b.len(),
        3_000,
        "each record read once while both are members"
    );

    // Kill the first member mid-stream, while it reads the next 3,000, without a chance
    // to commit or leave: what it printed after its last commit is re-read by the next
    // owner (at least once), but nothing may be skipped.
    let producing = {
        let client = client.clone();
        tokio::spawn(async move { produce(&client, "orders", "second", 3_000).await })
    };
    wait_until(
        "the first member to read some of the second batch",
        Duration::from_secs(60),
        || {
            first
                .printed()
                .0
                .iter()
                .any(|r| r.2.starts_with("second"))
                .then_some(())
        },
    );
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reap");
    let killed_at = Instant::now();
    producing.await.expect("producer task");

    // Its session (10 s) expires; the survivor gets all six partitions.
    wait_until(
        "the survivor to own every partition",
        Duration::from_secs(60),
        || {
            let (state, rows) = try_describe(&bootstrap)?;
            let members: BTreeSet<String> = rows.values().filter_map(|(m, _)| m.clone()).collect();
            (state == "Stable"
                && members.len() == 1
                && rows.values().filter(|(m, _)| m.is_some()).count() == PARTITIONS as usize)
                .then_some(())
        },
    );
    let takeover = killed_at.elapsed();

    // Nothing skipped: every offset of every partition was printed by someone, and the
    // survivor's reads of each partition are in offset order without holes.
    let ends = client
        .list_offsets_of(
            "orders",
            &(0..PARTITIONS).collect::<Vec<_>>(),
            OffsetSpec::Latest,
        )
        .await
        .expect("ends");
    assert_eq!(ends.values().sum::<i64>(), 6_000);
    let all_read = wait_until("every record to be read", Duration::from_secs(60), || {
        let (a, _) = first.printed();
        let (b, _) = second.printed();
        let seen: BTreeSet<(i32, i64)> = a.iter().chain(b.iter()).map(|r| (r.0, r.1)).collect();
        (seen.len() == 6_000).then_some((a, b))
    });
    let (a, b) = all_read;
    for p in 0..PARTITIONS {
        let offsets: BTreeSet<i64> = a
            .iter()
            .chain(b.iter())
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .collect();
        assert_eq!(
            offsets,
            (0..ends[&p]).collect::<BTreeSet<i64>>(),
            "partition {p} has a hole"
        );
        let survivor: Vec<i64> = b.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert!(
            survivor.windows(2).all(|w| w[1] == w[0] + 1),
            "the survivor read partition {p} with a hole or out of order"
        );
    }
    let values: BTreeSet<&str> = a.iter().chain(b.iter()).map(|r| r.2.as_str()).collect();
    assert_eq!(values.len(), 6_000, "every produced value was read");
    // Re-reads are bounded by what the killed member printed after its last commit.
    let duplicates = a.len() + b.len() - 6_000;
    assert!(duplicates <= a.len(), "{duplicates} re-reads");
    eprintln!(
        "takeover after kill -9: {:.1} s; {duplicates} records re-read from the last commit",
        takeover.as_secs_f64()
    );

    // A member that stops cleanly commits and leaves: the group is Empty at once, with
    // every record committed.
    let mut second = second;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = second.child.wait().expect("wait");
    assert!(exit.success(), "consume exits cleanly on SIGTERM: {exit}");
    let (state, rows) = describe(&bootstrap);
    assert_eq!(state, "Empty", "{rows:?}");
    let committed: i64 = rows.values().filter_map(|(_, o)| *o).sum();
    assert_eq!(
        committed, 6_000,
        "the group committed everything it read: {rows:?}"
    );
}
