#!/usr/bin/python3
"""A/B helper for squid.conf changes: FPS direct route, 1000 agents, 3 runs of 5 s.

Edit squid-templates/ (or rebuild with a render.c change), run this with a label, revert,
run it again; interleave the variants, because this 2-core box drifts between runs:

  bench/ab_fps_direct.py LABEL [--agents N] [--duration S] [--runs N]

It prints the 2xx req/s of each run and their median. Used for the access-log format
decision recorded in squid-templates/squid.conf.tmpl.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import services  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("label")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        f = env.start_fps(name="ab", routes=False)
        rates = []
        for _ in range(a.runs):
            out = subprocess.run([str(HERE.parent / "build/bench/loadgen"), "--proxy", f"127.0.0.1:{f.port}",
                                  "--agents", str(a.agents), "--apikey", services.APIKEY, "--url",
                                  f"http://{services.ORIGIN}:{env.http_port}/1k", "--duration", str(a.duration),
                                  "--warmup", "1", "--threads", "1"], capture_output=True, text=True, check=True)
            rates.append(json.loads(out.stdout)["requests_per_s"])
        print(a.label, [round(r) for r in rates], "median", round(statistics.median(rates)))
    finally:
        env.close()


if __name__ == "__main__":
    main()
