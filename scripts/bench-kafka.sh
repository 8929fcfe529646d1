#!/usr/bin/env bash
# Issue 9's figure: produce and consume throughput through the Kafka listener with a real
# client (kcat, i.e. librdkafka) versus Meridian's own client (`meridian bench`) over
# gRPC, on one release-mode broker, alternating in pairs; prints each pair's ratio.
#
# Usage: scripts/bench-kafka.sh [RECORDS]     (default 500,000 records of 1 KiB)
#   RUNS=3   pairs to run (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
export LC_ALL=C
records=${1:-500000}
runs=${RUNS:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
command -v kcat >/dev/null || { echo "kcat is not installed (apt-get install kcat)"; exit 1; }
ip=127.0.0.52
work=$(mktemp -d /tmp/meridian-kafka-bench.XXXXXX)
broker_pid=""
cleanup() { [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

grpc="$ip:$(port)"
kafka="$ip:$(port)"
single_broker_topology bench "$grpc" | sed -e "s|^data_dir = \"data\"|data_dir = \"data\"\nkafka = \"$kafka\"|" >"$work/topology.toml"
(cd "$work" && exec "$bin" broker --topology topology.toml --node bench/b1 2>broker.log) &
broker_pid=$!
until "$bin" topic list --bootstrap "$grpc" >/dev/null 2>&1; do sleep 0.2; done

# One file of RECORDS lines of 1,023 bytes (+ newline: 1 KiB records for kcat).
python3 -c "
import sys
line = b'x' * 1023 + b'\n'
with open('$work/records', 'wb') as f:
    for _ in range($records): f.write(line)
"
mbps() { python3 -c "print(f'{$records * 1024 / $1 / 1e6:.1f}')"; }
now() { date +%s.%N; }
for run in $(seq 1 "$runs"); do
  "$bin" topic create "k$run" --partitions 1 --bootstrap "$grpc" >/dev/null
  "$bin" topic create "m$run" --partitions 1 --bootstrap "$grpc" >/dev/null
  t0=$(now)
  kcat -P -b "$kafka" -t "k$run" -X acks=1 -X linger.ms=5 -X batch.size=1000000 -X queue.buffering.max.kbytes=1048576 -l "$work/records"
  t1=$(now)
  kp=$(python3 -c "print($t1 - $t0)")
  own=$("$bin" bench produce --topic "m$run" --records "$records" --record-size 1024 --acks 1 --bootstrap "$grpc" | tail -1)
  op=$(echo "$own" | sed -E 's/.* in ([0-9.]+)s.*/\1/')
  t0=$(now)
  n=$(kcat -C -b "$kafka" -t "k$run" -o beginning -e -q -f 'x\n' | wc -l)
  t1=$(now)
  kc=$(python3 -c "print($t1 - $t0)")
  [ "$n" -eq "$records" ] || { echo "kcat read $n of $records"; exit 1; }
  ownc=$("$bin" bench consume --topic "m$run" --bootstrap "$grpc" | tail -1)
  oc=$(echo "$ownc" | sed -E 's/.* in ([0-9.]+)s.*/\1/')
  echo "pair $run: produce kcat $(mbps "$kp") MB/s, meridian $(mbps "$op") MB/s, kcat/meridian $(python3 -c "print(f'{$op/$kp:.2f}')"); consume kcat $(mbps "$kc") MB/s, meridian $(mbps "$oc") MB/s, kcat/meridian $(python3 -c "print(f'{$oc/$kc:.2f}')")"
done
