#!/usr/bin/env bash
# Issue 7's mirror throughput: a source region `a` and a target region `b`, one release-mode
# broker each (rf=1) on 127.0.0.60/.61, a mirror worker in b. Per run: `meridian bench produce`
# writes N records into a's `bench` topic (its records/s is the single-broker produce rate),
# then the mirror starts and the script samples b's `a.bench` end offsets every 0.2 s; the
# mirror rate is measured from the first mirrored record to the last (worker start-up and
# planning excluded). Prints one JSON line per run with both rates and their ratio.
#
# Usage: scripts/bench-mirror.sh [RECORDS] [RECORD_SIZE] [PARTITIONS]      RUNS=3 for more runs
#   DELAY_MS=50   the mirror crosses a delay proxy (scripts/delay_proxy.py, root) adding 50 ms
#                 each way to its connections to region a: a 100 ms round trip
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
records=${1:-1000000}
size=${2:-100}
partitions=${3:-4}
runs=${RUNS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p meridian
bin="$CARGO_TARGET_DIR/release/meridian"
pids=()
work=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

topology() { python3 scripts/two_regions.py bench-mirror 127.0.0.60 127.0.0.61 127.0.0.62 "$partitions" "^bench\$" none; }

wait_port() { for _ in $(seq 1 100); do (echo >/dev/tcp/"$1"/"$2") 2>/dev/null && return 0; sleep 0.1; done; echo "no listener on $1:$2" >&2; return 1; }

for run in $(seq 1 "$runs"); do
  work=$(mktemp -d)
  topology >"$work/topology.toml"
  python3 scripts/two_regions.py --certs "$bin" "$work/topology.toml"
  "$bin" broker --topology "$work/topology.toml" --node a/b1 >"$work/a.log" 2>&1 & pids+=($!)
  "$bin" broker --topology "$work/topology.toml" --node b/b1 >"$work/b.log" 2>&1 & pids+=($!)
  wait_port 127.0.0.60 9090; wait_port 127.0.0.61 9090; sleep 2
  produce=$("$bin" bench produce --json --topic bench --records "$records" --record-size "$size" \
    --partitions "$partitions" --bootstrap 127.0.0.60:9090)
  if [[ -n "${DELAY_MS:-}" ]]; then
    # The mirror (which connects from 127.0.0.62) reaches a's broker through a proxy that
    # adds DELAY_MS each way (round trip 2 x DELAY_MS); DELAY_MS=0 is the proxy alone.
    python3 scripts/delay_proxy.py --listen 127.0.0.63:9090 --to 127.0.0.60:9090 \
      --delay-ms "$DELAY_MS" --redirect-from 127.0.0.62 >"$work/proxy.log" 2>&1 & pids+=($!)
    sleep 1
  fi
  "$bin" mirror --topology "$work/topology.toml" --node b/m1 >"$work/m.log" 2>&1 & pids+=($!)
  mirror=$(python3 - "$bin" "$records" "$size" "$work/topology.toml" <<'PY'
import json, subprocess, sys, time
bin, records, size, topology = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def mirrored():
    out = subprocess.run([bin, "mirror", "status", "--topology", topology, "--format", "json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return 0
    try:
        flows = json.loads(out.stdout)
    except ValueError:
        return 0
    return sum(p["mirrored"] for p in flows if p["topic"] == "bench")
first = None
deadline = time.time() + 600
while time.time() < deadline:
    n = mirrored()
    now = time.time()
    if n > 0 and first is None:
        first = (now, n)
    if n >= records:
        if now - first[0] < 1.0:
            print(json.dumps({"error": "the copy took under a second between samples; use more records"}))
            sys.exit(0)
        secs = now - first[0]
        copied = n - first[1]
        print(json.dumps({"records_per_s": copied / secs, "mb_per_s": copied * size / secs / 1e6, "seconds": secs}))
        sys.exit(0)
    time.sleep(0.2)
print(json.dumps({"error": "mirror did not catch up", "mirrored": mirrored()}))
PY
)
  echo "mirror: $mirror" >&2
  python3 - "$run" "$produce" "$mirror" <<'PY'
import json, sys
run, p, m = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ratio = m.get("records_per_s", 0) / p["records_per_s"] if p.get("records_per_s") else None
print(json.dumps({"run": int(run), "produce_records_per_s": round(p["records_per_s"]), "produce_mb_per_s": round(p["mb_per_s"], 1),
                  "mirror_records_per_s": round(m.get("records_per_s", 0)), "mirror_mb_per_s": round(m.get("mb_per_s", 0), 1),
                  "ratio": round(ratio, 2) if ratio else None}))
PY
  cleanup
done
