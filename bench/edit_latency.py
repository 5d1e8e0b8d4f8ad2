#!/usr/bin/python3
"""Edit-to-enforced latency of FPS whitelist edits (benchmark scenario 8), also runnable alone.

For each (entries, apply mode): start FPS with a whitelist of that many entries, then make
EDITS edits the kubelet way (new timestamped dir, atomic `..data` rename), alternately adding
and removing edit.bench.test. A poller opens a fresh connection every ~5 ms and asks for
http://edit.bench.test/; the latency of an edit is the time from the `..data` rename to the
first response carrying the new verdict (200 after an add, 403 after a remove). A background
prober meanwhile opens a fresh connection every ~5 ms to a host that stays whitelisted and
counts every outcome (refused and reset connections are what a reconfigure costs).

  bench/edit_latency.py [--entries 10,100000] [--modes live,reconfigure] [--edits 20]
                        [--settle S] [--timeout S] [--json FILE] [--keep]
"""
import argparse
import base64
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import common, services  # noqa: E402
from lib.common import log  # noqa: E402


def _auth_header():
    user = common.agent_user(0)
    tok = base64.b64encode(f"{user}:{common.agent_password(user, services.APIKEY)}".encode()).decode()
    return f"Proxy-Authorization: Basic {tok}\r\n"


def one_request(proxy_port, host, port, auth, timeout=5.0):
    """A fresh connection, one GET, read to the end. Returns a status string or an error class."""
    return common.fpsharness.fresh_request(proxy_port, host, port, "/1k", auth, timeout)


class Poller(threading.Thread):
    """Fresh connection every `interval` seconds; keeps (t_received, result) and counts results."""

    def __init__(self, proxy_port, host, port, interval=0.005, keep_events=True):
        super().__init__(daemon=True)
        self.args = (proxy_port, host, port)
        self.interval = interval
        self.auth = _auth_header()
        self.stop_evt = threading.Event()
        self.cond = threading.Condition()
        self.events = [] if keep_events else None
        self.counts = {}

    def run(self):
        while not self.stop_evt.is_set():
            r = one_request(*self.args, self.auth)
            t = time.monotonic()
            with self.cond:
                self.counts[r] = self.counts.get(r, 0) + 1
                if self.events is not None:
                    self.events.append((t, r))
                self.cond.notify_all()
            self.stop_evt.wait(self.interval)

    def wait_for(self, since, want, timeout):
        """First event after `since` with result `want`: its time, or None on timeout."""
        deadline = time.monotonic() + timeout
        idx = 0
        with self.cond:
            while True:
                while idx < len(self.events):
                    t, r = self.events[idx]
                    idx += 1
                    if t >= since and r == want:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def results_between(self, t0, t1):
        with self.cond:
            return [r for t, r in self.events if t0 <= t < t1]

    def finish(self):
        self.stop_evt.set()
        self.join(10)
        return dict(self.counts)


def _pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def measure(env, entries, apply, edits=20, settle=1.0, timeout=30.0, interval=0.005):
    """One (entries, apply) configuration. env must have nginx started (env.http_port)."""
    base = [n for n in services.base_whitelist(entries)]
    name = f"lat-{apply}-{entries}"
    t0 = time.monotonic()
    f = env.start_fps(name=name, apply=apply, whitelist=base, routes=False, wait=180)
    startup = time.monotonic() - t0
    res = {"entries": entries, "apply": apply, "edits": edits, "startup_s": round(startup, 2)}
    prober = poller = None
    try:
        f.check(services.ORIGIN, env.http_port, 200)
        f.check(services.EDITED, env.http_port, 403)
        prober = Poller(f.port, services.ORIGIN, env.http_port, interval, keep_events=False)
        poller = Poller(f.port, services.EDITED, env.http_port, interval)
        prober.start()
        poller.start()
        time.sleep(0.3)
        lat, flaps, timeouts = [], 0, 0
        present = False
        for i in range(edits):
            present = not present
            wl = base + [services.EDITED] if present else base
            files = f.config_files(wl)
            want = "200" if present else "403"
            t_swap = services.kubelet_swap(f.config, files, gen=i + 1)
            t_seen = poller.wait_for(t_swap, want, timeout)
            if t_seen is None:
                timeouts += 1
                log(f"edit-latency {name}: edit {i + 1}: verdict {want} not seen within {timeout}s")
                continue
            lat.append((t_seen - t_swap) * 1000)
            time.sleep(settle)
            # After the new verdict showed, it must stay.
            old = "403" if present else "200"
            flaps += sum(1 for r in poller.results_between(t_seen, time.monotonic()) if r == old)
        res.update({
            "latencies_ms": [round(x, 1) for x in lat],
            "median_ms": round(statistics.median(lat), 1) if lat else None,
            "p99_ms": round(_pct(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None,
            "min_ms": round(min(lat), 1) if lat else None,
            "timeouts": timeouts,
            "flaps": flaps,
        })
    finally:
        if poller:
            res["poller"] = poller.finish()
        if prober:
            res["prober"] = prober.finish()
        f.close()
    pr = res.get("prober", {})
    res["prober_failed"] = sum(v for k, v in pr.items() if k != "200")
    res["prober_refused_reset"] = pr.get("refused", 0) + pr.get("reset", 0)
    log(f"edit-latency {name}: median {res.get('median_ms')} ms, max {res.get('max_ms')} ms, "
        f"timeouts {res.get('timeouts')}, prober {pr}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", default="10,100000")
    ap.add_argument("--modes", default="live,reconfigure")
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the run directory under /tmp")
    args = ap.parse_args()
    env = services.Env(keep=args.keep)
    out = []
    try:
        env.start_nginx()
        for n in [int(x) for x in args.entries.split(",")]:
            for mode in args.modes.split(","):
                out.append(measure(env, n, mode, args.edits, args.settle, args.timeout))
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        env.close()
    print("| entries | apply | edits | median ms | p99 ms | max ms | timeouts | verdict flaps | prober refused+reset | "
          "prober other failures |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in out:
        print(f"| {r['entries']:,} | {r['apply']} | {r['edits']} | {r.get('median_ms')} | {r.get('p99_ms')} | "
              f"{r.get('max_ms')} | {r.get('timeouts')} | {r.get('flaps')} | {r['prober_refused_reset']} | "
              f"{r['prober_failed'] - r['prober_refused_reset']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if out else 1


if __name__ == "__main__":
    sys.exit(main())
