#!/usr/bin/env python3
"""Summarises scripts/bench-broker.sh's JSON lines as the tables BENCHMARKS.md quotes.

Each figure is the median over runs, with the range [min-max] beside it. Ratios are
computed inside each run first (produce and dd measured minutes apart on the same disk
and under the same background load), then the median of those per-run ratios is shown.

Usage: python3 scripts/bench-summary.py RESULTS.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict

TARGET_RECORDS_PER_S = 1_000_000


def fmt_range(values, digits=0):
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} [{min(values):,.{digits}f}-{max(values):,.{digits}f}]"


def main(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    runs = sorted({r["run"] for r in rows})
    dd = {r["run"]: r for r in rows if r["kind"] == "dd"}
    by = defaultdict(dict)  # (row, kind) -> run -> record
    order = []
    for r in rows:
        if r["kind"] in ("produce", "consume"):
            by[(r["row"], r["kind"])][r["run"]] = r
            if r["row"] not in order:
                order.append(r["row"])

    print(f"runs: {len(runs)}; figures are median [min-max] over runs\n")
    print("| disk (dd) | MB/s |")
    print("|---|---|")
    print(f"| buffered, 1 MiB writes, one fdatasync | {fmt_range([d['buffered_mb_per_s'] for d in dd.values()], 1)} |")
    print(f"| O_DSYNC, 256 KiB writes | {fmt_range([d['dsync_mb_per_s'] for d in dd.values()], 1)} |")
    print()
    print("| row | produce records/s | produce MB/s | p50 ms | p99 ms | consume records/s | consume MB/s | consume/produce | broker CPU s | client CPU s | produce wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in order:
        p = by[(name, "produce")]
        c = by[(name, "consume")]
        common = sorted(set(p) & set(c))
        ratio = [c[r]["records_per_s"] / p[r]["records_per_s"] for r in common]
        print(
            f"| {name} | {fmt_range([x['records_per_s'] for x in p.values()])}"
            f" | {fmt_range([x['mb_per_s'] for x in p.values()], 1)}"
            f" | {fmt_range([x['p50_ms'] for x in p.values()], 1)}"
            f" | {fmt_range([x['p99_ms'] for x in p.values()], 1)}"
            f" | {fmt_range([x['records_per_s'] for x in c.values()])}"
            f" | {fmt_range([x['mb_per_s'] for x in c.values()], 1)}"
            f" | {fmt_range(ratio, 2) if ratio else '-'}"
            f" | {fmt_range([x['broker_cpu_s'] for x in p.values()], 1)}"
            f" | {fmt_range([x['client_cpu_s'] for x in p.values()], 1)}"
            f" | {fmt_range([x['seconds'] for x in p.values()], 1)} |"
        )
    print()
    print("| ratio (per run, then median) | value | target |")
    print("|---|---|---|")
    for name, dd_key in (
        ("1KiB-p1-none", "buffered_mb_per_s"),
        ("1KiB-p8-none", "buffered_mb_per_s"),
        ("1KiB-p1-batch", "dsync_mb_per_s"),
        ("1KiB-p8-batch", "dsync_mb_per_s"),
    ):
        p = by.get((name, "produce"), {})
        ratio = [p[r]["mb_per_s"] / dd[r][dd_key] for r in p if r in dd]
        if ratio:
            label = "buffered dd" if dd_key.startswith("buffered") else "O_DSYNC dd"
            target = ">= 0.5" if dd_key.startswith("buffered") else "(context)"
            print(f"| {name} produce MB/s / {label} MB/s | {fmt_range(ratio, 3)} | {target} |")
    for name in ("100B-p1-none", "100B-p8-none"):
        p = by.get((name, "produce"), {})
        if p:
            ratio = [x["records_per_s"] / TARGET_RECORDS_PER_S for x in p.values()]
            print(f"| {name} produce records/s / 1,000,000 | {fmt_range(ratio, 3)} | >= 1 |")
    for name in order:
        p, c = by[(name, "produce")], by[(name, "consume")]
        ratio = [c[r]["records_per_s"] / p[r]["records_per_s"] for r in p if r in c]
        if ratio:
            print(f"| {name} consume / produce records/s | {fmt_range(ratio, 2)} | >= 1 |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/bench-summary.py RESULTS.jsonl")
    main(sys.argv[1])
