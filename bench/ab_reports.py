#!/usr/bin/python3
"""The failures and traffic reports on vs off, in one run (docs/operations.md, "Failures and
traffic"): the price of the data source.

Two FPS instances side by side, the same build: one as shipped (squid.conf's second access log,
detail.log, for failed answers, CONNECT tunnels and requests with a body; the controller reading
access.log and detail.log; fps-auth writing refusal reasons), one with FPS_REPORTS=off (none of
it). Each takes the same closed-loop load in turn (interleaved, the box drifts between runs):

  get      1000 agents, GET 1 KiB from a whitelisted origin (every answer 200): the target,
           on <= 3% off (the issue's bound)
  connect  200 agents, CONNECT tunnels of 10 GETs each (each tunnel one detail line)
  denied   1000 agents, GETs to a host not whitelisted (every answer a 403: each one a detail line)

  bench/ab_reports.py [--agents N] [--duration S] [--runs N] [--kinds get,connect,denied]

Prints answers per second for each run and the medians, and on/off per kind.
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


def load(env, f, kind, a):
    args = [str(HERE.parent / "build/bench/loadgen"), "--proxy", f"127.0.0.1:{f.port}", "--apikey", services.APIKEY,
            "--duration", str(a.duration), "--warmup", "1", "--threads", "1"]
    if kind == "connect":
        args += ["--mode", "connect", "--agents", str(min(a.agents, 200)), "--requests-per-tunnel", "10",
                 "--insecure", "--url", f"https://{services.ORIGIN}:{env.https_port}/1k"]
    else:
        host = services.ORIGIN if kind == "get" else services.DENIED
        args += ["--agents", str(a.agents), "--url", f"http://{host}:{env.http_port}/1k"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    return r["requests_per_s"], r["status"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kinds", default="get,connect,denied")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    env = services.Env()
    try:
        env.start_nginx()
        on = env.start_fps(name="reports-on", routes=False)
        off = env.start_fps(name="reports-off", routes=False, extra_env={"FPS_REPORTS": "off"})
        assert "detail.log" in on.active_conf() and "detail.log" not in off.active_conf()
        rates = {(v, k): [] for v in ("on", "off") for k in kinds}
        for i in range(a.runs):
            for k in kinds:
                # Alternate which variant goes first: the second of a pair meets a warmer box.
                order = (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on))
                for v, f in order:
                    rate, status = load(env, f, k, a)
                    rates[(v, k)].append(rate)
                    print(f"reports {v:3} {k:7} {rate:9.0f} answers/s  status {status}", flush=True)
        result = {}
        for k in kinds:
            m_on, m_off = (statistics.median(rates[(v, k)]) for v in ("on", "off"))
            result[k] = {"on": m_on, "off": m_off, "ratio": m_on / m_off, "runs": a.runs}
            print(f"{k:7}: reports on {m_on:.0f}, off {m_off:.0f} answers/s (median of {a.runs}): "
                  f"on/off = {m_on / m_off:.3f}", flush=True)
        print(json.dumps(result))
    finally:
        env.close()


if __name__ == "__main__":
    main()
