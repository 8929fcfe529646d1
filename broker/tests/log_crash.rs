//! Process-level crash test: a child process appends with `FlushPolicy::EveryBatch`,
//! prints each offset only after `sync()` returned, and is killed with SIGKILL in the
//! middle of the stream. Every acknowledged batch must be there after reopening.

mod log_support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use broker::log::{AppendMode, FlushPolicy, LogConfig, PartitionLog};
use log_support::*;

const CHILD_ENV: &str = "MERIDIAN_LOG_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_appends_survive_sigkill";
const KILL_AFTER: usize = 150;

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::EveryBatch,
        ..small(64 * 1024)
    }
}

fn shape(i: u64) -> (i32, usize) {
    (1 + (i % 4) as i32, 100 + ((i * 131) % 3000) as usize)
}

/// The child: append, sync, then acknowledge on stdout, forever.
fn child(dir: &Path) {
    let (mut log, _) = PartitionLog::open(dir, config()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let (count, len) = shape(i);
        let mut b = batch(0, count, i as i64, len, i);
        let o = log
            .append(&mut b, AppendMode::AssignOffsets, Some(0))
            .unwrap();
        log.sync().unwrap();
        writeln!(out, "ACK {i} {} {}", o.base_offset, o.last_offset).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(proc.stdout.take().unwrap());
    let mut acked: Vec<(u64, i64, i64)> = Vec::new();
    let mut killed = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let f: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.push((f[0] as u64, f[1], f[2]));
        if acked.len() == KILL_AFTER && !killed {
            proc.kill().unwrap(); // SIGKILL; lines already printed are still read below
            killed = true;
        }
    }
    let status = proc.wait().unwrap();
    assert!(
        killed,
        "child stopped early ({status:?}) after {} acks",
        acked.len()
    );
    assert!(acked.len() >= KILL_AFTER);

    let (log, report) = PartitionLog::open(tmp.path(), config()).unwrap();
    assert!(log.segments() > 1, "the stream crossed segment rolls");
    let (_, _, last) = *acked.last().unwrap();
    assert!(
        log.log_end_offset() > last,
        "LEO {} covers acked {last}",
        log.log_end_offset()
    );
    for &(i, base, last) in &acked {
        let (count, len) = shape(i);
        assert_eq!(last - base + 1, i64::from(count));
        let r = log.read(base, 1).unwrap();
        assert_eq!(r.first_offset, base, "acked batch {i} at {base}");
        assert_eq!(
            &r.bytes[..],
            &batch(base, count, i as i64, len, i)[..],
            "batch {i}"
        );
    }
    // Whatever was not acknowledged may be cut, but only a torn tail.
    assert!(report.truncated_bytes < 4096, "{report:?}");
}
