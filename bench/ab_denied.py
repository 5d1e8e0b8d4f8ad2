#!/usr/bin/python3
"""The denied-destination report on vs off, in one run (docs/operations.md, denied report).

Two FPS instances side by side, the same build: one as shipped (Squid passes %DST %PORT %un,
fps-acl counts denials into run/denied), one with FPS_DENIED_REPORT=off (the %DST-only helper
line of before). Each takes 1000 agents in turn (interleaved, the box drifts between runs):
GETs to a whitelisted origin (every answer 200) and GETs to a host that is not whitelisted
(every answer Squid's 403, each one counted by the report).

  bench/ab_denied.py [--agents N] [--duration S] [--runs N]

Prints answers per second (all statuses) for each run and the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import services  # noqa: E402


def load(env, f, host, a):
    out = subprocess.run([str(HERE.parent / "build/bench/loadgen"), "--proxy", f"127.0.0.1:{f.port}",
                          "--agents", str(a.agents), "--apikey", services.APIKEY, "--url",
                          f"http://{host}:{env.http_port}/1k", "--duration", str(a.duration),
                          "--warmup", "1", "--threads", "1"], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    return r["requests_per_s"], r["status"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        on = env.start_fps(name="report-on", routes=False)
        os.environ["FPS_DENIED_REPORT"] = "off"
        try:
            off = env.start_fps(name="report-off", routes=False)
        finally:
            del os.environ["FPS_DENIED_REPORT"]
        assert "--denied-dir" in on.active_conf() and "--denied-dir" not in off.active_conf()
        rates = {(v, t): [] for v in ("on", "off") for t in ("allowed", "denied")}
        for _ in range(a.runs):
            for t, host in (("allowed", services.ORIGIN), ("denied", services.DENIED)):
                for v, f in (("on", on), ("off", off)):
                    rate, status = load(env, f, host, a)
                    rates[(v, t)].append(rate)
                    print(f"report {v:3} {t:7} {rate:9.0f} answers/s  status {status}", flush=True)
        for t in ("allowed", "denied"):
            m_on, m_off = (statistics.median(rates[(v, t)]) for v in ("on", "off"))
            print(f"{t:7}: report on {m_on:.0f}, off {m_off:.0f} answers/s (median of {a.runs}): "
                  f"on/off = {m_on / m_off:.3f}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
