#!/usr/bin/env python3
"""Median of per-iteration ratios (paired: the same iteration of each runtime, run back to back)
from husk-bench's raw samples: python3 hack/bench/paired.py out/results.csv [A [B]]
(default A=husk, B=crun). Prints, per benchmark, n, the median of A/B over the iterations and
the median of A/B of CPU time."""
import csv
import statistics
import sys
from collections import defaultdict

path = sys.argv[1]
a = sys.argv[2] if len(sys.argv) > 2 else "husk"
b = sys.argv[3] if len(sys.argv) > 3 else "crun"
rows = defaultdict(dict)
for r in csv.DictReader(open(path)):
    if r["benchmark"] == "floor":
        continue
    rows[(r["benchmark"], int(r["sample"]))][r["runtime"]] = (float(r["wall_ms"]), float(r["cpu_ms"] or "nan"))
order = []
for (bench, _) in rows:
    if bench not in order:
        order.append(bench)
print(f"| benchmark | n pairs | median of {a}/{b} (wall) | median of {a}/{b} (CPU) |")
print("|---|---:|---:|---:|")
for bench in order:
    w, c = [], []
    for (bn, _), v in rows.items():
        if bn == bench and a in v and b in v and v[b][0] > 0:
            w.append(v[a][0] / v[b][0])
            if v[b][1] > 0:
                c.append(v[a][1] / v[b][1])
    if w:
        cpu = f"{statistics.median(c):.2f}" if c else "–"
        print(f"| {bench} | {len(w)} | **{statistics.median(w):.2f}** | {cpu} |")
