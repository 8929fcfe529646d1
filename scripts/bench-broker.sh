#!/usr/bin/env bash
# Issue 3's broker benchmarks in one command: per run, the disk's own sequential-write
# figures (dd), then `meridian bench produce|consume` against a fresh release-mode broker
# on 127.0.0.50, for 100-B and 1-KiB records, 1 and 8 partitions, acks=1, flush.policy
# none and batch. Ratios are computed inside each run (same disk state, same load), and
# the summary prints the median and the range over runs.
#
# Usage: scripts/bench-broker.sh [RECORDS_100B] [RECORDS_1K]
#   RUNS=3            how many complete runs (default 1)
#   RESULTS=FILE      where the JSON lines go (default: $CARGO_TARGET_DIR/bench-results/<time>.jsonl)
#   BENCH_ARGS="..."  extra `meridian bench produce` flags, e.g. "--batch-size 1048576 --linger 5ms"
#   BENCH_DIR=DIR     parent of the scratch data dir (default /tmp; put it on the disk you measure)
# Re-print a summary later: python3 scripts/bench-summary.py FILE.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
export LC_ALL=C
records_small=${1:-2000000}
records_large=${2:-500000}
runs=${RUNS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
results=${RESULTS:-$CARGO_TARGET_DIR/bench-results/$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$results")"
: >"$results"
ip=127.0.0.50
ticks=$(getconf CLK_TCK)

broker_pid=""
work=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
  broker_pid=""
  work=""
}
trap cleanup EXIT

# dd's last line ends "N bytes (...) copied, S s, R MB/s"; recompute MB/s (10^6) from N and S
# so the unit never changes between runs.
dd_mb_per_s() { awk '{for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i - 1); printf "%.1f", $1 / s / 1e6}'; }
# CPU seconds (user + system) the broker has used so far.
broker_cpu() { awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$broker_pid/stat"; }
emit() { echo "$1" >>"$results"; }

# bench KIND ROW ARGS...: runs `meridian bench KIND`, appends its JSON with the run, row,
# broker CPU and client CPU seconds, and prints it.
bench() {
  local kind=$1 row=$2
  shift 2
  local before after json client
  before=$(broker_cpu)
  json=$(/usr/bin/time -f '%U %S' -o "$work/time" "$bin" bench "$kind" --json "$@" --bootstrap "$grpc")
  after=$(broker_cpu)
  client=$(awk '{printf "%.2f", $1 + $2}' "$work/time")
  json=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(run=int(sys.argv[2]), row=sys.argv[3], kind=sys.argv[4], broker_cpu_s=float(sys.argv[5]), client_cpu_s=float(sys.argv[6])); print(json.dumps(d))' \
    "$json" "$run" "$row" "$kind" "$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.2f", a - b}')" "$client")
  emit "$json"
  echo "  $json"
}

row() { # name size partitions flush records
  local topic="bench-$1"
  "$bin" topic create "$topic" --partitions "$3" --config "flush.policy=$4" --bootstrap "$grpc" >/dev/null
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
  bench produce "$1" --topic "$topic" --records "$5" --record-size "$2" --acks 1 ${BENCH_ARGS:-}
  bench consume "$1" --topic "$topic"
}

one_run() {
  work=$(mktemp -d "${BENCH_DIR:-/tmp}/meridian-bench.XXXXXX")
  echo "== run $run of $runs: $(nproc) cores, $(uname -r), data in $work"
  local buffered dsync
  # Buffered sequential write with one fdatasync: the page-cache path flush.policy=none takes.
  buffered=$(dd if=/dev/zero of="$work/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1 | dd_mb_per_s)
  rm -f "$work/dd.bin"
  # O_DSYNC on every 256 KiB write: the worst case of flush.policy=batch.
  dsync=$(dd if=/dev/zero of="$work/dd.bin" bs=256k count=1024 oflag=dsync 2>&1 | tail -1 | dd_mb_per_s)
  rm -f "$work/dd.bin"
  echo "  dd buffered+fdatasync ${buffered} MB/s, dd O_DSYNC ${dsync} MB/s"
  emit "{\"run\": $run, \"kind\": \"dd\", \"buffered_mb_per_s\": $buffered, \"dsync_mb_per_s\": $dsync}"

  grpc="$ip:$(port)"
  single_broker_topology bench "$grpc" >"$work/topology.toml"
  "$bin" broker --topology "$work/topology.toml" --node bench/b1 2>"$work/broker.log" &
  broker_pid=$!
  local up=""
  for _ in $(seq 1 100); do
    if "$bin" topic list --bootstrap "$grpc" >/dev/null 2>&1; then up=1 && break; fi
    sleep 0.1
  done
  if [[ -z "$up" ]]; then
    echo "the broker did not answer on $grpc within 10 s; its log:" >&2
    cat "$work/broker.log" >&2
    exit 1
  fi

  row 100B-p1-none 100 1 none "$records_small"
  row 100B-p8-none 100 8 none "$records_small"
  row 1KiB-p1-none 1024 1 none "$records_large"
  row 1KiB-p8-none 1024 8 none "$records_large"
  row 1KiB-p1-batch 1024 1 batch "$records_large"
  row 1KiB-p8-batch 1024 8 batch "$records_large"
  cleanup
}

for run in $(seq 1 "$runs"); do one_run; done
echo "== results in $results"
python3 scripts/bench-summary.py "$results"
