//! Measurements from the deterministic simulation (virtual time, so figures are
//! protocol behaviour, not machine speed). Run:
//! `cargo run --release -p gossip --example gossip_measure [runs]`

use std::time::Duration;

use gossip::sim::{Sim, SimConfig};
use gossip::{GossipConfig, MemberState, MembershipEvent};

const N: usize = 20;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut xs: Vec<Duration>) {
    xs.sort();
    println!(
        "{name}: runs={} median={:.2?} p99={:.2?} max={:.2?}",
        xs.len(),
        pct(&xs, 0.5),
        pct(&xs, 0.99),
        xs[xs.len() - 1]
    );
}

fn cluster(seed: u64, cfg: GossipConfig, wan_net: bool, encrypt: bool) -> (Sim, Duration) {
    let mut c = SimConfig::new(N, seed, cfg);
    c.encrypt = encrypt;
    if wan_net {
        c.min_delay = Duration::from_millis(45);
        c.max_delay = Duration::from_millis(60);
    }
    let mut sim = Sim::new(c);
    sim.join_all();
    let t = sim
        .run_until(Duration::from_secs(600), Sim::converged)
        .unwrap_or_else(|| panic!("seed {seed}: no convergence"));
    (sim, t)
}

fn detection(name: &str, preset: fn(u32) -> GossipConfig, wan_net: bool, runs: u64) {
    let mut join = Vec::new();
    let mut detect = Vec::new();
    let mut bound = Duration::ZERO;
    for seed in 0..runs {
        let (mut sim, t) = cluster(1000 + seed, preset(N as u32), wan_net, false);
        join.push(t);
        bound = sim.node(0).config().failure_detection_bound();
        let victim = (seed as usize * 7) % N;
        sim.kill(victim);
        let d = sim
            .run_until(bound * 3, |s| {
                (0..N)
                    .filter(|&o| o != victim)
                    .all(|o| s.state_of(o, victim) == Some(MemberState::Down))
            })
            .unwrap_or_else(|| panic!("seed {}: never detected", 1000 + seed));
        detect.push(d);
    }
    summary(&format!("{name} join convergence (20 members)"), join);
    summary(
        &format!("{name} failure detection, all 20 agree (bound {bound:.1?})"),
        detect,
    );
}

fn bandwidth(name: &str, preset: fn(u32) -> GossipConfig, wan_net: bool) {
    let (mut sim, _) = cluster(7, preset(N as u32), wan_net, true);
    sim.run_for(Duration::from_secs(30));
    let before: Vec<u64> = (0..N).map(|i| sim.bytes_sent(i)).collect();
    let secs = 120;
    sim.run_for(Duration::from_secs(secs));
    let rates: Vec<f64> = (0..N)
        .map(|i| (sim.bytes_sent(i) - before[i]) as f64 / secs as f64)
        .collect();
    let mean = rates.iter().sum::<f64>() / N as f64;
    let max = rates.iter().cloned().fold(0.0, f64::max);
    println!("{name} steady state, encrypted: mean {mean:.0} B/s per node sent, max {max:.0} B/s");
}

fn false_positives(name: &str, preset: fn(u32) -> GossipConfig, minutes: u64) {
    let mut total = 0;
    for seed in 0..3 {
        let mut c = SimConfig::new(N, 500 + seed, preset(N as u32));
        c.loss = 0.10;
        c.min_delay = Duration::from_millis(45);
        c.max_delay = Duration::from_millis(60);
        let mut sim = Sim::new(c);
        sim.join_all();
        sim.run_for(Duration::from_secs(minutes * 60));
        total += sim
            .events()
            .iter()
            .filter(|(_, _, e)| matches!(e, MembershipEvent::Down(_)))
            .count();
    }
    println!("{name} under 10% loss, 100 ms RTT, 3 x {minutes} min: {total} false Down events");
}

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    detection("LAN", GossipConfig::lan, false, runs);
    detection("WAN(100ms RTT)", GossipConfig::wan, true, runs.min(30));
    bandwidth("LAN", GossipConfig::lan, false);
    bandwidth("WAN", GossipConfig::wan, true);
    false_positives("LAN preset", GossipConfig::lan, 30);
    false_positives("WAN preset", GossipConfig::wan, 30);
}
