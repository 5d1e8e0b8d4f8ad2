#!/usr/bin/python3
"""A/B of tunnel settings: the appliance-side CPU per request of the FPS tunnel route over the
FPS direct route (the `make bench` target), per variant, in one run, rounds interleaved.

  bench/ab_tunnel.py [--runs N] [--duration S] [--workload get1k|connect]
                     [--variant 'LABEL:EDITS' ...] [--count-conns]

A variant edits the stunnel client template (stunnel-conf/client.conf.tmpl) the controller
renders: EDITS separated by ';;', `-REGEX` drops the matching lines, `+LINE` appends a service
option (after the [fps-tunnel] options), `^LINE` inserts a global option (before [fps-tunnel]),
`env:K=V` sets an environment variable for the controller (e.g. FPS_STUNNEL_GLIBC_TUNABLES=).
`base` (the template as it is) always runs. The cloud side runs in its own network namespace
(services.CloudNet), as in `make bench`.

Per round and variant: a fresh FPS with the variant, FPS direct then FPS tunnel (GET 1 KiB),
appliance CPU = every `fps:` role (Squid, helpers, controller, stunnel client) per 2xx answer.
--count-conns also counts, during the tunnel run, the TCP connections Squid opens to the
stunnel client (SYNs on loopback to its port, tshark) and those the stunnel client opens to
the cloud (SYNs on the veth pair): whether peer connections are reused.
Example: bench/ab_tunnel.py --runs 2 --variant 'aes128:+ciphersuites = TLS_AES_128_GCM_SHA256'
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


def make_variant(d, spec):
    label, _, edits = spec.partition(":")
    tdir = d / f"stunnel-conf-{label}"
    shutil.copytree(ROOT / "stunnel-conf", tdir)
    conf = tdir / "client.conf.tmpl"
    lines = conf.read_text().splitlines()
    env = {}
    for e in [x for x in edits.split(";;") if x]:
        if e.startswith("env:"):
            k, _, v = e[4:].partition("=")
            env[k] = v
        elif e.startswith("-"):
            rx = re.compile(e[1:])
            n = len(lines)
            lines = [ln for ln in lines if not rx.search(ln)]
            if len(lines) == n:
                sys.exit(f"variant {label}: nothing matches {e[1:]!r}")
        elif e.startswith("+"):
            lines.append(e[1:])
        elif e.startswith("^"):
            lines.insert(lines.index("[fps-tunnel]"), e[1:])
        else:
            sys.exit(f"variant {label}: an edit starts with -, +, ^ or env: {e!r}")
    conf.write_text("\n".join(lines) + "\n")
    return label, tdir, env


def appliance_us(rec):
    cpu = sum(v for k, v in rec["cpu_s"].items() if k.startswith("fps:"))
    return cpu / max(1, rec["ok"]) * 1e6


def count_syns(iface, port, seconds, out):
    """A tshark capture of the SYNs (no ACK) to port on iface for `seconds`: new connections."""
    return subprocess.Popen(["timeout", str(seconds), "tshark", "-q", "-i", iface, "-w", str(out), "-f",
                             f"tcp dst port {port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pcap_count(path):
    p = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True)
    return len(p.stdout.splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--workload", default="get1k", choices=["get1k", "connect"])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--count-conns", action="store_true")
    a = ap.parse_args()
    env = services.Env()
    try:
        env.start_nginx()
        env.start_customer_squid()
        env.start_cloud()
        variants = [("base", None, {})] + [make_variant(env.dir, v) for v in a.variant]
        res = {}
        for run in range(a.runs):
            for label, tdir, venv in variants:
                f = env.start_fps(name=f"ab-{label}", stunnel_templates=tdir, extra_env=venv)
                try:
                    f.check(services.TUNNELED, env.http_port, 200)
                    recs = {}
                    for t, host in (("direct", services.ORIGIN), ("tunnel", services.TUNNELED)):
                        caps = []
                        if a.count_conns and t == "tunnel":
                            win = max(1, a.duration - 1)
                            caps = [(count_syns("lo", f.tunnel_local, a.warmup + win, env.dir / "lo.pcap"), "lo.pcap"),
                                    (count_syns(env.cloudnet.host_if, env.cloud_tls_port, a.warmup + win,
                                                env.dir / "veth.pcap"), "veth.pcap")]
                        rec = loadrun.run_load(env, f"{label}-{t}-{run}", f.port, host, a.workload, a.agents,
                                               a.duration, a.warmup)
                        for p, name in caps:
                            p.wait()
                            rec["syns_" + name.split(".")[0]] = pcap_count(env.dir / name)
                        recs[t] = rec
                    recs["ratio"] = appliance_us(recs["tunnel"]) / appliance_us(recs["direct"])
                    res.setdefault(label, []).append(recs)
                    log(f"{label} round {run}: appliance µs/req direct {appliance_us(recs['direct']):.0f} "
                        f"tunnel {appliance_us(recs['tunnel']):.0f} = {recs['ratio']:.2f}x")
                finally:
                    f.close()
        print(f"\n{a.workload}, {a.agents} agents, {a.duration:g} s + {a.warmup:g} s warmup, {a.runs} rounds "
              f"(interleaved); appliance = fps:* roles; the box is shared")
        for label, rs in res.items():
            med = lambda xs: statistics.median(xs)
            tun = [r["tunnel"] for r in rs]
            roles = sorted({k for r in tun for k in r["cpu_s"] if k.startswith("fps:")})
            parts = ", ".join(f"{k[4:]} {med([r['cpu_s'].get(k, 0) / max(1, r['ok']) * 1e6 for r in tun]):.0f}"
                              for k in roles)
            conns = ""
            if a.count_conns:
                conns = (f"  new conns squid->stunnel {[r.get('syns_lo') for r in tun]} "
                         f"stunnel->cloud {[r.get('syns_veth') for r in tun]} "
                         f"(tunnel requests {[r['requests'] for r in tun]})")
            print(f"{label:>12}: ratio {med([r['ratio'] for r in rs]):.2f}x (each "
                  f"{', '.join('%.2f' % r['ratio'] for r in rs)})  direct {med([appliance_us(r['direct']) for r in rs]):.0f} "
                  f"tunnel {med([appliance_us(r) for r in tun]):.0f} µs/req ({parts})  tunnel 2xx/s "
                  f"{med([r['ok_rps'] for r in tun]):,.0f}  direct 2xx/s {med([r['direct']['ok_rps'] for r in rs]):,.0f}  "
                  f"failed {sum(r['failed'] for r in tun)}  other CPU s "
                  f"{[r['tunnel'].get('other_cpu_s') for r in rs]}{conns}")
    finally:
        env.close()


if __name__ == "__main__":
    main()
