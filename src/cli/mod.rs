//! The command tree. Each subcommand group is one module that parses nothing itself
//! (clap does) and calls into the library crates.

mod bench;
mod broker;
mod certs;
mod config;
mod connect;
mod consume;
mod dev;
mod groups;
mod members;
mod mirror;
mod mirror_admin;
mod produce;
mod topic;

use clap::{Parser, Subcommand};

/// Meridian: geo-replicated event streaming with exact cross-region offset translation.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter, as RUST_LOG takes it (for example `info` or `broker=debug`).
    #[arg(long, global = true, env = "MERIDIAN_LOG")]
    pub log_level: Option<String>,

    /// Client TLS directory (ca.pem, cert.pem, key.pem) for mutual TLS with the brokers;
    /// `meridian dev` writes one and names it in ready.json as client_tls_dir.
    #[arg(long, global = true, env = "MERIDIAN_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a complete local deployment (the front door).
    Dev(dev::DevArgs),
    /// Run one broker of a deployment.
    Broker(broker::BrokerArgs),
    /// Run a mirror worker, or show how the mirror flows are doing.
    Mirror(mirror::MirrorArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce records read from stdin, one per line.
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    Consume(consume::ConsumeArgs),
    /// Show the live membership (gossip) view of a region.
    Members(members::MembersArgs),
    /// List consumer groups and show their offsets and lag.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Check and show deployment files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The deployment's PKI: CA, certificates, inspection.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Measure produce and consume throughput against a running deployment.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Move a consumer group to another region at its exact positions.
    Failover(mirror_admin::FailoverArgs),
}

/// Runs the chosen subcommand to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = cli.tls_dir {
        connect::set_tls_dir(dir);
    }
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Broker(args) => broker::run(args),
        Command::Mirror(args) => mirror::run(args),
        Command::Topic(cmd) => topic::run(cmd),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Members(args) => members::run(args),
        Command::Groups(cmd) => groups::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Failover(args) => mirror_admin::run_failover(args),
    }
}

/// The async runtime every networked command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Marks an error as the user's to fix (bad usage, invalid configuration): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Maps an error to the process exit code of the contract in DESIGN.md.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|cause| cause.is::<UsageError>() || cause.is::<topology::TopologyError>())
    {
        2
    } else {
        1
    }
}

/// Renders an error chain as one line: the outermost context first, causes after colons.
pub fn one_sentence(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Logs go to stderr, one line per event; `MERIDIAN_LOG`/`--log-level` picks the filter.
pub fn init_tracing(filter: Option<&str>) {
    let filter = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info,openraft=warn,sled=warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
