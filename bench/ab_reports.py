#!/usr/bin/python3
"""The failures and traffic reports on vs off, in one run (docs/operations.md, "Failures and
traffic"): the price of the data source.

The pairs of lib/reportsprice.py (`make bench` runs them for GET 1 KiB as (15)), with more
kinds of load:

  get1k    1000 agents, GET 1 KiB from a whitelisted origin (every answer 200): the issue's
           bound is <= 3% of throughput against reports off
  connect  CONNECT tunnels recycled at --tunnel-rate (each tunnel one detail line)
  denied   GETs to a host not whitelisted (every answer a 403, each one a detail line)

Two figures per run: answers per second, and the proxy's CPU per answer (its whole process
tree: Squid, helpers, the controller reading the logs; from /proc), which other jobs on a shared
box disturb far less than throughput.

With --callgrind, also Squid's instructions per answer (GET 1 KiB) on and off, counted by
callgrind (lib/reportsprice.instructions): a figure the box's drift does not move.

  bench/ab_reports.py [--agents N] [--duration S] [--runs N] [--kinds get1k,connect,denied] [--callgrind]
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import reportsprice, services  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--runs", type=int, default=5, help="pairs (on then off, or off then on) per kind")
    ap.add_argument("--tunnel-rate", type=float, default=200)
    ap.add_argument("--kinds", default="get1k,connect,denied")
    ap.add_argument("--callgrind", action="store_true", help="also count Squid's instructions per answer")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    env = services.Env()
    try:
        env.start_nginx()
        fps = reportsprice.start(env)
        res = reportsprice.measure(env, fps, kinds, a.runs, a.agents, a.duration, a.warmup, a.tunnel_rate)
        for f in fps.values():
            f.close()
        for k in kinds:
            print(reportsprice.summary_line(k, res[k]), flush=True)
        if a.callgrind:
            res["instructions"] = reportsprice.instructions(env)
            print(reportsprice.instructions_line(res["instructions"]), flush=True)
        print(json.dumps({k: res[k] for k in kinds + (["instructions"] if a.callgrind else [])}))
    finally:
        env.close()


if __name__ == "__main__":
    main()
