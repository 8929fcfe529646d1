#!/usr/bin/env bash
# Issue 4's figures: leader failover time after kill -9 (N trials) and acks=all rf=3
# throughput as a ratio of rf=1, on one release-mode region of three brokers.
# Usage: scripts/bench-failover.sh [TRIALS] [RECORDS] [PAIRS]   (TRIALS=0 skips failover)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-10}
records=${2:-300000}
pairs=${3:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/meridian"
work=$(mktemp -d /tmp/meridian-failover.XXXXXX)
declare -a pids
cleanup() { for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c "import socket;s=socket.socket();s.bind(('$1',0));print(s.getsockname()[1])"; }
{
  printf '[deployment]\nname = "failover"\n[tls]\ndir = "tls"\n[tls.listeners]\nclient = "off"\ninter_broker = "off"\ninter_region = "required"\nkafka = "off"\nmetrics = "off"\n'
  printf '[gossip]\nkeyring = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]\n'
  printf '[topic_defaults]\npartitions = 1\nreplication_factor = 3\nmin_insync_replicas = 2\nflush = "none"\n'
  printf '[[regions]]\nname = "r"\n'
} > "$work/topology.toml"
declare -a grpc
for i in 1 2 3; do
  ip=127.0.77.$i
  grpc[$i]="$ip:$(port $ip)"
  printf '[[regions.brokers]]\nname = "b%s"\nid = %s\ngrpc = "%s"\ngossip = "%s:%s"\nmetrics = "%s:%s"\ndata_dir = "data/b%s"\n' \
    "$i" "$i" "${grpc[$i]}" "$ip" "$(port $ip)" "$ip" "$(port $ip)" "$i" >> "$work/topology.toml"
done
all="${grpc[1]},${grpc[2]},${grpc[3]}"
start() { "$bin" broker --topology "$work/topology.toml" --node "r/b$1" 2>>"$work/b$1.log" & pids[$1]=$!; }
for i in 1 2 3; do start $i; done
until "$bin" topic create probe --partitions 1 --bootstrap "$all" >/dev/null 2>&1; do sleep 0.2; done

leader_of() { # prints the leader id of $1-0 (0 when none)
  "$bin" topic describe "$1" --bootstrap "$all" 2>/dev/null | awk '$1=="0"{print $2}'
}
leader_of_via() { "$bin" topic describe "$1" --bootstrap "$2" 2>/dev/null | awk '$1=="0"{print $2}'; }
isr_of() { "$bin" topic describe "$1" --bootstrap "$all" 2>/dev/null | awk '$1=="0"{print $6}'; }

echo "== failover after kill -9 of the partition leader (session_timeout default)"
times=()
for t in $(seq 1 "$trials"); do
  [ "$trials" -gt 0 ] || break
  "$bin" topic create "f$t" --partitions 1 --bootstrap "$all" >/dev/null
  until [ "$(isr_of "f$t" | tr ',' '\n' | wc -l)" -eq 3 ]; do sleep 0.2; done
  old=$(leader_of "f$t")
  t0=$(date +%s.%N)
  kill -9 "${pids[$old]}"; [ -n "${KEEP:-}" ] && echo "killed $old at $(date -u +%T.%N)"
  # Failed over = a new leader accepted an acks=all write (the bootstrap list leads
  # with a live broker, as a client that has already seen the death would).
  live=$(for i in 1 2 3; do if [ "$i" != "$old" ]; then printf '%s,' "${grpc[$i]}"; fi; done)
  live=${live%,}
  until new=$(leader_of_via "f$t" "$live") && [ -n "$new" ] && [ "$new" != "$old" ] && [ "$new" != 0 ]; do sleep 0.02; done
  tl=$(date +%s.%N)
  until echo x | "$bin" produce "f$t" --acks all --bootstrap "$live" >/dev/null 2>&1; do sleep 0.02; done
  t1=$(date +%s.%N)
  dt=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  dl=$(python3 -c "print(f'{$tl-$t0:.2f}')")
  times+=("$dt")
  echo "trial $t: leader $old killed, broker $new in metadata after ${dl}s, took an acks=all write after ${dt}s"
  start "$old"
  until [ "$(isr_of "f$t" | tr ',' '\n' | wc -l)" -eq 3 ]; do sleep 0.2; done
done
[ "$trials" -gt 0 ] && python3 - "${times[@]}" <<'PY'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"failover: median {statistics.median(v):.2f}s, max {max(v):.2f}s, min {min(v):.2f}s over {len(v)} trials")
PY

echo "== acks=all rf=3 vs rf=1 (1-KiB records, 1 partition, flush none)"
"$bin" topic create rf1 --partitions 1 --replication-factor 1 --config min.insync.replicas=1 --bootstrap "$all" >/dev/null
"$bin" topic create rf3 --partitions 1 --replication-factor 3 --bootstrap "$all" >/dev/null
ratios=()
rate() { awk '{for(i=1;i<=NF;i++) if($i=="records/s,") print $(i-1)}'; }
for run in $(seq 1 "$pairs"); do
  one=$("$bin" bench produce --topic rf1 --records "$records" --record-size 1024 --acks 1 --bootstrap "$all" | tail -1)
  three=$("$bin" bench produce --topic rf3 --records "$records" --record-size 1024 --acks all --bootstrap "$all" | tail -1)
  r1=$(echo "$one" | rate); r3=$(echo "$three" | rate)
  ratio=$(python3 -c "print(f'{$r3/$r1:.2f}')")
  ratios+=("$ratio")
  echo "pair $run: rf=1 acks=1 $r1 records/s, rf=3 acks=all $r3 records/s, ratio $ratio"
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
v = sorted(float(x) for x in sys.argv[1:])
print(f"rf=3 acks=all / rf=1 acks=1: median {statistics.median(v):.2f}, min {min(v):.2f}, max {max(v):.2f} over {len(v)} pairs")
PY
