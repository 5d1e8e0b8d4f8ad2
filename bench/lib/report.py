"""Aggregation, Markdown tables, target checks and the gnuplot chart."""
import os
import statistics
import subprocess
from pathlib import Path

from . import reportsprice, stormreport

TARGETS = [
    ("direct", "(1) direct to nginx (limit)"),
    ("squid", "(2) hand-written Squid"),
    ("squid-8", "(2b) hand-written Squid + FPS's 8 listening sockets"),
    ("tinyproxy", "(3) tinyproxy"),
    ("fps-direct", "(4) FPS direct route"),
    ("fps-reconf", "(4b) FPS direct, `apply: reconfigure`"),
    ("fps-tunnel", "(5) FPS tunnel route"),
    ("fps-upstream", "(6) FPS upstream route"),
    ("squid-mix", "(2) hand-written Squid, mix 80/20"),
    ("fps-direct-mix", "(4) FPS direct, mix 80/20"),
]
TITLE = dict(TARGETS)
GROUPS = [
    ("get1k", "Plain GET, 1 KiB objects"),
    ("get100k", "Plain GET, 100 KiB objects"),
    ("connect", "(9) CONNECT + TLS to an HTTPS origin (1 KiB), tunnels recycled"),
]
SHORT = {"direct": "direct", "squid": "Squid", "tinyproxy": "tinyproxy", "squid-8": "Squid 8 sockets", "fps-direct": "FPS direct", "fps-reconf": "FPS reconfigure",
         "fps-tunnel": "FPS tunnel", "fps-upstream": "FPS upstream", "squid-mix": "Squid mix",
         "fps-direct-mix": "FPS mix"}


def _met(ok):
    """The Targets table's "met" cell; None marks a cost shown alone (no target of its own)."""
    return "(cost)" if ok is None else "yes" if ok else "**MISSED**"


def _runs_txt(x):
    n = x.get("reps") or 1
    return f"median of {n} run{'s' if n != 1 else ''}" if n > 1 else "1 run"


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def disturbed(r, share=0.10):
    """True when other jobs used more than `share` of the box during the measured window."""
    o = r.get("other_cpu_s")
    if o is None:
        return None
    return o > share * (os.cpu_count() or 1) * r["duration_s"]


def aggregate(runs):
    """{group: {target: summary}} over repetitions: medians, summed failures, max of maxima."""
    out = {}
    for g, _ in GROUPS:
        for t, _ in TARGETS:
            all_rs = [r for r in runs if r["group"] == g and r["target"] == t]
            if not all_rs:
                continue
            # Other jobs share the box: runs where they took more than 10% of it are left out
            # of the medians when at least one undisturbed run exists (all are in the JSON).
            clean = [r for r in all_rs if disturbed(r) is False]
            rs = clean or all_rs
            errs = {}
            for r in rs:
                for k, v in r["errors"].items():
                    errs[k] = errs.get(k, 0) + v
                for k, v in r["status"].items():
                    if not 200 <= int(k) < 300:
                        errs[f"http_{k}"] = errs.get(f"http_{k}", 0) + v
            roles = sorted({k for r in rs for k in r["cpu_s"]})
            cpu = {k: round(_med([r["cpu_s"].get(k, 0) for r in rs]), 2) for k in roles}
            rss_roles = sorted({k for r in rs for k in r["rss_mb"]})
            rss = {k: max(r["rss_mb"].get(k, 0) for r in rs) for k in rss_roles}
            s = {
                "reps": len(rs), "reps_run": len(all_rs), "reps_disturbed": sum(1 for r in all_rs if disturbed(r)), "ok_rps": _med([r["ok_rps"] for r in rs]),
                "ok_rps_each": [r["ok_rps"] for r in rs], "mb_s": _med([r["mb_s"] for r in rs]),
                "p50_ms": _med([r["p50_ms"] for r in rs]), "p95_ms": _med([r["p95_ms"] for r in rs]),
                "p99_ms": _med([r["p99_ms"] for r in rs]), "max_ms": max(r["max_ms"] for r in rs),
                "failed_total": sum(r["failed"] for r in rs), "failed_by_class": errs,
                "requests_total": sum(r["requests"] for r in rs),
                "cpu_s": cpu, "rss_mb": rss, "loadgen_cpu_s": _med([r.get("loadgen_cpu_s") for r in rs]),
                "duration_s": rs[0]["duration_s"], "other_cpu_s": _med([r.get("other_cpu_s") for r in rs]),
            }
            for k in ("threads_fps:stunnel", "threads_cloud:stunnel", "threads_tiny:tinyproxy"):
                v = _med([r.get(k) for r in rs])
                if v:
                    s[k] = v
            proxy_cpu = sum(v for k, v in cpu.items() if k != "nginx")
            ok_n = s["ok_rps"] * s["duration_s"] if s["ok_rps"] else 0
            s["proxy_cpu_us_per_req"] = round(proxy_cpu / ok_n * 1e6, 1) if ok_n else None
            s["cpu_us_per_req"] = {k: round(v / ok_n * 1e6, 1) for k, v in cpu.items()} if ok_n else {}
            out.setdefault(g, {})[t] = s
    for g, ts in out.items():
        for t, s in ts.items():
            for ref in ("direct", "squid"):
                r = ts.get(ref)
                s[f"vs_{ref}"] = round(s["ok_rps"] / r["ok_rps"], 3) if r and r["ok_rps"] else None
    return out


def _fmt_classes(d):
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def _fmt_roles(d, unit=""):
    items = [(k, v) for k, v in d.items() if v >= 0.05]
    items.sort(key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:g}{unit}" for k, v in items) or "-"


def _n(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def throughput_tables(summary, agents):
    lines = []
    for g, gtitle in GROUPS:
        ts = summary.get(g)
        if not ts:
            continue
        reps = max(s["reps"] for s in ts.values())
        dur = next(iter(ts.values()))["duration_s"]
        lines += [f"### {gtitle} — {agents} agents, {dur:g} s, "
                  f"{'median of up to %d runs' % reps if reps > 1 else '1 run'}", "",
                  "| scenario | 2xx req/s | MB/s | p50 ms | p95 ms | p99 ms | max ms | failed (by class) | "
                  "vs (1) | vs (2) | proxy CPU µs/req | CPU s by process | peak RSS MB | other jobs CPU s |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|"]
        for t, _ in TARGETS:
            s = ts.get(t)
            if not s:
                continue
            each = f" ({', '.join(f'{x:,.0f}' for x in s['ok_rps_each'])})" if s["reps"] > 1 else ""
            if s["reps_disturbed"]:
                each += f" [{s['reps']}/{s['reps_run']} runs used]" if s["reps"] < s["reps_run"] else " [disturbed]"
            lines.append(
                f"| {TITLE[t]} | {_n(s['ok_rps'])}{each} | {_n(s['mb_s'], '{:,.1f}')} | {_n(s['p50_ms'], '{:.1f}')} | "
                f"{_n(s['p95_ms'], '{:.1f}')} | {_n(s['p99_ms'], '{:.1f}')} | {_n(s['max_ms'], '{:.0f}')} | "
                f"{s['failed_total']:,}{' (' + _fmt_classes(s['failed_by_class']) + ')' if s['failed_total'] else ''} | "
                f"{_n(s['vs_direct'], '{:.2f}')} | {_n(s['vs_squid'], '{:.2f}')} | "
                f"{_n(s['proxy_cpu_us_per_req'], '{:.0f}')} | {_fmt_roles(s['cpu_s'])} | {_fmt_roles(s['rss_mb'])} | "
                f"{_n(s['other_cpu_s'], '{:.1f}')} |")
        lines.append("")
    return lines


WORKLOAD_NAME = {"get1k": "GET 1 KiB", "get100k": "GET 100 KiB", "connect": "CONNECT + TLS, 1 KiB"}


def tunnel_cpu_table(summary):
    """The tunnel route's appliance-side cost: FPS's own processes (`fps:` roles) per 2xx
    response, tunnel over direct, per workload of this run; the cloud side separately."""
    rows = []
    for g, gtitle in GROUPS:
        x = summary.get(g, {})
        t = tunnel_cpu_ratio(x.get("fps-tunnel"), x.get("fps-direct"))
        if t is None:
            continue
        r, tun, dir_, _ = t
        per = x["fps-tunnel"]["cpu_us_per_req"]
        pick = lambda pre, suf: sum(v for k, v in per.items() if k.startswith(pre) and k.endswith(suf))
        rows.append(f"| {WORKLOAD_NAME.get(g, g)} | {dir_:.0f} | {tun:.0f} | "
                    f"{'**%.2fx**' % r if r > TUNNEL_CPU_GOAL else '%.2fx' % r} | {pick('fps:', 'squid'):.0f} | "
                    f"{pick('fps:', 'stunnel'):.0f} | {pick('cloud:', 'stunnel'):.0f} | {pick('cloud:', 'squid'):.0f} | "
                    f"{_n(x['fps-tunnel'].get('threads_fps:stunnel'))} |")
    if not rows:
        return []
    return ["### Tunnel route: appliance-side CPU per request (same run)", "",
            "CPU µs per 2xx response of FPS's own processes (`fps:` roles: its Squid, fps-auth, fps-acl, the "
            "controller and the stunnel client), FPS tunnel route vs FPS direct route. The cloud stunnel server and "
            "cloud Squid run in their own network namespace (veth pair, not loopback) and are shown apart; on "
            f"this box they share the 2 cores. Goal ≤ {TUNNEL_CPU_GOAL}x for GET.", "",
            "| workload | direct µs/req | tunnel µs/req | ratio | tunnel: FPS Squid | tunnel: stunnel client | "
            "cloud stunnel | cloud Squid | stunnel client threads |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows + [""]


def edits_table(live):
    if not live:
        return []
    lines = ["### (7) FPS under load while the whitelist is edited every 2 s — live apply vs `apply: reconfigure`", "",
             "| apply | edits | 2xx req/s | p99 ms | max ms | failed requests (by class) | prober: fresh connections "
             "(by outcome) | CPU s by process | other jobs CPU s |",
             "|---|---:|---:|---:|---:|---|---|---|---:|"]
    for r in live:
        d = r.get("during") or {}
        classes = dict(r["errors"])
        for k, v in r["status"].items():
            if not 200 <= int(k) < 300:
                classes[f"http_{k}"] = v
        lines.append(f"| {r['apply']} | {d.get('edits', '-')} | {r['ok_rps']:,.0f} | {r['p99_ms']:.1f} | "
                     f"{r['max_ms']:.0f} | **{r['failed']:,}**{' (' + _fmt_classes(classes) + ')' if r['failed'] else ''} | "
                     f"{_fmt_classes(d.get('prober', {}))} | {_fmt_roles(r['cpu_s'])} | {r.get('other_cpu_s', '-')} |")
    lines.append("")
    return lines


def availability_table(avail):
    if not avail:
        return []
    lines = ["### (10) Ramp and (11) restart: availability", "",
             "Ramp: loadgen opens all agents' connections at once (200 per 10 ms) against a running proxy, "
             "nothing excluded. Restart: SIGTERM to the FPS controller under load, then started again on the same "
             "state dir; *served again* counts from the SIGTERM.", "",
             "| run | 2xx req/s | failed (by class) | agents with a failure | every agent served after ms | "
             "longest gap without a 2xx ms | p99 ms | max ms | Squid answering again after ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in avail:
        av = r.get("availability") or {}
        classes = dict(r["errors"])
        for k, v in r["status"].items():
            if not 200 <= int(k) < 300:
                classes[f"http_{k}"] = v
        d = r.get("during") or {}
        if r["group"] == "restart":
            served = f"{av.get('all_served_after_mark_ms', 0):,.0f} ({av.get('agents_served_after_mark', 0):,} agents)"
            name = f"(11) restart, {TITLE.get(r['target'], r['target'])}"
        else:
            served = f"{av.get('all_served_ms', 0):,.0f} ({av.get('agents_served', 0):,} agents)"
            name = f"(10) ramp, {TITLE.get(r['target'], r['target'])} #{r['rep']}"
        fail = f"**{r['failed']:,}**" if r["failed"] and r["target"].startswith("fps") else f"{r['failed']:,}"
        lines.append(f"| {name} | {r['ok_rps']:,.0f} | {fail}{' (' + _fmt_classes(classes) + ')' if r['failed'] else ''} | "
                     f"{_n(av.get('agents_failed'))} | {served} | {av.get('gap_max_ms', 0):,.0f} | {r['p99_ms']:.0f} | "
                     f"{r['max_ms']:.0f} | {d.get('squid_answering_after_ms', '-')} |")
    lines.append("")
    for r in avail:
        if r["group"] == "restart":
            lines += restart_detail(r)
    return lines


def first_2xx_after_mark_ms(av):
    """The end of the longest gap without a 2xx, after the mark (loadgen's times from its start)."""
    if av.get("mark_s") is None or av.get("gap_at_s") is None:
        return None
    return av["gap_at_s"] * 1000 + av.get("gap_max_ms", 0) - av["mark_s"] * 1000


def restart_detail(r):
    """(11): what the agents saw, counted per agent, and where the gap went, stage by stage."""
    av = r.get("availability") or {}
    st = (r.get("during") or {}).get("stages") or {}
    out = []
    inf = av.get("in_flight_at_mark")
    if inf is not None:
        out.append(f"(11) per agent: **{av.get('agents_failed', 0):,} of {r['agents']:,} agents** saw at least one "
                   f"failed request (at most {av.get('agent_failures_max', 0):,} for one agent: the failed count "
                   "above is mostly loadgen's reconnect attempts during the gap, so it follows loadgen's retry pace). "
                   f"Requests on the wire at the SIGTERM: {inf.get('2xx', 0):,} still answered 2xx, "
                   f"{inf.get('other_status', 0):,} answered with an error status, {inf.get('cut', 0):,} cut "
                   "(connection closed or reset under them).")
    if st:
        f2 = first_2xx_after_mark_ms(av)
        steps = [("old Squid stopped (controller log)", st.get("old_squid_stopped")),
                 ("old controller exited", st.get("old_controller_gone")),
                 ("new controller spawned", st.get("new_controller_spawned")),
                 ("new generation active: rendered + `squid -k parse` (controller log)", st.get("new_generation_active")),
                 ("new Squid started (controller log)", st.get("new_squid_started")),
                 ("new Squid answering on the proxy port", st.get("squid_answering")),
                 ("first 2xx to an agent (loadgen)", round(f2) if f2 is not None else None)]
        out += ["", "(11) where the gap goes, ms after the SIGTERM (each stage's time, and since the previous one):", "",
                "| stage | at ms | + ms |", "|---|---:|---:|"]
        prev = 0
        for name, v in steps:
            if v is None:
                continue
            out.append(f"| {name} | {v:,} | {v - prev:+,} |")
            prev = v
        if st.get("squid_parse_ms") is not None:
            out.append("")
            out.append(f"One `squid -k parse` of the new generation's candidate alone: {st['squid_parse_ms']} ms (median "
                       "of 3, after the run). At a restart the candidate is byte-identical to the last proven "
                       "config on the same Squid binary.")
        cl = st.get("old_squid_cache_log")
        if cl:
            out += ["", "Old Squid's cache.log during its shutdown (1 s resolution):", "", "```"] + cl + ["```"]
    if out:
        out.append("")
    return out


SMP_TITLE = {"squid-smp2": "(2) hand-written Squid, `workers 2`", "fps-smp2": "(4) FPS direct, `proxy.workers: 2`",
             "fps-smpauto": "(4) FPS direct, `proxy.workers: auto`",
             "fps-smp2-reconf": "(4b) FPS direct, `proxy.workers: 2`, `apply: reconfigure`"}
SMP_PREFIX = {"squid-smp2": "hand2:", "fps-smp2": "fps:", "fps-smpauto": "fps:", "fps-smp2-reconf": "fps:"}
SMP_WL = {"get1k": "GET 1 KiB", "connect": "CONNECT+TLS 1 KiB"}


def smp_proxy_us(r):
    """CPU µs per 2xx answer of the measured proxy's own processes (Squid master, kids, helpers)."""
    pre = SMP_PREFIX.get(r["target"], "")
    cpu = sum(v for k, v in r["cpu_s"].items() if k.startswith(pre))
    n = r["ok_rps"] * r["duration_s"]
    return cpu / n * 1e6 if n else None


def _smp_base(runs, r):
    """The hand-written Squid's run of the same workload right before r (its baseline)."""
    i = next(k for k, x in enumerate(runs) if x is r)
    return next((b for b in reversed(runs[:i]) if b["target"] == "squid-smp2" and b["workload"] == r["workload"]), None)


def _fmt_kids(h):
    if not h:
        return "-"
    return "; ".join(f"{k}: " + ", ".join(f"{c} {n}" for c, n in sorted(v.items())) for k, v in h.items())


def smp_table(runs, nproc=None):
    if not runs:
        return []
    lines = ["### (13) SMP: Squid workers 2 and `auto`, 1000 agents", "",
             f"One FPS at a time (`proxy.workers: auto` is one worker per online core: {nproc or '?'} here), the "
             "hand-written Squid with `workers 2` (basic_ncsa_auth) measured right before each FPS run: each ratio is "
             "against that adjacent run. **The box has 2 cores and loadgen and nginx share them with the workers**, so two "
             "workers cannot double anything here: the figures compare proxies at equal worker counts, they do not "
             "show SMP scaling. *proxy CPU µs/answer*: the measured proxy's own processes (Squid master, kids and "
             "helpers) per 2xx. *helpers per kid*: counted from /proc half-way through each run (children of each "
             "Squid kid, by name); the coordinator (`squid-coord-N`) starts a set too, which answers nothing.", "",
             "| workload | proxy | 2xx req/s | vs hand-written, 2 workers | p99 ms | max ms | failed (by class) | "
             "proxy CPU µs/answer | CPU s by process | helpers per kid | other jobs CPU s |",
             "|---|---|---:|---:|---:|---:|---|---:|---|---|---:|"]
    for wl in ("get1k", "connect"):
        for r in (x for x in runs if x["workload"] == wl):
            t = r["target"]
            classes = dict(r["errors"])
            for k, v in r["status"].items():
                if not 200 <= int(k) < 300:
                    classes[f"http_{k}"] = v
            b = _smp_base(runs, r) if t != "squid-smp2" else None
            vs = r["ok_rps"] / b["ok_rps"] if b and b["ok_rps"] else None
            vs_txt = "-" if vs is None else (f"**{vs:.2f}**" if vs < 0.97 else f"{vs:.2f}")
            dist = " [disturbed]" if disturbed(r) else ""
            lines.append(
                f"| {SMP_WL[wl]} | {SMP_TITLE[t]} | {r['ok_rps']:,.0f}{dist} | {vs_txt} | {r['p99_ms']:.1f} | "
                f"{r['max_ms']:.0f} | {r['failed']:,}{' (' + _fmt_classes(classes) + ')' if r['failed'] else ''} | "
                f"{_n(smp_proxy_us(r), '{:.0f}')} | {_fmt_roles(r['cpu_s'])} | {_fmt_kids(r.get('helpers_per_kid'))} | "
                f"{r.get('other_cpu_s', '-')} |")
    lines.append("")
    return lines


def smp_checks(runs):
    out = []
    for wl in ("get1k", "connect"):
        pairs = [(r, _smp_base(runs, r)) for r in runs
                 if r["workload"] == wl and r["target"] in ("fps-smp2", "fps-smpauto")]
        pairs = [(r, b) for r, b in pairs if b and b["ok_rps"]]
        if not pairs:
            continue
        ratios = [(r, b, r["ok_rps"] / b["ok_rps"]) for r, b in pairs]
        out.append((f"FPS SMP ≥ 0.97x the hand-written Squid with 2 workers, {SMP_WL[wl]}",
                    all(x >= 0.97 for _, _, x in ratios),
                    "; ".join(f"workers {r['workers']}: {r['ok_rps']:,.0f} vs {b['ok_rps']:,.0f} req/s = {x:.2f}x"
                              for r, b, x in ratios) +
                    " (each against the hand-written Squid's run right before it; 2 cores shared with loadgen and nginx)"))
        live = next(((r, b) for r, b in pairs if r["target"] == "fps-smp2"), None)
        rc = next((r for r in runs if r["workload"] == wl and r["target"] == "fps-smp2-reconf"), None)
        rcb = _smp_base(runs, rc) if rc else None
        if live and rc and rcb and rcb["ok_rps"]:
            # Minutes apart, so each against its own adjacent hand-written baseline (the box drifts).
            lr, rr = live[0]["ok_rps"] / live[1]["ok_rps"], rc["ok_rps"] / rcb["ok_rps"]
            out.append((f"price of sub-second live apply with 2 workers, {SMP_WL[wl]}", None,
                        f"`apply: live` {lr:.2f}x its hand-written baseline, `reconfigure` {rr:.2f}x its own: "
                        f"{lr / rr:.2f}x; proxy CPU {_n(smp_proxy_us(live[0]), '{:.0f}')} vs "
                        f"{_n(smp_proxy_us(rc), '{:.0f}')} µs/answer (baselines "
                        f"{_n(smp_proxy_us(live[1]), '{:.0f}')} and {_n(smp_proxy_us(rcb), '{:.0f}')})"))
    return out


def open_loop_table(runs):
    if not runs:
        return []
    lines = ["### (12) Latency at a fixed arrival rate (open loop), GET 1 KiB", "",
             "Per target: its capacity measured closed-loop just before, then `loadgen --rate` at fractions of it, "
             "the arrivals spread over the agents' keep-alive connections; latency counts from each request's "
             "scheduled send time, so a stall shows instead of slowing the arrivals (no coordinated omission). "
             "*service* is send-to-answer. *unsent* = arrivals still queued in loadgen at the end.", "",
             "| target | offered req/s | 2xx req/s | p50 ms | p99 ms | p99.9 ms | max ms | service p99 ms | "
             "p99 vs Squid | failed | unsent | proxy CPU µs/req | other jobs CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    sq = {r.get("fraction"): r for r in runs if r["target"] == "squid" and r.get("fraction")}
    for r in runs:
        proxy_cpu = sum(v for k, v in r["cpu_s"].items() if not k.startswith("nginx"))
        us = proxy_cpu / (r["ok_rps"] * r["elapsed_s"]) * 1e6 if r["ok_rps"] else None
        if not r.get("fraction"):
            lines.append(f"| {TITLE.get(r['target'], r['target'])}, capacity (closed loop) | - | {r['ok_rps']:,.0f} | "
                         f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('p999_ms', 0):.1f} | {r['max_ms']:.0f} | - | - | "
                         f"{r['failed']:,} | - | {_n(us)} | {r.get('other_cpu_s', '-')} |")
            continue
        ol = r.get("open_loop") or {}
        svc = (ol.get("service_us") or {}).get("p99")
        base = sq.get(r["fraction"])
        vs = r["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] and r["target"] != "squid" else None
        lines.append(f"| {TITLE.get(r['target'], r['target'])}, {r['fraction']:.0%} of capacity | {r['rate']:,} | "
                     f"{r['ok_rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r.get('p999_ms', 0):.1f} | "
                     f"{r['max_ms']:.0f} | {_n(svc / 1000 if svc is not None else None, '{:.1f}')} | "
                     f"{_n(vs, '{:.2f}')} | {r['failed']:,} | {_n(ol.get('unsent_at_end'))} | {_n(us)} | "
                     f"{r.get('other_cpu_s', '-')} |")
    lines.append("")
    return lines


def latency_table(lat):
    if not lat:
        return []
    n = max(r["edits"] for r in lat)
    lines = [f"### (8) Edit-to-enforced latency: `..data` swap to the first response with the new verdict "
             f"({n} edits, poller every ~5 ms on fresh connections)", "",
             "| entries | apply | median ms | p99 ms | max ms | min ms | timeouts | verdict flaps | "
             "prober: refused+reset | prober: all outcomes | FPS start s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in lat:
        lines.append(f"| {r['entries']:,} | {r['apply']} | {_n(r.get('median_ms'), '{:.0f}')} | "
                     f"{_n(r.get('p99_ms'), '{:.0f}')} | {_n(r.get('max_ms'), '{:.0f}')} | {_n(r.get('min_ms'), '{:.0f}')} | "
                     f"{r.get('timeouts')} | {r.get('flaps')} | **{r['prober_refused_reset']:,}** | "
                     f"{_fmt_classes(r.get('prober', {}))} | {r['startup_s']} |")
    lines.append("")
    return lines


def reconfiguring(r):
    """The (7) comparison run of `apply: reconfigure` under edits: ten `squid -k reconfigure`
    under load, shown to measure what live apply avoids (its failures are that table's
    figure); the product's default is live apply."""
    return r.get("apply") == "reconfigure" and r.get("label", "").startswith("edits-")


def whitelisted_403(runs, live=None, comparison=False):
    """{label: 403 count} over every load run: agents only ask for whitelisted hosts, so
    each 403 is a whitelisted host denied (the edit scenarios toggle another name). The
    reconfigure-under-edits comparison run is left out (comparison=True: only it)."""
    out = {}
    for r in list(runs or []) + list(live or []):
        if reconfiguring(r) != comparison:
            continue
        n = int(r.get("status", {}).get("403", 0))
        if n:
            out[r["label"]] = n
    return out


TUNNEL_CPU_GOAL = 1.3


def appliance_cpu_us(s):
    """CPU µs per 2xx response of the appliance: every `fps:` role (FPS's Squid, fps-auth,
    fps-acl, the controller and the stunnel client it supervises), not the cloud side."""
    per = (s or {}).get("cpu_us_per_req") or {}
    return sum(v for k, v in per.items() if k.startswith("fps:")), per


def tunnel_cpu_ratio(tu, fd):
    """(ratio, tunnel µs, direct µs, breakdown) of the appliance-side CPU per request of the
    tunnel route over the direct route, or None without both figures."""
    if not tu or not fd:
        return None
    t, per = appliance_cpu_us(tu)
    d, _ = appliance_cpu_us(fd)
    if not t or not d:
        return None
    parts = ", ".join(f"{k[4:]} {v:.0f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                      if k.startswith("fps:") and v >= 1)
    return t / d, t, d, "tunnel: " + parts


def target_checks(summary, live, lat, runs=None, avail=None, smp=None):
    """The issue's targets, each with the measured margin."""
    out = []
    if runs is not None:
        every = list(live or []) + list(avail or []) + list(smp or [])
        bad = whitelisted_403(runs, every)
        cmp_ = whitelisted_403(runs, every, comparison=True)
        n_runs = len(runs) + len(every) - sum(1 for r in every if reconfiguring(r))
        out.append(("no 403 for a whitelisted host, in any run", not bad,
                    ("0 in %d runs" % n_runs if not bad else
                     f"{sum(bad.values()):,} x 403 in " + ", ".join(f"{k} ({v:,})" for k, v in bad.items()) +
                     " (samples from Squid's logs in the JSON: `denied_403`)") +
                    ("; not counted: the `apply: reconfigure` comparison under edits (7), "
                     + ", ".join(f"{k} {v:,} x 403" for k, v in cmp_.items()) if cmp_ else "")))
    g = summary.get("get1k", {})
    fd, sq, tp, tu = (g.get(k) for k in ("fps-direct", "squid", "tinyproxy", "fps-tunnel"))
    if fd and sq:
        r = fd["ok_rps"] / sq["ok_rps"]
        out.append(("FPS direct within 5% of the hand-written Squid (same workers)", r >= 0.95,
                    f"{fd['ok_rps']:,.0f} vs {sq['ok_rps']:,.0f} req/s = {r:.1%} ({(r - 1):+.1%})"))
    s8, fr_ = g.get("squid-8"), g.get("fps-reconf")
    if fd and s8:
        r = fd["ok_rps"] / s8["ok_rps"]
        out.append(("FPS direct ≥ 0.97x the hand-written Squid with FPS's listening sockets (2b), GET", r >= 0.97,
                    f"{fd['ok_rps']:,.0f} vs {s8['ok_rps']:,.0f} req/s = {r:.2f}x; proxy CPU "
                    f"{_n(fd.get('proxy_cpu_us_per_req'), '{:.0f}')} vs {_n(s8.get('proxy_cpu_us_per_req'), '{:.0f}')} µs/req"))
    if sq and s8:
        out.append(("price of serving every agent at once: (2b) 8 listening sockets vs (2) one, GET", None,
                    f"{s8['ok_rps']:,.0f} vs {sq['ok_rps']:,.0f} req/s = {s8['ok_rps'] / sq['ok_rps']:.2f}x, failed "
                    f"{s8['failed_total']:,} vs {sq['failed_total']:,}; proxy CPU "
                    f"{_n(s8.get('proxy_cpu_us_per_req'), '{:.0f}')} vs {_n(sq.get('proxy_cpu_us_per_req'), '{:.0f}')} µs/req"))
    if fd and fr_:
        out.append(("price of sub-second live apply: (4) `apply: live` vs (4b) `apply: reconfigure`, GET", None,
                    f"{fd['ok_rps']:,.0f} vs {fr_['ok_rps']:,.0f} req/s = {fd['ok_rps'] / fr_['ok_rps']:.2f}x; proxy CPU "
                    f"{_n(fd.get('proxy_cpu_us_per_req'), '{:.0f}')} vs {_n(fr_.get('proxy_cpu_us_per_req'), '{:.0f}')} µs/req "
                    "(fps-acl asked for every request)"))
    if fd and tp:
        r = fd["ok_rps"] / tp["ok_rps"]
        out.append(("FPS direct ahead of tinyproxy", r > 1, f"{fd['ok_rps']:,.0f} vs {tp['ok_rps']:,.0f} req/s = {r:.2f}x"))
    ctl = [x for x in live or [] if x["apply"].startswith("none")]
    ctl_txt = ""
    if ctl:
        cd = ctl[0].get("during") or {}
        ctl_txt = (f"; control run without edits: {ctl[0]['failed']:,} / "
                   f"{sum(v for k, v in cd.get('prober', {}).items() if k != '200'):,}")
    for r in live or []:
        if r["apply"] == "live":
            d = r.get("during") or {}
            pf = sum(v for k, v in d.get("prober", {}).items() if k != "200")
            out.append(("zero failed requests during live edits", r["failed"] == 0 and pf == 0,
                        f"{r['failed']:,} failed agent requests, {pf:,} failed prober connections over "
                        f"{d.get('edits', '?')} edits (reconfigure mode: " +
                        ", ".join(f"{x['failed']:,} / {sum(v for k, v in (x.get('during') or {}).get('prober', {}).items() if k != '200'):,}"
                                  for x in live if x["apply"] == "reconfigure") + ")" + ctl_txt))
    for r in lat or []:
        if r["entries"] >= 100000 and r["apply"] == "live" and r.get("p99_ms") is not None:
            ok = r["p99_ms"] < 1000 and not r.get("timeouts")
            out.append(("edit-to-enforced p99 < 1 s at 100,000 entries (live)", ok,
                        f"p99 {r['p99_ms']:.0f} ms (median {r['median_ms']:.0f}, {r['edits']} edits, "
                        f"{r.get('timeouts', 0)} timeouts)"))
    for r in lat or []:
        if r["apply"] == "live" and r.get("flaps") is not None:
            out.append((f"no verdict flaps at {r['entries']:,} entries (live: one verdict at a time)", r["flaps"] == 0,
                        f"{r['flaps']} answers with the old verdict after the new one over {r['edits']} edits"))
    cg = summary.get("connect", {})
    if cg.get("fps-direct") and cg.get("squid"):
        a_, b_ = cg["fps-direct"], cg["squid"]
        r = a_["ok_rps"] / b_["ok_rps"]
        out.append(("FPS CONNECT+TLS ≥ 0.97x the hand-written Squid (same workers)", r >= 0.97,
                    f"{a_['ok_rps']:,.0f} vs {b_['ok_rps']:,.0f} req/s = {r:.2f}x ({_runs_txt(a_)} each)"))
    if cg.get("fps-direct") and cg.get("squid-8"):
        a_, b_ = cg["fps-direct"], cg["squid-8"]
        r = a_["ok_rps"] / b_["ok_rps"]
        out.append(("FPS CONNECT+TLS ≥ 0.97x the hand-written Squid with FPS's listening sockets (2b)", r >= 0.97,
                    f"{a_['ok_rps']:,.0f} vs {b_['ok_rps']:,.0f} req/s = {r:.2f}x; proxy CPU "
                    f"{_n(a_.get('proxy_cpu_us_per_req'), '{:.0f}')} vs {_n(b_.get('proxy_cpu_us_per_req'), '{:.0f}')} µs/req"))
    ramp = [r for r in avail or [] if r["group"] == "ramp"]
    fr, sr = ([r for r in ramp if r["target"] == t] for t in ("fps-direct", "squid"))
    if fr:
        served = lambda rs: max((r.get("availability") or {}).get("all_served_ms") or 0 for r in rs)
        out.append((f"0 failed requests for FPS while {fr[0]['agents']} agents connect at once", all(r["failed"] == 0 for r in fr),
                    f"{sum(r['failed'] for r in fr):,} failed over {len(fr)} runs, every agent served within "
                    f"{served(fr):,.0f} ms (hand-written Squid, same runs: {sum(r['failed'] for r in sr):,} failed, "
                    f"{served(sr):,.0f} ms)"))
    out += smp_checks(smp or [])
    if tu and fd:
        r = tu["ok_rps"] / fd["ok_rps"]
        out.append(("tunnel route ≥ 80% of direct route", r >= 0.8,
                    f"{tu['ok_rps']:,.0f} vs {fd['ok_rps']:,.0f} req/s = {r:.1%}"
                    f" (failed {tu['failed_total']:,} vs {fd['failed_total']:,})"))
    t = tunnel_cpu_ratio(tu, fd)
    if t is not None:
        r, tun, dir_, parts = t
        out.append((f"tunnel appliance-side CPU per request ≤ {TUNNEL_CPU_GOAL}x direct (GET 1 KiB)",
                    r <= TUNNEL_CPU_GOAL,
                    f"{tun:.0f} vs {dir_:.0f} µs/req = {r:.2f}x ({parts}; cloud side in its own network "
                    f"namespace, not counted)"))
    return out


README_BEGIN = "<!-- bench-table:begin (make bench regenerates this block from bench/results/latest.md) -->"
README_END = "<!-- bench-table:end -->"


def readme_block(res):
    """The README's benchmark block: the targets, GET 1 KiB and availability, from one run."""
    m = res["meta"]
    lines = [README_BEGIN,
             f"Latest full run {m['timestamp']} (git {m['git']}; 2 cores shared with other jobs, load average "
             f"{m['loadavg_start']} at the start; {m['agents']} agents with their own credentials; every figure "
             f"from this one run, see `bench/results/latest.md`):", "",
             "| target | met | measured |", "|---|---|---|"]
    for name, ok, how in res.get("targets") or []:
        lines.append(f"| {name} | {_met(ok)} | {how} |")
    lines.append("")
    g = (res.get("summary") or {}).get("get1k", {})
    if g:
        lines += ["| GET 1 KiB, keep-alive | 2xx req/s | vs (2) | p99 ms | failed | proxy CPU µs/req |",
                  "|---|---:|---:|---:|---|---:|"]
        for t, title in TARGETS:
            x = g.get(t)
            if x:
                lines.append(f"| {title} | {_n(x['ok_rps'])} | {_n(x['vs_squid'], '{:.2f}')} | {_n(x['p99_ms'], '{:.0f}')} | "
                             f"{x['failed_total']:,}{' (' + _fmt_classes(x['failed_by_class']) + ')' if x['failed_total'] else ''} | "
                             f"{_n(x['proxy_cpu_us_per_req'], '{:.0f}')} |")
        lines.append("")
    lines += availability_table(res.get("availability"))
    lines += open_loop_table(res.get("open_loop"))
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(path, res):
    """Replaces the block between the markers in README.md; False when the markers are missing."""
    path = Path(path)
    text = path.read_text()
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        return False
    path.write_text(text[:i] + readme_block(res) + text[j + len(README_END):])
    return True


def markdown(res):
    m = res["meta"]
    lines = [f"# FPS benchmark — {m['timestamp']}", "",
             f"{m['mode']} run: {m['agents']} agents, loadgen `--threads 1`, {m['duration']} s per scenario "
             f"(+{m['warmup']} s warmup, excluded), {m['reps']} repetition(s) of the GET 1 KiB scenarios "
             f"(interleaved), CONNECT tunnels recycled at {m['tunnel_rate']}/s, Squid workers {m['workers']}. "
             f"Host: {m['host']}, {m['nproc']} cores, {m['kernel']}; {m['versions']}; git {m['git']}. "
             f"Load average at start {m['loadavg_start']}, end {m.get('loadavg_end', '?')}. "
             f"Everything on loopback (the cloud side of the tunnel route in its own network namespace, over a veth "
             f"pair); every figure below comes from this run.", ""]
    checks = res.get("targets") or []
    if checks:
        lines += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
        for name, ok, how in checks:
            lines.append(f"| {name} | {_met(ok)} | {how} |")
        lines.append("")
    lines += ["## Results", ""]
    lines += throughput_tables(res.get("summary", {}), m["agents"])
    lines += tunnel_cpu_table(res.get("summary", {}))
    lines += availability_table(res.get("availability"))
    lines += open_loop_table(res.get("open_loop"))
    lines += smp_table(res.get("smp"), m.get("nproc"))
    lines += stormreport.tables(res.get("storm"))
    lines += reportsprice.table(res.get("reports_price"))
    lines += edits_table(res.get("live_edits"))
    lines += latency_table(res.get("edit_latency"))
    if res.get("failures"):
        lines += ["### Runs that failed (not in the tables)", ""]
        lines += [f"- {f['group']}/{f['target']} rep {f['rep']}: `{f['error'][:300]}`" for f in res["failures"]]
        lines.append("")
    if res.get("profile"):
        lines += ["## Where the time goes (perf record -a, 999 Hz, samples of the bench's own processes only; one extra run each, not in the tables)", ""]
        for name, text in res["profile"].items():
            lines += [f"**{name}**", "", "```", text.rstrip(), "```", ""]
    lines += ["## Notes", "",
              "- *2xx req/s*: responses with a 2xx status per second of the measured window; *failed*: non-2xx "
              "responses plus connection errors (loadgen classes: refused, reset, timeout, eof, tls...).",
              "- *CPU s by process*: utime+stime (+ reaped children) from /proc/<pid>/stat over the measured window, "
              "summed per role over each process tree (Squid's helpers found as its children). Prefixes: `fps:` the FPS "
              "pod (controller, its Squid, fps-auth, fps-acl, stunnel client), `cloud:` the cloud stunnel server and "
              "cloud Squid, `cust:` the customer proxy, `hand:` the hand-written Squid, `hand8:` the same with FPS's 8 "
              "listening sockets (2b), `fpsr:` the FPS with `apply: reconfigure` (4b), `hand2:` the hand-written Squid "
              "with 2 workers (13), `tiny:` tinyproxy. "
              "*proxy CPU µs/req*: all of these except nginx, per 2xx response. loadgen's own CPU is in the JSON.",
              "- *other jobs CPU s*: CPU of every user-space process on the box outside the bench's (per process, from "
              "/proc/<pid>/stat; interrupt time, mostly the bench's own packets, is in the JSON as `box_irq_s`) and "
              "loadgen: other people's jobs on the same 2 cores. A run where that exceeds 10% of the box is *disturbed*: "
              "medians use only undisturbed runs when there is at least one (`[k/n runs used]`), `[disturbed]` marks a "
              "figure from disturbed runs only. Every run, disturbed or not, is in the JSON.",
              "- *peak RSS*: VmHWM after resetting it (clear_refs 5) at the start of the measured window, summed over "
              "the processes of a role.",
              "- tinyproxy 1.11 answers HTTP/1.1 without `Connection: close` and then closes the client connection: "
              "loadgen's next request on it sees `eof` (0 bytes) and reconnects; those eofs are real failed requests "
              "for a keep-alive client.",
              "- The box has 2 cores shared by loadgen, the proxies and the origin; other jobs on the machine show up "
              "in the load average above. Ratios within one run are more trustworthy than absolute figures.", ""]
    return "\n".join(lines)


# ---- chart -------------------------------------------------------------------------------------

def _q(s):
    return '"' + s.replace('"', "'") + '"'


def chart(res, png, workdir):
    """A 3x2 gnuplot PNG. Returns the path, or None without gnuplot."""
    from shutil import which
    if not which("gnuplot"):
        return None
    w = Path(workdir)
    w.mkdir(parents=True, exist_ok=True)
    summ = res.get("summary", {})
    panels = []

    def bars(group, key, fname, title, ylabel, fmt):
        ts = summ.get(group)
        if not ts:
            return
        rows = [(SHORT[t], ts[t][key] or 0, ts[t]["failed_total"]) for t, _ in TARGETS if t in ts]
        with open(w / fname, "w") as f:
            for i, (n, v, fl) in enumerate(rows):
                lab = (fmt.format(v) + (f"\\n{fl:,} failed" if fl else ""))
                f.write(f"{i} {_q(n)} {v} {_q(lab)} {1 if fl else 0}\n")
        panels.append(f"""
set title {_q(title)}
set ylabel {_q(ylabel)}
set yrange [0:*]
set xrange [-0.6:{len(rows) - 0.4}]
set xtics rotate by -25
plot '{w / fname}' using 1:3:($5 > 0 ? 0xd62728 : 0x1f77b4):xtic(2) with boxes lc rgb variable notitle, \\
     '' using 1:3:4 with labels offset 0,1.3 font ",8" notitle
""")

    bars("get1k", "ok_rps", "get1k.dat", "GET 1 KiB, 1000 agents: 2xx req/s (red: some failed)", "req/s", "{:,.0f}")
    bars("connect", "ok_rps", "connect.dat", "CONNECT+TLS 1 KiB: 2xx req/s", "req/s", "{:,.0f}")
    bars("get100k", "mb_s", "get100k.dat", "GET 100 KiB: MB/s", "MB/s", "{:,.0f}")

    # Where the CPU goes per request, GET 1 KiB, stacked by process role.
    ts = summ.get("get1k")
    if ts:
        cats = [("proxy squid", lambda k: k.endswith(":squid") and not k.startswith(("cloud:", "cust:"))),
                ("auth/acl helpers", lambda k: k.endswith(("fps-acl", "fps-auth", "basic_ncsa_auth"))),
                ("stunnel (both)", lambda k: k.endswith("stunnel")),
                ("cloud/customer squid", lambda k: k.startswith(("cloud:squid", "cust:squid"))),
                ("tinyproxy", lambda k: k.endswith("tinyproxy")),
                ("fps-controller", lambda k: k.endswith("fps-controller")),
                ("nginx", lambda k: k == "nginx")]
        with open(w / "cpu.dat", "w") as f:
            f.write("name " + " ".join(_q(c) for c, _ in cats) + "\n")
            for t, _ in TARGETS:
                if t not in ts:
                    continue
                per = ts[t]["cpu_us_per_req"]
                vals = [sum(v for k, v in per.items() if pred(k)) for _, pred in cats]
                f.write(_q(SHORT[t]) + " " + " ".join(f"{v:.1f}" for v in vals) + "\n")
        panels.append(f"""
set title "GET 1 KiB: CPU microseconds per request, by process"
set ylabel "CPU µs / request"
set yrange [0:*]
set autoscale x
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.7
set key top left font ",8"
set xtics rotate by -25
plot for [i=2:{len(cats) + 1}] '{w / "cpu.dat"}' using i:xtic(1) title columnheader(i)
unset key
set style data lines
set boxwidth 0.7 relative
""")

    live = res.get("live_edits")
    if live:
        with open(w / "edits.dat", "w") as f:
            for i, r in enumerate(live):
                d = r.get("during") or {}
                pf = sum(v for k, v in d.get("prober", {}).items() if k != "200")
                f.write(f"{i} {_q(r['apply'])} {r['failed']} {pf}\n")
        panels.append(f"""
set title "(7) Whitelist edited every 2 s under load: failures"
set ylabel "count"
set yrange [0:*]
set xrange [-0.6:{len(live) - 0.4}]
set xtics norotate
set key top left font ",8"
plot '{w / "edits.dat"}' using ($1-0.18):3:(0.34):xtic(2) with boxes lc rgb "#d62728" title "failed agent requests", \\
     '' using ($1+0.18):4:(0.34) with boxes lc rgb "#ff7f0e" title "failed prober connections", \\
     '' using ($1-0.18):3:(sprintf("%d",$3)) with labels offset 0,0.8 font ",8" notitle, \\
     '' using ($1+0.18):4:(sprintf("%d",$4)) with labels offset 0,0.8 font ",8" notitle
unset key
""")
    lat = res.get("edit_latency")
    if lat:
        with open(w / "lat.dat", "w") as f:
            for i, r in enumerate(lat):
                label = f"{r['entries']:,} {r['apply']}"
                f.write(f"{i} {_q(label)} {r.get('median_ms') or 0} {r.get('max_ms') or 0}\n")
        panels.append(f"""
set title "(8) Edit-to-enforced latency (line: 1 s target)"
set ylabel "ms (log)"
set logscale y
set yrange [10:*]
set xrange [-0.6:{len(lat) - 0.4}]
set xtics rotate by -25
set key top left font ",8"
plot '{w / "lat.dat"}' using ($1-0.18):3:(0.34):xtic(2) with boxes lc rgb "#2ca02c" title "median", \\
     '' using ($1+0.18):4:(0.34) with boxes lc rgb "#9467bd" title "max", \\
     '' using ($1-0.18):3:(sprintf("%.0f",$3)) with labels offset 0,0.8 font ",8" notitle, \\
     '' using ($1+0.18):4:(sprintf("%.0f",$4)) with labels offset 0,0.8 font ",8" notitle, \\
     1000 with lines dt 2 lc rgb "black" notitle
unset logscale y
unset key
""")
    storm_panel = stormreport.chart_panel(res.get("storm"), w)
    if storm_panel:
        panels.append(storm_panel)
    if not panels:
        return None
    rows = (len(panels) + 1) // 2
    script = f"""set terminal pngcairo size 1500,{430 * rows} font "DejaVu Sans,10"
set output '{png}'
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set multiplot layout {rows},2 title {_q("FPS benchmark " + res["meta"]["timestamp"] + " (" + res["meta"]["mode"] + ", " + str(res["meta"]["agents"]) + " agents)")}
""" + "".join(panels) + "unset multiplot\n"
    (w / "chart.gp").write_text(script)
    p = subprocess.run(["gnuplot", str(w / "chart.gp")], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"gnuplot: {p.stderr[-1500:]}")
    return png
