//! Fault injection.
//!
//! Will own: a harness that starts real `meridian` processes for several regions, injects
//! faults (crashes, stalls, partitions, latency, full disks, certificate rotation), runs a
//! workload and checks one invariant per guarantee, with seeds that replay.
