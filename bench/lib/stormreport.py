"""(14) The update storm's figures, tables and target checks (pure functions over stormgen's JSON,
the origin's counters and the CPU accounting; lib/storm.py runs the storms)."""

TITLE = {
    "nginx-direct": "nginx serving the file itself (the box's limit)",
    "squid-defaults": "hand-written Squid, Squid's defaults (as the seed ran it)",
    "squid-rock": "hand-written Squid, collapsed_forwarding + rock",
    "nginx-cache": "nginx proxy_cache + proxy_cache_lock (lancache's way)",
    "fps-nocache": "FPS without `cache`",
    "fps-cache": "FPS with `cache`, `workers: 1`",
    "fps-cache-auto": "FPS with `cache`, `workers: auto`",
}
ORDER = list(TITLE)
PHASE = {"direct": "from files", "cold": "cold (new URL)", "warm": "warm (same URL: hits)",
         "paced": "cold, origin paced", "slow-base": "slow-reader baseline", "slow": "one slow reader"}
COPIES_GOAL = 1.05
HITS_VS_DIRECT_GOAL = 0.5
SLOW_GOAL = 1.5
FPS_CACHE = ("fps-cache", "fps-cache-auto")


def unsupported_reason(check_output):
    """What `fps-controller check` said about the storm's config, as one line for the tables."""
    text = (check_output or "").strip()
    for line in text.splitlines():
        if "unknown key 'cache'" in line:
            return "this build has no `cache` section (fps-controller check: unknown key 'cache')"
    first = text.splitlines()[0] if text else "fps-controller check failed"
    return f"fps-controller check: {first[:300]}"


def _pct(sorted_xs, p):
    if not sorted_xs:
        return None
    k = max(0, -(-len(sorted_xs) * p // 100) - 1)
    return sorted_xs[int(k)]


def summarize(js, o0, o1, size, cpu, prefix):
    """One storm's record: stormgen's JSON (js), the origin's counters before/after (o0, o1), the
    package size, CPU seconds per role over the storm (cpu) and the target's role prefix."""
    ag = js["agent"]
    res, done, nbytes, slow = ag["result"], ag["done_s"], ag["bytes"], ag["slow"]
    ok_done = sorted(d for d, r in zip(done, res) if r == "ok")
    others = sorted(d for d, r, s in zip(done, res, slow) if r == "ok" and not s)
    slow_done = [d for d, r, s in zip(done, res, slow) if s]
    body = sum(nbytes)
    origin_bytes = o1["body_bytes"] - o0["body_bytes"]
    last = ok_done[-1] if ok_done else None
    proxy_cpu = round(sum(v for k, v in cpu.items() if k.startswith(prefix)), 2)
    # A negative role: a process of the tree ended in the window without its parent's reaping it
    # (e.g. the tree's root was killed and its children moved to another parent): not a figure.
    cpu_lost = any(v < 0 for k, v in cpu.items() if k.startswith(prefix))
    failed = {k: v for k, v in js["results"].items() if k != "ok"}
    status = {k: v for k, v in js.get("status", {}).items() if k != "200"}
    for k, v in status.items():
        failed[f"http_{k}"] = v
    failed.pop("status", None)
    return {
        "agents": js["agents"], "slow": js.get("slow", 0), "slow_rate_bps": js.get("slow_rate"), "size": size, "ok": js["ok"], "failed": js["failed"],
        "results": failed,
        "origin_requests": o1["requests"] - o0["requests"], "origin_bytes": origin_bytes,
        "origin_copies": round(origin_bytes / size, 3) if size else None,
        "body_bytes": body,
        "mb_s": round(body / last / 1e6, 1) if last else 0.0,
        "time_to_all_s": round(last, 3) if last is not None else None,
        "p50_s": round(_pct(ok_done, 50), 3) if ok_done else None,
        "p99_s": round(_pct(ok_done, 99), 3) if ok_done else None,
        "others_last_s": round(others[-1], 3) if others else None,
        "others_p99_s": round(_pct(others, 99), 3) if others else None,
        "slow_done_s": round(max(slow_done), 3) if slow_done else None,
        "connect_s": js.get("connect_s"),
        "cpu_s": {k: v for k, v in cpu.items() if abs(v) >= 0.01},
        "proxy_cpu_s": proxy_cpu,
        "cpu_s_per_gb": round(proxy_cpu / (body / 1e9), 2) if body and not cpu_lost else None,
        "cpu_lost": cpu_lost,
    }


def _n(x, fmt="{:,.2f}"):
    return "-" if x is None else fmt.format(x)


def _classes(d):
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def _failed(r):
    return f"**{r['failed']:,}** ({_classes(r['results'])})" if r["failed"] else "0"


def _copies(r):
    c = r.get("origin_copies")
    if c is None:
        return "-"
    if r["phase"] == "direct":
        return "- (no origin)"
    bold = r["phase"] in ("cold", "paced") and r["target"] in FPS_CACHE and c > COPIES_GOAL
    return f"**{c:.2f}**" if bold else f"{c:.2f}"


def _by_target(recs):
    out = {}
    for r in recs or []:
        out.setdefault(r["target"], []).append(r)
    return out


def _find(recs, target, phase):
    return next((r for r in recs or [] if r.get("target") == target and r.get("phase") == phase and "error" not in r
                 and r.get("available", True)), None)


def tables(recs, meta=None):
    """The Markdown of the group: the storms, the paced origin, the slow reader."""
    if not recs:
        return []
    ok = [r for r in recs if "error" not in r and r.get("available", True) and "agents" in r]
    size = next((r["size"] for r in ok), None)
    agents = max((r["agents"] for r in ok if r["phase"] in ("cold", "warm", "direct")), default=None)
    lines = [f"### (14) Update storm: {_n(agents, '{:,}')} agents fetch the same "
             f"{_n(size / (1 << 20) if size else None, '{:g}')} MiB package at once", "",
             "Each agent opens its connection, then all send the same GET at the same instant and read the whole "
             "body; every body is checked (size and sha256: each URL is its own object). *origin copies*: bytes the "
             "origin sent / package size. *MB/s to agents*: body bytes delivered / time until the last agent had its "
             "whole file (*time to all*). *CPU s/GB*: the target's own processes (Squid and helpers, nginx, FPS) per GB "
             "delivered; *stormgen CPU s*: the client's own (it reads and hashes every byte, and on 2 cores it can be the limit). "
             "*cold*: a URL never fetched; *warm*: the same URL again (cache hits). One target runs at a time, "
             "started fresh. The box's 2 cores are shared with stormgen and the origin.", "",
             "| target | storm | origin copies | MB/s to agents | time to all s | p50 s | p99 s | CPU s/GB | stormgen CPU s "
             "| failed (by class) | other jobs CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    by = _by_target(recs)
    for t in ORDER + [t for t in by if t not in ORDER]:
        for r in by.get(t, []):
            title = TITLE.get(t, t)
            if r.get("available") is False:
                lines.append(f"| {title} | not available | - | - | - | - | - | - | - | {r.get('reason', '')} | - |")
                continue
            if "error" in r:
                lines.append(f"| {title} | {r['phase']}: FAILED | - | - | - | - | - | - | - | `{r['error'][:200]}` | - |")
                continue
            if r["phase"] not in ("direct", "cold", "warm"):
                continue
            lines.append(f"| {title} | {PHASE[r['phase']]} | {_copies(r)} | {_n(r['mb_s'], '{:,.0f}')} | "
                         f"{_n(r['time_to_all_s'])} | {_n(r['p50_s'])} | {_n(r['p99_s'])} | {_n(r['cpu_s_per_gb'])} | "
                         f"{_n(r.get('client_cpu_s'), '{:.1f}')} | {_failed(r)} | {_n(r.get('other_cpu_s'), '{:.1f}')} |")
    used = {}
    for r in ok:
        if r.get("fps_cache") is not None:
            used.setdefault(r["target"], r["fps_cache"])
    if used:
        lines.append("")
        lines.append("FPS's `cache` section per target: " + "; ".join(
            f"{TITLE.get(t, t)}: `" + ", ".join(f"{k}: {v}" for k, v in c.items()) + "`" for t, c in used.items()) + ".")
    lines.append("")
    coded = [r for r in ok if r.get("squid_codes")]
    if coded:
        lines += ["Squid's answers per storm (its access.log: result code and hierarchy; `HIER_DIRECT` is a "
                  "request Squid sent to the origin, a request that joined another's fetch is `TCP_MISS` with "
                  "`HIER_NONE`):", ""]
        for r in coded:
            lines.append(f"- {TITLE.get(r['target'], r['target'])}, {r['phase']}: " +
                         ", ".join(f"`{k}` {v:,}" for k, v in r["squid_codes"].items()))
        lines.append("")
    paced = [r for r in ok if r["phase"] == "paced"]
    if paced:
        rate = paced[0].get("origin_rate") or 0
        lines += [f"#### (14) The origin paced to {rate / 1e6:,.0f} MB/s (the customer's link, in the origin server "
                  "itself), cold storm", "",
                  "| target | origin copies | time to all s | p99 s | MB/s to agents | failed |",
                  "|---|---:|---:|---:|---:|---|"]
        for r in sorted(paced, key=lambda r: ORDER.index(r["target"]) if r["target"] in ORDER else 99):
            lines.append(f"| {TITLE.get(r['target'], r['target'])} | {_copies(r)} | {_n(r['time_to_all_s'])} | "
                         f"{_n(r['p99_s'])} | {_n(r['mb_s'], '{:,.0f}')} | {_failed(r)} |")
        lines.append("")
    slow_rows = []
    for t in ORDER + [t for t in by if t not in ORDER]:
        base, with_ = _find(recs, t, "slow-base"), _find(recs, t, "slow")
        if not base or not with_:
            continue
        ratio = slow_ratio(base, with_)
        rtxt = _n(ratio, "{:.2f}x")
        if ratio is not None and ratio > SLOW_GOAL and t in FPS_CACHE:
            rtxt = f"**{rtxt}**"
        slow_rows.append(f"| {TITLE.get(t, t)} | {_n(base['others_last_s'])} | {_n(with_['others_last_s'])} | {rtxt} | "
                         f"{_n(with_['slow_done_s'])} | {_copies(base)} / {_copies(with_)} | "
                         f"{_failed(base)} / {_failed(with_)} |")
    if slow_rows:
        r0 = next(r for r in ok if r["phase"] == "slow")
        k = r0["agents"] - r0.get("slow", 1)
        lines += [f"#### (14) A slow reader: one agent at {r0.get('slow_rate_bps', 0) / 1024:,.0f} KB/s beside "
                  f"{k} others on the same package (cold)", "",
                  f"The {k} others' time until the last of them had the whole file, alone and with the slow agent "
                  f"among them (a new URL each). Goal for FPS: ≤ {SLOW_GOAL}x.", "",
                  "| target | others, without: last done s | others, with the slow one: last done s | ratio | "
                  "slow agent done s | origin copies (without / with) | failed (without / with) |",
                  "|---|---:|---:|---:|---:|---|---|"] + slow_rows + [""]
    return lines


def slow_ratio(base, with_):
    if not base or not with_ or not base.get("others_last_s") or with_.get("others_last_s") is None:
        return None
    return with_["others_last_s"] / base["others_last_s"]


def checks(recs):
    """The issue's targets for the group: (name, met: True/False/None, measured)."""
    if not recs:
        return []
    out = []
    na = [r for r in recs if r.get("target") in FPS_CACHE and r.get("available") is False]
    cold = [r for t in FPS_CACHE for r in [_find(recs, t, "cold")] if r]
    if cold:
        out.append((f"update storm: origin copies ≤ {COPIES_GOAL} with the FPS cache (cold storm)",
                    all(r["origin_copies"] <= COPIES_GOAL for r in cold),
                    "; ".join(f"{TITLE[r['target']]}: {r['origin_copies']:.2f} copies for {r['agents']:,} agents "
                              f"({r['origin_requests']:,} origin requests)" for r in cold)))
    elif na or any(r.get("target") in FPS_CACHE for r in recs):
        why = na[0]["reason"] if na else "its storms failed (see the table)"
        out.append((f"update storm: origin copies ≤ {COPIES_GOAL} with the FPS cache (cold storm)", False,
                    f"not measured: {why}"))
    fps = [r for r in recs if str(r.get("target", "")).startswith("fps-") and "agents" in r]
    if fps:
        bad = [r for r in fps if r["failed"]]
        out.append(("update storm: 0 failed agents through FPS, every storm", not bad,
                    f"{sum(r['failed'] for r in fps):,} failed over {len(fps)} storms" +
                    (" (" + "; ".join(f"{r['label']}: {_classes(r['results'])}" for r in bad) + ")" if bad else "")))
    direct, hits = _find(recs, "nginx-direct", "direct"), _find(recs, "fps-cache-auto", "warm")
    name = f"update storm: cache hits ≥ {HITS_VS_DIRECT_GOAL}x nginx serving the file, FPS `workers: auto` (warm storm)"
    if direct and hits and direct["mb_s"]:
        r = hits["mb_s"] / direct["mb_s"]
        out.append((name, r >= HITS_VS_DIRECT_GOAL, f"{hits['mb_s']:,.0f} vs {direct['mb_s']:,.0f} MB/s = {r:.2f}x"))
    elif direct and any(r.get("target") == "fps-cache-auto" for r in recs):
        why = next((r.get("reason") or r.get("error") for r in recs if r.get("target") == "fps-cache-auto"
                    and ("reason" in r or "error" in r)), "no warm storm")
        out.append((name, False, f"not measured: {why}"))
    for t in FPS_CACHE:
        base, with_ = _find(recs, t, "slow-base"), _find(recs, t, "slow")
        ratio = slow_ratio(base, with_)
        if ratio is not None:
            out.append((f"slow reader: the others ≤ {SLOW_GOAL}x their time without it, {TITLE[t]}",
                        ratio <= SLOW_GOAL and not with_["failed"],
                        f"{with_['others_last_s']:.2f} vs {base['others_last_s']:.2f} s = {ratio:.2f}x; the slow agent "
                        f"done after {_n(with_['slow_done_s'])} s"))
    paced = {r["target"]: r for r in recs if r.get("phase") == "paced" and "agents" in r}
    if paced.get("fps-nocache") and any(paced.get(t) for t in FPS_CACHE):
        c = next(paced[t] for t in FPS_CACHE if paced.get(t))
        nc = paced["fps-nocache"]
        out.append((f"origin paced to {c.get('origin_rate', 0) / 1e6:,.0f} MB/s: time to all, FPS with vs without "
                    "the cache", None,
                    f"{_n(c['time_to_all_s'])} s ({c['origin_copies']:.2f} copies) vs {_n(nc['time_to_all_s'])} s "
                    f"({nc['origin_copies']:.2f} copies)"))
    return out


SHORT = {"nginx-direct": "nginx file", "squid-defaults": "Squid defaults", "squid-rock": "Squid rock",
         "nginx-cache": "nginx cache", "fps-nocache": "FPS no cache", "fps-cache": "FPS cache",
         "fps-cache-auto": "FPS cache auto"}


def chart_panel(recs, workdir):
    """A gnuplot panel for report.chart: origin copies of each target's cold storm (log scale),
    or None without storms."""
    rows = [r for t in ORDER for r in [_find(recs, t, "cold")] if r]
    if not rows:
        return None
    dat = f"{workdir}/storm.dat"
    with open(dat, "w") as f:
        for i, r in enumerate(rows):
            c = max(r["origin_copies"], 0.01)
            lab = f"{r['origin_copies']:.2f}" + (f"\\n{r['failed']:,} failed" if r["failed"] else "")
            f.write(f'{i} "{SHORT.get(r["target"], r["target"])}" {c} "{lab}" {1 if r["failed"] else 0}\n')
    return f"""
set title "(14) Update storm, {rows[0]['agents']:,} agents at once: origin copies (cold; goal <= {COPIES_GOAL})"
set ylabel "copies (log)"
set logscale y
set yrange [0.5:{max(r["origin_copies"] for r in rows) * 4 + 2:g}]
set xrange [-0.6:{len(rows) - 0.4}]
set xtics rotate by -25
plot '{dat}' using 1:3:($5 > 0 ? 0xd62728 : 0x1f77b4):xtic(2) with boxes lc rgb variable notitle, \\
     '' using 1:3:4 with labels offset 0,1.3 font ",8" notitle, \\
     {COPIES_GOAL} with lines dt 2 lc rgb "black" notitle
unset logscale y
"""
