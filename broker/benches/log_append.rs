//! Log append throughput without the network.
fn main() {}
