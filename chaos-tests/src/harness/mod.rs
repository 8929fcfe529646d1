//! The harness's moving parts, each owning one thing: the deployment file it writes
//! ([`deployment`]), the real `meridian` processes it starts and hurts ([`process`]), the
//! workload that records what the cluster acknowledged ([`workload`]) and the final read
//! of every partition ([`readback`]), and cuts between regions ([`partition`]).

pub mod deployment;
pub mod partition;
pub mod process;
pub mod readback;
pub mod workload;
