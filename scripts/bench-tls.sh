#!/usr/bin/env bash
# Issue 5's mTLS figure: produce (and consume) throughput against one release-mode broker
# with every listener requiring mutual TLS versus with TLS off, in alternating pairs on
# the same machine state; prints each pair's ratio and the median.
#
# Usage: scripts/bench-tls.sh [RECORDS]     (default 1,000,000 records of 1 KiB)
#   RUNS=3   pairs to run (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
export LC_ALL=C
records=${1:-1000000}
runs=${RUNS:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
ip=127.0.0.51

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

# measure MODE: MB/s of `bench produce` then `bench consume` against a fresh broker whose
# client and inter-broker listeners are MODE ("required" or "off").
measure() {
  local mode=$1
  work=$(mktemp -d /tmp/meridian-tls-bench.XXXXXX)
  local grpc="$ip:$(port)"
  single_broker_topology bench "$grpc" |
    sed -e "s/^client = \"off\"/client = \"$mode\"/" -e "s/^inter_broker = \"off\"/inter_broker = \"$mode\"/" >"$work/topology.toml"
  cat >>"$work/topology.toml" <<TOML
[[acls]]
principal = "meridian://bench/client/bench"
actions = ["produce", "consume", "create-topic", "describe-topic"]
resource = "*"
TOML
  local tls=()
  if [[ $mode == required ]]; then
    "$bin" certs init-ca --out "$work/ca" >/dev/null 2>&1
    "$bin" certs issue-deployment --topology "$work/topology.toml" --ca "$work/ca" >/dev/null 2>&1
    "$bin" certs issue --ca "$work/ca" --region bench --role client --name bench --out "$work/client" >/dev/null 2>&1
    tls=(--tls-dir "$work/client")
  fi
  "$bin" broker --topology "$work/topology.toml" --node bench/b1 2>"$work/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 100); do
    if "$bin" "${tls[@]}" topic list --bootstrap "$grpc" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  local produce consume
  produce=$("$bin" "${tls[@]}" bench produce --json --topic tls --records "$records" --record-size 1024 --acks 1 --bootstrap "$grpc" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])')
  consume=$("$bin" "${tls[@]}" bench consume --json --topic tls --bootstrap "$grpc" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])')
  cleanup
  echo "$produce $consume"
}

ratios_p=()
ratios_c=()
for run in $(seq 1 "$runs"); do
  read -r off_p off_c < <(measure off)
  read -r on_p on_c < <(measure required)
  rp=$(python3 -c "print(round($on_p / $off_p, 3))")
  rc=$(python3 -c "print(round($on_c / $off_c, 3))")
  echo "pair $run: produce off $off_p MB/s, mTLS $on_p MB/s (ratio $rp); consume off $off_c MB/s, mTLS $on_c MB/s (ratio $rc)"
  ratios_p+=("$rp")
  ratios_c+=("$rc")
done
python3 -c "import statistics,sys; p=[float(x) for x in sys.argv[1].split()]; c=[float(x) for x in sys.argv[2].split()]; print(f'median mTLS/off ratio: produce {statistics.median(p)} (range {min(p)}-{max(p)}), consume {statistics.median(c)} (range {min(c)}-{max(c)})')" "${ratios_p[*]}" "${ratios_c[*]}"
