//! The deployment's PKI.
//!
//! Will own: the deployment CA, node and client certificate issuance, rustls server and
//! client configurations that verify peers against the deployment CA, identity
//! extraction from certificates (`meridian://REGION/ROLE/NAME`), and reload on change.
