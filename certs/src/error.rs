//! The one error type of the certs crate.

use std::path::PathBuf;

/// Everything that can go wrong while creating, loading or using the deployment's PKI.
///
/// Every message names the file or value at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file or directory could not be read or written. Nothing was changed by a failed
    /// read; a failed write may leave a temporary file next to the target, never a
    /// half-written target (writes go through a rename).
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The CA directory does not hold a CA (ca.pem and ca-key.pem). Nothing changed.
    #[error(
        "no CA found in {dir} (expected ca.pem and ca-key.pem): run `meridian certs init-ca --out {dir}` first"
    )]
    CaNotFound {
        /// The directory that was searched.
        dir: PathBuf,
    },

    /// A CA already exists where a new one was to be written; it was left untouched so
    /// that certificates it issued stay valid.
    #[error(
        "a CA already exists in {dir}: refusing to overwrite it (certificates it issued would stop working); choose another --out directory"
    )]
    CaExists {
        /// The directory that already holds ca-key.pem.
        dir: PathBuf,
    },

    /// A TLS directory lacks one of its three files. Nothing changed.
    #[error(
        "missing {path}: a TLS directory holds ca.pem, cert.pem and key.pem; create it with `meridian certs issue ... --out DIR`"
    )]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
    },

    /// A file exists but does not hold what it should (PEM certificate or private key).
    /// Nothing changed.
    #[error("invalid {path}: {reason}")]
    InvalidFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },

    /// A DER certificate could not be parsed. Nothing changed.
    #[error("invalid certificate: {reason}")]
    InvalidCertificate {
        /// What the parser said.
        reason: String,
    },

    /// The certificate carries no `meridian://REGION/ROLE/NAME` URI SAN, or several.
    /// Nothing changed.
    #[error(
        "certificate `{subject}` has {found} meridian:// identities in its SANs (exactly one is required); issue it with `meridian certs issue`"
    )]
    NoIdentity {
        /// The certificate's subject, to tell which certificate it was.
        subject: String,
        /// How many meridian:// URIs were found (0 or more than 1).
        found: usize,
    },

    /// A string is not a valid identity. Nothing changed.
    #[error("invalid identity `{input}`: {reason} (expected meridian://REGION/ROLE/NAME)")]
    InvalidIdentity {
        /// The string that was given.
        input: String,
        /// Which part is wrong.
        reason: String,
    },

    /// An issuance request is inconsistent (for example zero days, or a bad DNS name).
    /// Nothing was issued.
    #[error("invalid certificate request: {reason}")]
    InvalidRequest {
        /// What to change in the request.
        reason: String,
    },

    /// An authorization rule set is invalid (bad principal, empty region). No authorizer
    /// was built.
    #[error("invalid authorization rule {rule}: {reason}")]
    InvalidRule {
        /// The rule at fault, as written.
        rule: String,
        /// What to fix.
        reason: String,
    },

    /// Key generation or signing failed inside rcgen. Nothing was issued.
    #[error("certificate generation failed: {source}")]
    Generate {
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused the material (for example a key that does not match its
    /// certificate). No configuration was built; a reloading resolver keeps serving the
    /// previous certificate.
    #[error("TLS setup failed for {what}: {source}")]
    Tls {
        /// Which material or step was refused.
        what: String,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },

    /// The client-certificate verifier could not be built from the CA. No configuration
    /// was built.
    #[error("cannot build the client certificate verifier from the CA: {source}")]
    Verifier {
        /// rustls' error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// Short form used throughout the crate.
pub type Result<T, E = CertsError> = std::result::Result<T, E>;
