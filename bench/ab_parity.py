#!/usr/bin/python3
"""Parity with the hand-written Squid, four ways in one run, rounds interleaved: (2) the
hand-written Squid, (2b) the same config with FPS's 8 listening sockets, (4) FPS live and
(4b) FPS with `apply: reconfigure` (a fresh FPS per run, the bench's routes configured).
Medians of answers/s and of the proxy's CPU per answer (its process tree, not nginx).
`make bench` runs the same four targets; this is the short A/B used to bisect.

  bench/ab_parity.py [--agents 1000] [--runs 3] [--workload get1k|connect] [--duration 6]
"""
import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import loadrun, services  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workload", default="get1k")
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=2)
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        env.start_customer_squid()
        env.start_cloud()
        env.start_hand_squid(a.agents)
        hand = env.hand_port
        env.start_hand_squid(a.agents, name="hand8", listen_sockets=8)
        hand8 = env.hand_port
        res = {}
        for run in range(a.runs):
            for label in ("hand-written", "hand-written-8", "fps-live", "fps-reconfigure"):
                f = None
                if label.startswith("hand"):
                    port = hand if label == "hand-written" else hand8
                else:
                    f = env.start_fps(f"parity-{label}-{run}", apply=label.split("-")[1], routes=True)
                    port = f.port
                try:
                    r = loadrun.run_load(env, f"{label}-{run}", port, services.ORIGIN, a.workload, a.agents,
                                         a.duration, a.warmup)
                finally:
                    if f is not None:
                        f.close()
                res.setdefault(label, []).append(r)
        print(f"\n{a.workload}, {a.agents} agents, {a.duration:g} s x {a.runs} rounds (interleaved)")
        for label, rs in res.items():
            each = ", ".join(f"{r['rps']:,.0f}" for r in rs)
            print(f"{label:>16}: answers/s {statistics.median(r['rps'] for r in rs):9,.0f} (each {each})  proxy CPU "
                  f"{statistics.median(loadrun.proxy_us_per_answer(r) for r in rs):6.1f} us/answer  failed "
                  f"{[r['errors_total'] for r in rs]}  other jobs CPU s {[r['other_cpu_s'] for r in rs]}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
