#!/usr/bin/python3
"""Does a proxy get slower at CONNECT after GET traffic? Fresh vs aged, FPS and the hand-written
Squid, one run: CONNECT+TLS (--duration s), then --age-workloads (GET 1 KiB) for --age s, then CONNECT again; the
proxy's CPU per answer (its process tree, not nginx) beside the answers/s. `make bench` runs
CONNECT on an FPS that has served the GET groups first, ab_variants.py on a fresh one.

  bench/ab_aged.py [--age 30] [--duration 6] [--warmup 2] [--agents 1000] [--only fps]
                   [--age-workloads get1k,get1k:tunnel,get1k:upstream,get100k]

--age-workloads: what ages the proxy, in turn, --age s each (WORKLOAD[:ROUTE], route one of
origin (direct), tunnel, upstream; the tunnel and upstream routes exist on FPS only).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import loadrun, services  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--age", type=float, default=30)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--only", choices=("hand-written", "fps"), help="one proxy only")
    ap.add_argument("--age-workloads", default="get1k")
    a = ap.parse_args()
    hosts = {"origin": services.ORIGIN, "tunnel": services.TUNNELED, "upstream": services.UPSTREAM}
    ages = [(w, hosts[r or "origin"]) for w, _, r in (x.partition(":") for x in a.age_workloads.split(","))]
    env = services.Env()
    try:
        env.start_nginx()
        env.start_customer_squid()
        env.start_cloud()
        env.start_hand_squid(a.agents)
        f = env.start_fps("aged", routes=True)
        rows = []
        for label, port in (("hand-written", env.hand_port), ("fps", f.port)):
            if a.only and label != a.only:
                continue
            fresh = loadrun.run_load(env, f"{label}-fresh", port, services.ORIGIN, "connect", a.agents, a.duration,
                                     a.warmup)
            for i, (wl, host) in enumerate(ages):
                if host != services.ORIGIN and label != "fps":
                    continue
                loadrun.run_load(env, f"{label}-age{i}", port, host, wl, a.agents, a.age, 0)
            aged = loadrun.run_load(env, f"{label}-aged", port, services.ORIGIN, "connect", a.agents, a.duration,
                                    a.warmup)
            rows.append((label, fresh, aged))
        print(f"\nCONNECT+TLS, {a.agents} agents, {a.duration:g} s, before and after {a.age:g} s of each of "
              f"{a.age_workloads}")
        for label, fr, ag in rows:
            print(f"{label:>14}: fresh {fr['rps']:9,.0f}/s {loadrun.proxy_us_per_answer(fr):6.1f} us/answer (other {fr['other_cpu_s']}) "
                  f"aged {ag['rps']:9,.0f}/s {loadrun.proxy_us_per_answer(ag):6.1f} us/answer (other {ag['other_cpu_s']}) "
                  f"aged/fresh {ag['rps'] / fr['rps']:.3f}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
