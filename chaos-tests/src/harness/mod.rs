//! The harness's moving parts, each owning one thing: the deployment file it writes
//! ([`deployment`]), the real `meridian` processes it starts and hurts ([`process`]), the
//! workload that records what the cluster acknowledged ([`workload`]), the consumer group
//! the failover step moves ([`group_reader`]), the final read of every partition
//! ([`readback`]), where the regions live on the network ([`network`]: loopback
//! addresses, or [`netns`] namespaces joined by veth links), cuts between regions
//! ([`partition`]), latency on the link between them ([`proxy`]), certificate rotation
//! ([`rotation`]), full disks ([`disk`]), and all of it without root ([`rootless`]).

pub mod deployment;
pub mod disk;
pub mod group_reader;
pub mod netns;
pub mod network;
pub mod partition;
pub mod process;
pub mod proxy;
pub mod readback;
pub mod rootless;
pub mod rotation;
pub mod workload;
