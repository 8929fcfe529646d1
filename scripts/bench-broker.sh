#!/usr/bin/env bash
# Issue 3's broker benchmarks, in one run: the disk's own sequential-write figure (dd),
# then `meridian bench produce|consume` against one release-mode broker on loopback.
# Usage: scripts/bench-broker.sh [RECORDS_100B] [RECORDS_1K]
set -euo pipefail
cd "$(dirname "$0")/.."
records_small=${1:-2000000}
records_large=${2:-500000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/meridian"
work=$(mktemp -d /tmp/meridian-bench.XXXXXX)
trap 'kill "$broker_pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

echo "== machine: $(nproc) cores, $(uname -r), data in $work"
echo "== dd: buffered sequential write, 1 GiB in 1 MiB blocks, one fdatasync at the end"
dd if=/dev/zero of="$work/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1
rm -f "$work/dd.bin"
echo "== dd: synchronous sequential write, 256 MiB in 256 KiB blocks, O_DSYNC on every write"
dd if=/dev/zero of="$work/dd.bin" bs=256k count=1024 oflag=dsync 2>&1 | tail -1
rm -f "$work/dd.bin"

ip=127.0.0.50
port() { python3 -c "import socket;s=socket.socket();s.bind(('$ip',0));print(s.getsockname()[1])"; }
grpc="$ip:$(port)"
cat > "$work/topology.toml" <<TOML
[deployment]
name = "bench"
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
name = "bench"
[[regions.brokers]]
name = "b1"
id = 1
grpc = "$grpc"
gossip = "$ip:$(port)"
metrics = "$ip:$(port)"
data_dir = "data"
TOML
"$bin" broker --topology "$work/topology.toml" --node bench/b1 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 1 100); do "$bin" topic list --bootstrap "$grpc" >/dev/null 2>&1 && break; sleep 0.1; done

run() { # name size partitions flush records
  local topic="bench-$1"
  "$bin" topic create "$topic" --partitions "$3" --config "flush.policy=$4" --bootstrap "$grpc" >/dev/null
  printf '%-28s ' "$1"
  "$bin" bench produce --topic "$topic" --records "$5" --record-size "$2" --acks 1 --bootstrap "$grpc"
  printf '%-28s ' "$1"
  "$bin" bench consume --topic "$topic" --bootstrap "$grpc"
}
echo "== meridian bench (acks=1)"
run 100B-p1-none 100 1 none "$records_small"
run 100B-p8-none 100 8 none "$records_small"
run 1KiB-p1-none 1024 1 none "$records_large"
run 1KiB-p8-none 1024 8 none "$records_large"
run 1KiB-p1-batch 1024 1 batch "$records_large"
run 1KiB-p8-batch 1024 8 batch "$records_large"
