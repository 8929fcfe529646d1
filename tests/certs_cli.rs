//! `meridian certs ...` as an operator runs it: the built binary, real directories.

use std::path::Path;
use std::process::{Command, Output};

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env("MERIDIAN_LOG", "warn")
        .output()
        .expect("run meridian")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_ca_issue_and_inspect_show_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let node = tmp.path().join("tls/us-east/b1");

    let out = meridian(&["certs", "init-ca", "--out", p(&ca), "--name", "test-ca"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ca.join("ca.pem").is_file() && ca.join("ca-key.pem").is_file());

    let out = meridian(&[
        "certs",
        "issue",
        "--ca",
        p(&ca),
        "--region",
        "us-east",
        "--name",
        "b1",
        "--role",
        "broker",
        "--dns",
        "localhost,b1.local",
        "--ip",
        "127.0.0.1",
        "--days",
        "30",
        "--out",
        p(&node),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("meridian://us-east/broker/b1"));
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(node.join(f).is_file(), "{f} missing");
    }

    let out = meridian(&["certs", "inspect", p(&node.join("cert.pem"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("identity:   meridian://us-east/broker/b1"),
        "{shown}"
    );
    assert!(shown.contains("DNS:b1.local"), "{shown}");
    assert!(shown.contains("IP:127.0.0.1"), "{shown}");
    assert!(shown.contains("sha256:"), "{shown}");

    // A TLS directory works too, and JSON carries the same facts.
    let out = meridian(&["certs", "inspect", p(&node), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["identity"], "meridian://us-east/broker/b1");
    assert_eq!(json["role"], "broker");
    assert_eq!(json["is_ca"], false);
    let days = json["days_left"].as_i64().unwrap();
    assert!((28..=30).contains(&days), "{days}");
    assert_eq!(json["fingerprint_sha256"].as_str().unwrap().len(), 95);
}

#[test]
fn issue_with_a_missing_ca_names_the_path_and_says_to_run_init_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-ca-here");
    let out = meridian(&[
        "certs",
        "issue",
        "--ca",
        p(&missing),
        "--region",
        "us-east",
        "--name",
        "app",
        "--role",
        "client",
        "--out",
        p(&tmp.path().join("out")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(p(&missing)), "{err}");
    assert!(err.contains("meridian certs init-ca"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn init_ca_refuses_to_replace_an_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    assert!(
        meridian(&["certs", "init-ca", "--out", p(&ca)])
            .status
            .success()
    );
    let before = std::fs::read(ca.join("ca-key.pem")).unwrap();
    let out = meridian(&["certs", "init-ca", "--out", p(&ca)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), before);
}

#[test]
fn issue_rejects_a_region_that_cannot_prefix_a_topic() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    assert!(
        meridian(&["certs", "init-ca", "--out", p(&ca)])
            .status
            .success()
    );
    let out = meridian(&[
        "certs",
        "issue",
        "--ca",
        p(&ca),
        "--region",
        "us.east",
        "--name",
        "m1",
        "--role",
        "mirror",
        "--out",
        p(&tmp.path().join("out")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("region contains `.`"), "{err}");
}
