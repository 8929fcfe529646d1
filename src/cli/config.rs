//! `meridian config validate|show`: the operator's check of a deployment file.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use topology::TopologyError;

use super::UsageError;

/// Deployment-file commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate one or more deployment files; print every problem with file:line:col.
    Validate {
        /// Deployment files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the resolved view of one node: its addresses, peers, quorum, flows and TLS paths.
    Show {
        /// Deployment file (TOML).
        file: PathBuf,
        /// The node, as REGION/NAME (a broker or a mirror worker).
        #[arg(long)]
        node: String,
        /// Output format: `toml` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Format::Toml)]
        format: Format,
    },
}

/// How `config show` prints the view.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// TOML, readable.
    Toml,
    /// JSON, one document.
    Json,
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Validate { files } => validate(&files),
        ConfigCommand::Show { file, node, format } => show(&file, &node, format),
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut invalid = 0usize;
    for file in files {
        match topology::load(file) {
            Ok(_) => println!("{}: ok", file.display()),
            Err(err) => {
                invalid += 1;
                report(file, &err);
            }
        }
    }
    tracing::debug!(files = files.len(), invalid, "validated deployment files");
    if invalid == 0 {
        return Ok(());
    }
    let (verb, noun) = if files.len() == 1 {
        ("is", "deployment file")
    } else if invalid == 1 {
        ("is", "deployment files")
    } else {
        ("are", "deployment files")
    };
    Err(UsageError(format!(
        "{invalid} of {} {noun} {verb} invalid",
        files.len()
    ))
    .into())
}

fn show(file: &Path, node: &str, format: Format) -> anyhow::Result<()> {
    let topology = match topology::load(file) {
        Ok(topology) => topology,
        Err(err) => {
            report(file, &err);
            return Err(UsageError(format!(
                "{} is not a valid deployment file; fix the problems above",
                file.display()
            ))
            .into());
        }
    };
    let view = topology.node(node)?;
    match format {
        Format::Toml => print!("{}", view.to_toml()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
    }
    Ok(())
}

/// Prints a load failure on stderr: every problem as `FILE:LINE:COL: message`.
fn report(file: &Path, err: &TopologyError) {
    match err {
        TopologyError::Invalid { problems } => {
            for problem in problems {
                eprintln!("{problem}");
            }
        }
        other => eprintln!("{}: {other}", file.display()),
    }
}
