#!/usr/bin/env bash
# Issue 8's cardinality figure: the size and time of one /metrics scrape of a release-mode
# broker leading 1,000 partitions, with one consumer group committed on all of them.
#
# Usage: scripts/bench-scrape.sh [PARTITIONS]   (default 1000)
#   SCRAPES=N   scrapes to time (default 11; the median is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
partitions=${1:-1000}
scrapes=${SCRAPES:-11}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
ip=127.0.0.52
work=$(mktemp -d /tmp/meridian-scrape.XXXXXX)
broker_pid=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
grpc="$ip:$(port)"
single_broker_topology bench "$grpc" >"$work/topology.toml"
metrics=$(sed -n 's/^metrics = "\([0-9][^"]*\)"/\1/p' "$work/topology.toml")
"$bin" broker --topology "$work/topology.toml" --node bench/b1 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 1 100); do
  if "$bin" topic list --bootstrap "$grpc" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$bin" topic create wide --partitions "$partitions" --bootstrap "$grpc" >/dev/null
# One committed offset per partition for group `readers`: read one record from each.
seq 1 "$partitions" | "$bin" produce wide --bootstrap "$grpc" >/dev/null
"$bin" consume wide --group readers --from-beginning --exit-at-end --bootstrap "$grpc" >/dev/null
for _ in $(seq 1 100); do
  led=$(curl -s "http://$metrics/metrics" | sed -n 's/^meridian_broker_leader_partitions \(.*\)/\1/p')
  [[ "$led" == "$partitions" ]] && break
  sleep 0.2
done
curl -s "http://$metrics/metrics" -o "$work/scrape.txt"
echo "partitions led: $led; group series: $(grep -c '^meridian_group_lag_records' "$work/scrape.txt"); scrape size: $(wc -c <"$work/scrape.txt") bytes, $(wc -l <"$work/scrape.txt") lines"
times=()
for _ in $(seq 1 "$scrapes"); do
  times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$metrics/metrics")")
done
python3 -c "import statistics,sys; t=sorted(float(x)*1000 for x in sys.argv[1:]); print(f'scrape time over {len(t)} scrapes: median {statistics.median(t):.1f} ms, range {t[0]:.1f}-{t[-1]:.1f} ms')" "${times[@]}"
