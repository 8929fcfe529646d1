//! `meridian config validate|show`: the operator's check of a deployment file.

use clap::Subcommand;

/// Deployment-file commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate one or more deployment files; print every problem with file:line:col.
    Validate {
        /// Deployment files (TOML).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

/// Runs a `config` subcommand.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Validate { files } => {
            let _ = files;
            anyhow::bail!("config validate is not built yet")
        }
    }
}
