//! Fault injection for Meridian, Jepsen style: real processes, real faults, and an
//! independent checker that judges what the workload saw.
//!
//! This crate is split the way the guarantees are argued:
//!
//! - [`history`]: what the workload recorded (acknowledged writes, what a final read of
//!   every partition returned, what a consumer group delivered) as plain data. The harness
//!   fills it; nothing in it knows about sockets or processes.
//! - [`check`]: one module per guarantee, each a pure function from a history to a
//!   [`check::Verdict`] that names the guarantee it protects and every violation it found.
//!   The checker never trusts the system under test: it compares what was acknowledged
//!   with what can be read back, byte for byte.
//! - [`report`]: the per-run report (Markdown and JSON) with the scenario, seed, faults,
//!   counts, recovery times, mirror lag, RPO and RTO.
//!
//! Keeping the checker pure means a broken guarantee is caught by unit tests on made-up
//! histories as well as by real runs, and a real run's history can be re-checked offline.

pub mod check;
pub mod error;
pub mod harness;
pub mod history;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
