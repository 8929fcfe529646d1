//! The front door: `meridian dev --dir DIR` brings up every region's cluster as separate
//! processes, writes ready.json in the documented shape, serves clients, reports (and
//! does not restart) a node that dies, and stops everything on Ctrl-C with exit 0.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn wait_for_file(path: &Path, timeout: Duration, dev: &mut std::process::Child) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = dev.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(dev.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("meridian dev exited ({status}) before it was ready: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET `path` from `addr` (HOST:PORT): the whole response, status line included.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics listener answers");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

#[test]
fn dev_writes_ready_json_serves_clients_reports_deaths_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = support::meridian()
        .args(["dev", "--regions", "2", "--brokers", "2", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meridian dev");
    let ready: serde_json::Value = serde_json::from_str(&wait_for_file(
        &dir.path().join("ready.json"),
        Duration::from_secs(90),
        &mut dev,
    ))
    .expect("json");

    let regions = ready["regions"].as_object().expect("regions object");
    assert_eq!(regions.len(), 2, "{ready}");
    let nodes = ready["nodes"].as_array().expect("nodes array");
    assert_eq!(
        nodes.len(),
        6,
        "two brokers and a mirror worker per region: {ready}"
    );
    let mirrors: Vec<_> = nodes.iter().filter(|n| n["role"] == "mirror").collect();
    assert_eq!(mirrors.len(), 2, "{ready}");
    for node in nodes {
        assert!(
            node["role"] == "broker" || node["role"] == "mirror",
            "{node}"
        );
        assert!(
            alive(node["pid"].as_i64().unwrap() as i32),
            "{node} is not running"
        );
        assert!(regions.contains_key(node["region"].as_str().unwrap()));
        // Every node serves Prometheus metrics at the URL ready.json gives, and says
        // who it is.
        let url = node["metrics"]
            .as_str()
            .expect("every node has a metrics URL");
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let body = http_get(addr, "/metrics");
        let who = format!(
            "meridian_build_info{{node=\"{}\",region=\"{}\",role=\"{}\"",
            node["name"].as_str().unwrap(),
            node["region"].as_str().unwrap(),
            node["role"].as_str().unwrap()
        );
        assert!(body.contains(&who), "{url} lacks {who}:\n{body}");
        assert!(
            http_get(addr, "/readyz").contains("ready"),
            "{url} is not ready"
        );
    }
    for region in regions.values() {
        assert_eq!(
            region["metrics"].as_array().map(Vec::len),
            Some(3),
            "{region}"
        );
    }
    let scrape_config = std::fs::read_to_string(dir.path().join("prometheus.yml")).unwrap();
    assert_eq!(
        scrape_config.matches("targets:").count(),
        6,
        "{scrape_config}"
    );
    assert!(dir.path().join("topology.toml").exists());
    let out = support::run_ok(&[
        "config",
        "validate",
        dir.path().join("topology.toml").to_str().unwrap(),
    ]);
    assert!(out.contains("ok"), "{out}");

    // Every listener requires mutual TLS: a client without credentials is refused, one
    // with the credentials ready.json names is served.
    let bootstrap = regions["us-east"]["bootstrap"].as_str().unwrap().to_owned();
    assert_eq!(bootstrap.split(',').count(), 2);
    let tls = regions["us-east"]["client_tls_dir"]
        .as_str()
        .expect("ready.json names the client TLS directory")
        .to_owned();
    let plaintext = support::meridian()
        .args(["topic", "list", "--bootstrap", &bootstrap])
        .output()
        .unwrap();
    assert!(
        !plaintext.status.success(),
        "a plaintext client must be refused: {}",
        String::from_utf8_lossy(&plaintext.stdout)
    );
    support::run_ok(&[
        "--tls-dir",
        &tls,
        "topic",
        "create",
        "tour",
        "--partitions",
        "2",
        "--bootstrap",
        &bootstrap,
    ]);
    let produced = support::run_with_stdin(
        &[
            "--tls-dir",
            &tls,
            "produce",
            "tour",
            "--bootstrap",
            &bootstrap,
        ],
        b"a\nb\nc\n",
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let consumed = support::run_ok(&[
        "--tls-dir",
        &tls,
        "consume",
        "tour",
        "--from-beginning",
        "--exit-at-end",
        "--bootstrap",
        &bootstrap,
    ]);
    let mut values: Vec<&str> = consumed.lines().collect();
    values.sort_unstable();
    assert_eq!(values, ["a", "b", "c"]);

    // The mirror worker of eu-west copies it to us-east.tour, active/active.
    let remote_bootstrap = regions["eu-west"]["bootstrap"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mirrored = loop {
        let out = support::meridian()
            .args([
                "--tls-dir",
                &tls,
                "consume",
                "us-east.tour",
                "--from-beginning",
                "--exit-at-end",
                "--bootstrap",
                &remote_bootstrap,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.lines().count() == 3 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "us-east.tour never reached eu-west: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut values: Vec<&str> = mirrored.lines().collect();
    values.sort_unstable();
    assert_eq!(values, ["a", "b", "c"]);

    // Kafka clients over mutual TLS: kcat produces in us-east, and kcat reads the
    // mirrored copy from us-east.tour in eu-west.
    kcat_across_regions(regions, &tls);

    // Gossip's shared state carries each mirror worker's flow summary to every node.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = support::meridian()
            .args(["--tls-dir", &tls, "members", "--bootstrap", &bootstrap])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("shared mirror/eu-west/m1: us-east->eu-west:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no flow summary of eu-west/m1 in gossip: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A node that dies stays dead (a real crash), and dev keeps running.
    let victim = nodes.iter().rfind(|n| n["role"] == "broker").unwrap()["pid"]
        .as_i64()
        .unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        dev.try_wait().unwrap().is_none(),
        "dev must keep running when one node dies"
    );

    // Ctrl-C stops every node and exits 0.
    kill(Pid::from_raw(dev.id() as i32), Signal::SIGINT).unwrap();
    let output = dev.wait_with_output().expect("dev exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dev exit: {:?}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("not restarting"),
        "the death was not reported: {stderr}"
    );
    for node in nodes {
        let pid = node["pid"].as_i64().unwrap() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "{node} still running after dev stopped");
    }
    assert!(
        !dir.path().join("ready.json").exists(),
        "ready.json must go away with the deployment"
    );
}

/// kcat (librdkafka) with the dev client's certificate: a record produced through
/// us-east's Kafka listener is read from eu-west's `us-east.tour` by kcat too.
fn kcat_across_regions(regions: &serde_json::Map<String, serde_json::Value>, tls: &str) {
    let installed = std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED: kcat is not installed (apt-get install kcat); .ci/run installs it");
        return;
    }
    let ssl = [
        "-X".to_string(),
        "security.protocol=ssl".to_string(),
        "-X".to_string(),
        format!("ssl.ca.location={tls}/ca.pem"),
        "-X".to_string(),
        format!("ssl.certificate.location={tls}/cert.pem"),
        "-X".to_string(),
        format!("ssl.key.location={tls}/key.pem"),
    ];
    let east = regions["us-east"]["kafka_bootstrap"]
        .as_str()
        .expect("ready.json names kafka_bootstrap");
    let west = regions["eu-west"]["kafka_bootstrap"].as_str().unwrap();
    let mut produce = std::process::Command::new("kcat")
        .args(["-P", "-b", east, "-t", "tour", "-K", ":", "-X", "acks=all"])
        .args(&ssl)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(b"kcat-key:from-kcat\n")
        .unwrap();
    assert!(produce.wait().unwrap().success(), "kcat produce over mTLS");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("kcat")
            .args([
                "-C",
                "-b",
                west,
                "-t",
                "us-east.tour",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k=%s\n",
            ])
            .args(&ssl)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.lines().any(|l| l == "kcat-key=from-kcat") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kcat's record never reached eu-west's us-east.tour: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
