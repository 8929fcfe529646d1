# Shared helpers for the benchmark scripts (sourced, not run).

# A free TCP port on $ip.
port() { python3 -c "import socket;s=socket.socket();s.bind(('$ip',0));print(s.getsockname()[1])"; }

# Prints a deployment file of one region REGION with one broker b1 whose gRPC listener is
# GRPC, on $ip, topics unreplicated (the broker-core benchmarks measure one broker).
single_broker_topology() {
  local region=$1 grpc=$2
  cat <<TOML
[deployment]
name = "$region"
[tls]
dir = "tls"
[tls.listeners]
client = "off"
inter_broker = "off"
inter_region = "required"
kafka = "off"
metrics = "off"
[gossip]
keyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
[topic_defaults]
partitions = 1
replication_factor = 1
min_insync_replicas = 1
[[regions]]
name = "$region"
[[regions.brokers]]
name = "b1"
id = 1
grpc = "$grpc"
gossip = "$ip:$(port)"
metrics = "$ip:$(port)"
data_dir = "data"
TOML
}
