#!/usr/bin/python3
"""Does a proxy get slower at CONNECT after GET traffic? Fresh vs aged, FPS and the hand-written
Squid, one run: CONNECT+TLS (--duration s), then GET 1 KiB for --age s, then CONNECT again; the
proxy's CPU per answer (its process tree, not nginx) beside the answers/s. `make bench` runs
CONNECT on an FPS that has served the GET groups first, ab_variants.py on a fresh one.

  bench/ab_aged.py [--age 30] [--duration 6] [--warmup 2] [--agents 1000]
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import loadrun, services  # noqa: E402


def us_per_answer(rec):
    cpu = sum(v for k, v in rec["cpu_s"].items() if not k.startswith(("nginx", "cloud:", "cust:")))
    return cpu / max(1, rec["rps"] * rec["elapsed_s"]) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--age", type=float, default=30)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--agents", type=int, default=1000)
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        env.start_customer_squid()
        env.start_cloud()
        env.start_hand_squid(a.agents)
        f = env.start_fps("aged", routes=True)
        rows = []
        for label, port in (("hand-written", env.hand_port), ("fps", f.port)):
            fresh = loadrun.run_load(env, f"{label}-fresh", port, services.ORIGIN, "connect", a.agents, a.duration,
                                     a.warmup)
            loadrun.run_load(env, f"{label}-age", port, services.ORIGIN, "get1k", a.agents, a.age, 0)
            aged = loadrun.run_load(env, f"{label}-aged", port, services.ORIGIN, "connect", a.agents, a.duration,
                                    a.warmup)
            rows.append((label, fresh, aged))
        print(f"\nCONNECT+TLS, {a.agents} agents, {a.duration:g} s, before and after {a.age:g} s of GET 1 KiB")
        for label, fr, ag in rows:
            print(f"{label:>14}: fresh {fr['rps']:9,.0f}/s {us_per_answer(fr):6.1f} us/answer (other {fr['other_cpu_s']}) "
                  f"aged {ag['rps']:9,.0f}/s {us_per_answer(ag):6.1f} us/answer (other {ag['other_cpu_s']}) "
                  f"aged/fresh {ag['rps'] / fr['rps']:.3f}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
