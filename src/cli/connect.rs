//! Connection flags shared by every operator command.

use clap::Args;

/// How to reach a region's brokers.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Brokers to bootstrap from, HOST:PORT, comma-separated.
    #[arg(long, env = "MERIDIAN_BOOTSTRAP", default_value = "127.0.0.1:9090")]
    pub bootstrap: String,
}

impl ConnectArgs {
    /// Connects and loads metadata.
    pub async fn connect(&self) -> anyhow::Result<broker::client::Client> {
        Ok(broker::client::Client::connect(&self.bootstrap).await?)
    }
}
