//! The deployment file.
//!
//! One TOML file describes a whole Meridian deployment: regions, their brokers and
//! controller quorums, mirror flows between regions, TLS material, the gossip keyring
//! and topic defaults. Every node and every operator tool reads it through this crate,
//! so that validation happens once, in one place, with errors that name file, line and
//! column.

/// Everything that can be wrong with a deployment file.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read deployment file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: std::path::PathBuf,
        /// Why the read failed.
        #[source]
        source: std::io::Error,
    },
}
