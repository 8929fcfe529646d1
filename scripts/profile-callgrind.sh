#!/usr/bin/env bash
# Where the instructions go in one `meridian bench produce` + `bench consume` row, counted
# by callgrind (repeatable on a noisy shared VM, unlike wall time). Runs the broker and the
# bench client each under callgrind in turn, against a release build on 127.0.0.51, and
# prints the top functions by exclusive (self) and inclusive instruction count.
#
# Usage: scripts/profile-callgrind.sh [RECORDS] [RECORD_SIZE] [PARTITIONS] [FLUSH]
#   defaults: 200000 100 1 none. Callgrind runs ~50x slower: keep RECORDS small.
#   OUT=DIR keeps the callgrind.out files (default: $CARGO_TARGET_DIR/profile/<time>).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
export LC_ALL=C
records=${1:-200000}
size=${2:-100}
partitions=${3:-1}
flush=${4:-none}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
out=${OUT:-$CARGO_TARGET_DIR/profile/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
ip=127.0.0.51

broker_pid=""
work=""
stop_broker() {
  if [[ -n "$broker_pid" ]]; then
    kill -INT "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  broker_pid=""
}
trap 'stop_broker; [[ -n "$work" ]] && rm -rf "$work"' EXIT

# start_broker [WRAPPER...]: a fresh broker (data dir and all), optionally under a wrapper.
start_broker() {
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
  work=$(mktemp -d /tmp/meridian-profile.XXXXXX)
  grpc="$ip:$(port)"
  single_broker_topology profile "$grpc" >"$work/topology.toml"
  "$@" "$bin" broker --topology "$work/topology.toml" --node profile/b1 2>"$work/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 300); do
    if "$bin" topic list --bootstrap "$grpc" >/dev/null 2>&1; then
      "$bin" topic create bench --partitions "$partitions" --config "flush.policy=$flush" --bootstrap "$grpc" >/dev/null
      return
    fi
    sleep 0.1
  done
  echo "the broker did not answer on $grpc within 30 s; its log:" >&2
  cat "$work/broker.log" >&2
  exit 1
}

callgrind=(valgrind --tool=callgrind --quiet)
produce=(bench produce --topic bench --records "$records" --record-size "$size" --acks 1 --json)
consume=(bench consume --topic bench --json)

echo "== $records records of $size B, $partitions partition(s), flush.policy=$flush; output in $out"
echo "== 1: bench client under callgrind, broker native"
start_broker
"${callgrind[@]}" --callgrind-out-file="$out/client-produce.out" "$bin" "${produce[@]}" --bootstrap "$grpc"
"${callgrind[@]}" --callgrind-out-file="$out/client-consume.out" "$bin" "${consume[@]}" --bootstrap "$grpc"
stop_broker
echo "== 2: broker under callgrind, bench client native"
start_broker "${callgrind[@]}" --callgrind-out-file="$out/broker.out"
"$bin" "${produce[@]}" --bootstrap "$grpc"
"$bin" "${consume[@]}" --bootstrap "$grpc"
stop_broker

for f in client-produce client-consume broker; do
  callgrind_annotate --auto=no --threshold=100 "$out/$f.out" >"$out/$f.self.txt" 2>/dev/null
  callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out/$f.out" >"$out/$f.inclusive.txt" 2>/dev/null
  echo
  echo "== $f: top functions by self (exclusive) instructions ($out/$f.self.txt)"
  sed -n '/^Ir/,$p' "$out/$f.self.txt" | sed -n 1,32p
  echo "== $f: top functions by inclusive instructions ($out/$f.inclusive.txt)"
  sed -n '/^Ir/,$p' "$out/$f.inclusive.txt" | sed -n 1,40p
done
