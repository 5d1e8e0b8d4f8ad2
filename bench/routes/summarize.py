#!/usr/bin/python3
"""Medians of bench_routes.py results (JSON lines): throughput, errors, and CPU microseconds
per served request for each process on the path, per label/mode/route.

  bench/routes/summarize.py bench/routes/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict

PROCS = ["fps-squid", "stunnel-client", "stunnel-server", "cloud-squid", "customer-squid", "nginx"]


def main(path):
    groups = defaultdict(list)
    order = []
    for line in open(path):
        r = json.loads(line)
        key = (r["label"], r["mode"], r["route"])
        if key not in groups:
            order.append(key)
        groups[key].append(r)
    direct = {}
    for key in order:
        if key[2] == "direct":
            direct[(key[0], key[1])] = statistics.median(r["rps"] for r in groups[key])
    print("| label | mode | route | median 2xx req/s | % of direct | runs | errors | timeouts | non-2xx |"
          " p99 ms | " + " | ".join(f"{p} us/req" for p in PROCS) + " |")
    print("|" + "---|" * (10 + len(PROCS)))
    for key in order:
        rs = groups[key]
        med = statistics.median(r["rps"] for r in rs)
        d = direct.get((key[0], key[1]))
        cpu = []
        for p in PROCS:
            v = [r["cpu_s"][p] * 1e6 / max(1, r["requests"]) for r in rs if p in r.get("cpu_s", {})]
            cpu.append(f"{statistics.median(v):.0f}" if v and statistics.median(v) >= 1 else "-")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {med:.0f} | {100 * med / d:.0f}% | "
              f"{', '.join('%.0f' % r['rps'] for r in rs)} | {sum(r['errors_total'] for r in rs)} | "
              f"{sum(r['errors'].get('timeout', 0) for r in rs)} | {sum(r.get('non_2xx', 0) for r in rs)} | "
              f"{statistics.median(r['p99_ms'] or 0 for r in rs):.0f} | " + " | ".join(cpu) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/routes/results.jsonl")
