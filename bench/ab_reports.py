#!/usr/bin/python3
"""The failures and traffic reports on vs off, in one run (docs/operations.md, "Failures and
traffic"): the price of the data source.

Two FPS instances side by side, the same build: one as shipped (squid.conf's second access log,
detail.log, for failed answers, CONNECT tunnels and requests with a body; the controller reading
access.log and detail.log; fps-auth writing refusal reasons), one with FPS_REPORTS=off (none of
it). Each takes the same closed-loop load in turn, interleaved and alternating which goes first
(the box drifts between runs):

  get1k    1000 agents, GET 1 KiB from a whitelisted origin (every answer 200): the issue's
           bound is <= 3% of throughput against reports off
  connect  CONNECT tunnels recycled at --tunnel-rate (each tunnel one detail line)
  denied   GETs to a host not whitelisted (every answer a 403, each one a detail line)

Two figures per run: answers per second, and the proxy's CPU per answer (its whole process
tree: Squid, helpers, the controller reading the logs; from /proc), which other jobs on a shared
box disturb far less than throughput.

  bench/ab_reports.py [--agents N] [--duration S] [--runs N] [--kinds get1k,connect,denied]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import loadrun, services  # noqa: E402


def cpu_us(rec, role):
    cpu = sum(v for k, v in rec["cpu_s"].items() if k.startswith(role))
    return cpu / max(1, rec["rps"] * rec["elapsed_s"]) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tunnel-rate", type=float, default=200)
    ap.add_argument("--kinds", default="get1k,connect,denied")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    env = services.Env()
    try:
        env.start_nginx()
        on = env.start_fps(name="reports-on", routes=False, role="fps:")
        off = env.start_fps(name="reports-off", routes=False, extra_env={"FPS_REPORTS": "off"}, role="fpsoff:")
        assert "detail.log" in on.active_conf() and "detail.log" not in off.active_conf()
        variants = {"on": (on, "fps:"), "off": (off, "fpsoff:")}
        res = {(v, k): [] for v in variants for k in kinds}
        for i in range(a.runs):
            for k in kinds:
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for v in order:
                    f, role = variants[v]
                    host = services.DENIED if k == "denied" else services.ORIGIN
                    r = loadrun.run_load(env, f"reports-{v}-{k}-{i}", f.port, host,
                                         "get1k" if k == "denied" else k, a.agents, a.duration, a.warmup,
                                         tunnel_rate=a.tunnel_rate)
                    res[(v, k)].append(r)
                    print(f"reports {v:3} {k:7} {r['rps']:9.0f} answers/s  {cpu_us(r, role):7.1f} us CPU/answer  "
                          f"status {r['status']}  other jobs {r['other_cpu_s']} s", flush=True)
        out = {}
        for k in kinds:
            med = {v: (statistics.median(r["rps"] for r in res[(v, k)]),
                       statistics.median(cpu_us(r, variants[v][1]) for r in res[(v, k)])) for v in variants}
            out[k] = {"rps_on": med["on"][0], "rps_off": med["off"][0], "rps_ratio": med["on"][0] / med["off"][0],
                      "cpu_us_on": med["on"][1], "cpu_us_off": med["off"][1],
                      "cpu_ratio": med["on"][1] / med["off"][1], "runs": a.runs}
            print(f"{k:7}: answers/s on {med['on'][0]:.0f} off {med['off'][0]:.0f} (on/off {out[k]['rps_ratio']:.3f}); "
                  f"CPU/answer on {med['on'][1]:.1f} off {med['off'][1]:.1f} us (on/off {out[k]['cpu_ratio']:.3f}), "
                  f"medians of {a.runs}", flush=True)
        print(json.dumps(out))
    finally:
        env.close()


if __name__ == "__main__":
    main()
