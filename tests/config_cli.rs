//! `meridian config validate|show`, run as the built binary on the files in examples/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MERIDIAN_LOG")
        .output()
        .expect("the meridian binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_accepts_the_three_good_examples() {
    let files: Vec<PathBuf> = [
        "dr-active-passive.toml",
        "active-active.toml",
        "hub-and-spoke.toml",
    ]
    .iter()
    .map(|f| example(f))
    .collect();
    let args: Vec<&str> = ["config", "validate"]
        .into_iter()
        .chain(files.iter().map(|f| f.to_str().unwrap()))
        .collect();
    let out = meridian(&args);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for file in &files {
        assert!(
            stdout.contains(&format!("{}: ok", file.display())),
            "{stdout}"
        );
    }
}

#[test]
fn validate_rejects_broken_example_with_every_problem_at_file_line_col() {
    let broken = example("broken.toml");
    let out = meridian(&["config", "validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let source = std::fs::read_to_string(&broken).unwrap();
    // Each expected problem: a fragment of its message and the text it points at.
    let expected = [
        ("unknown field `replicas`", "replicas = 3"),
        ("invalid duration \"7 fortnights\"", "\"7 fortnights\""),
        ("replication_factor = 3 is above", "3\nsegment_age"),
        ("broker id 1 of eu-west/b1", "1\ngrpc = \"127.0.2.1"),
        (
            "address 127.0.1.1:9100 of eu-west/b2",
            "\"127.0.1.1:9100\"\ndata_dir = \"data/eu-west",
        ),
        ("flow target region \"ap-south\"", "\"ap-south\""),
    ];
    for (message, anchor) in expected {
        let offset = source
            .find(anchor)
            .unwrap_or_else(|| panic!("{anchor:?} not in file"));
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
        let prefix = format!("{}:{line}:{col}: ", broken.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(message)),
            "no line starting {prefix:?} containing {message:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("error: 1 of 1 deployment file is invalid"),
        "{stderr}"
    );
}

#[test]
fn validate_of_good_and_bad_files_counts_the_invalid_ones() {
    let good = example("active-active.toml");
    let bad = example("broken.toml");
    let out = meridian(&[
        "config",
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("active-active.toml: ok"));
    assert!(text(&out.stderr).contains("1 of 2 deployment files is invalid"));
}

#[test]
fn validate_of_a_missing_file_exits_2_naming_it() {
    let out = meridian(&["config", "validate", "/nonexistent/deploy.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/deploy.toml"));
}

#[test]
fn show_prints_a_mirror_view_as_json() {
    let file = example("active-active.toml");
    let out = meridian(&[
        "config",
        "show",
        file.to_str().unwrap(),
        "--node",
        "eu-west/m1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["role"], "mirror");
    assert_eq!(view["region"], "eu-west");
    assert_eq!(view["flows_served"][0]["source"], "us-east");
    assert_eq!(
        view["source_brokers"]["us-east"][0]["grpc_addr"],
        "127.0.1.1:9090"
    );
    assert!(
        view["gossip"]["keyring"]
            .as_str()
            .unwrap()
            .contains("redacted")
    );
}

#[test]
fn show_prints_a_broker_view_as_toml_by_default() {
    let file = example("dr-active-passive.toml");
    let out = meridian(&[
        "config",
        "show",
        file.to_str().unwrap(),
        "--node",
        "us-east/b1",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("role = \"broker\""), "{stdout}");
    assert!(stdout.contains("broker_id = 101"), "{stdout}");
}

#[test]
fn show_of_an_unknown_node_exits_2_listing_valid_names() {
    let file = example("dr-active-passive.toml");
    let out = meridian(&[
        "config",
        "show",
        file.to_str().unwrap(),
        "--node",
        "us-east/b7",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("us-east/b7") && stderr.contains("eu-west/m1"),
        "{stderr}"
    );
}

#[test]
fn show_of_an_invalid_file_exits_2_with_its_problems() {
    let file = example("broken.toml");
    let out = meridian(&[
        "config",
        "show",
        file.to_str().unwrap(),
        "--node",
        "us-east/b1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown field `replicas`"), "{stderr}");
    assert!(
        stderr.contains("is not a valid deployment file"),
        "{stderr}"
    );
}
