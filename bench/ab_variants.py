#!/usr/bin/python3
"""A/B of squid.conf variants in one run: FPS (direct route) with the template as it is and
with lines added or removed, optionally beside the hand-written Squid; runs interleaved, so
drift on this shared 2-core box hits every variant alike; medians of 2xx req/s and failures.

  bench/ab_variants.py [--workload get1k|connect|mix|get1k-noauth] [--runs N] [--duration S]
                       [--variant 'LABEL:-REGEX' | 'LABEL:+LINE' ...] [--hand] [--agents N]

A variant is a label and edits separated by ';;': `-REGEX` drops the template lines matching
it, `+LINE` appends a line after `pipeline_prefetch`. `base` (the template) always runs.
`--hand-variant 'LABEL:EDITS'` does the same to the hand-written config (needs --hand; `+LINE`
goes after its `http_port`, `{PORT}` in a line is its port), e.g. FPS's 8 listening sockets:
--hand-variant 'hand-8ports:-^http_port;;+http_port 127.0.0.1:{PORT} worker-queues' (repeat +).
Example: --variant 'keepalive:-^persistent_connection_after_error' --workload get1k-noauth
(get1k-noauth: loadgen sends no credentials, so every answer is a 407: the worst case for
a setting that closes after an error answer).
"""
import argparse
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import loadrun, services  # noqa: E402
from lib.common import ROOT, log  # noqa: E402


def edit_lines(lines, edits, label, anchor):
    for e in [x for x in edits.split(";;") if x]:
        if e.startswith("-"):
            rx = re.compile(e[1:])
            n = len(lines)
            lines = [ln for ln in lines if not rx.search(ln)]
            if len(lines) == n:
                sys.exit(f"variant {label}: nothing matches {e[1:]!r}")
        elif e.startswith("+"):
            i = next((i for i, ln in enumerate(lines) if ln.startswith(anchor)), None)
            if i is None:  # the anchor itself was dropped: insert at the top
                i = -1
            lines.insert(i + 1, e[1:])
        else:
            sys.exit(f"variant {label}: an edit starts with - or +: {e!r}")
    return lines


def make_variant(d, spec):
    label, _, edits = spec.partition(":")
    tdir = d / f"templates-{label}"
    shutil.copytree(ROOT / "squid-templates", tdir)
    conf = tdir / "squid.conf.tmpl"
    lines = edit_lines(conf.read_text().splitlines(), edits, label, "pipeline_prefetch")
    conf.write_text("\n".join(lines) + "\n")
    return label, tdir


def hand_edit(spec):
    label, _, edits = spec.partition(":")
    return label, lambda text, port: "\n".join(
        edit_lines(text.splitlines(), edits, label, "http_port")).replace("{PORT}", str(port)) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--workload", default="get1k")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hand", action="store_true", help="also the hand-written Squid")
    ap.add_argument("--hand-variant", action="append", default=[])
    ap.add_argument("--routes", action="store_true",
                    help="FPS with the bench's tunnel and upstream routes (as in make bench), cloud side and "
                         "customer proxy running")
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        if a.routes:
            env.start_customer_squid()
            env.start_cloud()
        variants = [("base", None)] + [make_variant(env.dir, v) for v in a.variant]
        targets = {}
        if a.hand:
            env.start_hand_squid(a.agents)
            targets["hand-written"] = env.hand_port
            for i, spec in enumerate(a.hand_variant):
                label, fn = hand_edit(spec)
                env.start_hand_squid(a.agents, name=f"hand-v{i}", edit=fn)
                targets[label] = env.hand_port
        wl = "get1k" if a.workload == "get1k-noauth" else a.workload
        results = {}
        for run in range(a.runs):
            order = list(targets.items()) + [(label, tdir) for label, tdir in variants]
            for label, what in order:
                f = None
                if label in targets:
                    port = what
                else:  # one FPS at a time: the others would share the CPU
                    f = env.start_fps(name=f"ab-{label}", routes=a.routes, templates=what)
                    port = f.port
                    if run == 0:
                        ls = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
                        log(f"{label}: {len(ls.stdout.splitlines())} listening socket(s) on port {port}")
                try:
                    rec = loadrun.run_load(env, f"{label}-{run}", port, services.ORIGIN, wl, a.agents, a.duration,
                                           a.warmup, noauth=a.workload == "get1k-noauth")
                finally:
                    if f is not None:
                        f.close()
                results.setdefault(label, []).append(rec)
        print(f"\n{a.workload}, {a.agents} agents, {a.duration:g} s x {a.runs} runs (interleaved); the box is shared")
        base = statistics.median(r["rps"] for r in results["base"])
        hand = statistics.median(r["rps"] for r in results["hand-written"]) if a.hand else None
        # same-run ratios per round (each round runs every target once, interleaved)
        def ratio_vs(label, ref):
            return statistics.median(x["rps"] / y["rps"] for x, y in zip(results[label], results[ref]))
        for label, rs in results.items():
            rps = statistics.median(r["rps"] for r in rs)
            ok = statistics.median(r["ok_rps"] for r in rs)
            us = statistics.median(loadrun.proxy_us_per_answer(r) for r in rs)
            each = ", ".join(f"{r['rps']:,.0f}" for r in rs)
            print(f"{label:>16}: answers/s {rps:9,.0f} (each {each}) "
                  f"2xx/s {ok:9,.0f}  vs base {rps / base:.3f} (per-round median {ratio_vs(label, 'base'):.3f})"
                  + (f"  vs hand {rps / hand:.3f} (per-round {ratio_vs(label, 'hand-written'):.3f})" if hand else "")
                  + f"  proxy CPU {us:.1f} us/answer  p99 {statistics.median(r['p99_ms'] for r in rs):.0f} ms "
                  f"max {max(r['max_ms'] for r in rs):.0f} ms  failed {sum(r['errors_total'] for r in rs):,} "
                  f"{[r['errors'] for r in rs]} status {[r['status'] for r in rs]}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
