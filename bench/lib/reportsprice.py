"""(15) The price of the failures and traffic reports (issue 26: <= 3% of GET 1 KiB throughput
against the same FPS with the reports off).

Two FPS instances side by side, the same build and the same fps.yaml: one as shipped (squid.conf's
second access log, detail.log, for failed answers, CONNECT tunnels and requests with a body; the
controller reading access.log and detail.log; fps-auth writing refusal reasons), one started with
FPS_REPORTS=off (none of it). Two measurements:

- Throughput, in pairs of short closed-loop runs, alternating which of the two goes first. This
  box drifts: the same Squid's CPU per answer moved between 160 and 260 us within a minute on the
  quiet box, in slow phases of tens of seconds, so a figure from one run says little about the
  next. A pair's two runs are seconds apart and mostly see the same phase; the verdict is the
  median of the pairs' on/off ratios, with its distribution-free 95% confidence interval (order
  statistics of the binomial), so a reader sees how well the pairs resolve the 3% bound.
  Running both at the same moment was tried and is worse: two CPU-bound Squids on 2 cores moved
  an A/A ratio between 0.91 and 1.37.
- Squid's instructions per answer, counted by callgrind (valgrind), on and off. Instruction
  counts do not drift with the box: they name what the detail log costs Squid itself, the part
  of the price that bounds throughput when Squid is the bottleneck. Each variant runs twice, a
  short run and a long one of the same load; the difference between the two cancels Squid's
  start and stop.

Used by run_bench.py (group "reports") and by ab_reports.py (the same pairs, more kinds of load).
"""
import math
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from . import loadrun, services
from .common import log

VARIANTS = {"on": "fps:", "off": "fpsoff:"}  # variant -> role prefix of its processes
OFF_ENV = {"FPS_REPORTS": "off"}  # the controller's environment for the "off" variant
BOUND = 0.03  # the issue's bound on the throughput lost to the reports
VALGRIND_SQUID = Path(__file__).resolve().parents[1] / "valgrind-squid.sh"


def cpu_us(rec, role):
    """CPU of one variant's process tree (its role prefix) per answer, in µs."""
    cpu = sum(v for k, v in rec["cpu_s"].items() if k.startswith(role))
    return cpu / max(1, rec["rps"] * rec["elapsed_s"]) * 1e6


def median_ci(xs, conf=0.95):
    """The median of xs and a distribution-free confidence interval for it: the k-th smallest and
    k-th largest value, k the largest with P(Binomial(n, 1/2) < k) <= (1 - conf) / 2. None for
    the interval when n is too small to give one at this confidence (n < 6 at 95%)."""
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return None, None
    tail, k, acc = (1 - conf) / 2, 0, 0.0
    while k < n:
        p = math.comb(n, k) / 2 ** n
        if acc + p > tail:
            break
        acc += p
        k += 1
    return statistics.median(s), ((s[k - 1], s[n - k]) if k >= 1 else None)


def start(env, name="reports"):
    """The two instances: reports on (as shipped) and off. Routes are left out: the price is
    the log lines and their reader, the same on every route."""
    on = env.start_fps(name=f"{name}-on", routes=False, role="fps:")
    off = env.start_fps(name=f"{name}-off", routes=False, extra_env=OFF_ENV, role="fpsoff:")
    if "detail.log" not in on.active_conf() or "detail.log" in off.active_conf():
        raise RuntimeError("reports on/off: the two squid.conf files do not differ in their detail log")
    return {"on": on, "off": off}


def measure(env, fps, kinds, runs, agents, duration, warmup, tunnel_rate=200, before_run=None):
    """runs pairs per kind of load (get1k, connect, denied), each pair on then off or off then
    on in turn. Returns {"runs": [records], kind: {medians and ratios}}."""
    out = {"runs": []}
    for i in range(runs):
        for k in kinds:
            for v in (("on", "off") if i % 2 == 0 else ("off", "on")):
                if before_run is not None:
                    before_run()
                host = services.DENIED if k == "denied" else services.ORIGIN
                r = loadrun.run_load(env, f"reports-{v}-{k}-{i}", fps[v].port, host,
                                     "get1k" if k == "denied" else k, agents, duration, warmup,
                                     tunnel_rate=tunnel_rate)
                r.update(group="reports", target=f"reports-{v}", kind=k, pair=i, variant=v,
                         cpu_us_per_answer=round(cpu_us(r, VARIANTS[v]), 1))
                out["runs"].append(r)
                log(f"reports {v:3} {k:7} {r['rps']:9.0f} answers/s  {r['cpu_us_per_answer']:7.1f} us CPU/answer  "
                    f"status {r['status']}  other jobs {r['other_cpu_s']} s")
    for k in kinds:
        out[k] = summarize(out["runs"], k)
    return out


def summarize(runs, k):
    """The figures of one kind of load from its run records: the medians of each variant, and the
    median of the pairs' on/off ratios (throughput and CPU per answer) with its 95% interval."""
    med, pairs = {}, []
    for v in VARIANTS:
        rs = [r for r in runs if r["kind"] == k and r["variant"] == v]
        med[v] = (statistics.median(r["rps"] for r in rs), statistics.median(r["cpu_us_per_answer"] for r in rs))
    for i in sorted({r["pair"] for r in runs if r["kind"] == k}):
        by = {r["variant"]: r for r in runs if r["kind"] == k and r["pair"] == i}
        if set(by) == set(VARIANTS) and by["off"]["rps"] and by["off"]["cpu_us_per_answer"]:
            pairs.append((by["on"]["rps"] / by["off"]["rps"],
                          by["on"]["cpu_us_per_answer"] / by["off"]["cpu_us_per_answer"]))
    ratio, ci = median_ci([p[0] for p in pairs])
    return {"rps_on": round(med["on"][0], 1), "rps_off": round(med["off"][0], 1),
            "rps_ratio": ratio, "rps_ratio_ci95": ci, "pair_ratios": [round(p[0], 4) for p in pairs],
            "cpu_us_on": med["on"][1], "cpu_us_off": med["off"][1],
            "cpu_ratio": median_ci([p[1] for p in pairs])[0], "pairs": len(pairs)}


# ---- Squid's instructions per answer (callgrind) ------------------------------------------

def callgrind_total(path):
    """The Ir total a callgrind output file records (its "totals:" or "summary:" line)."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line (did Squid exit cleanly?)")


def callgrind_inclusive(path, function):
    """Inclusive Ir of the function whose name starts with `function` (callgrind_annotate)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    best = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*?:" + re.escape(function), line)
        if m:
            best = max(best, int(m.group(1).replace(",", "")))
    return best


def instructions(env, agents=50, long_s=20, warm_s=5):
    """Squid's instructions per answer (GET 1 KiB) with the reports on and off, counted by
    callgrind. Each variant runs twice, from start to a clean stop, under one loadgen run of
    warm_s (short) or warm_s + long_s (long). Per answer: (Ir long - Ir short) /
    (answers long - answers short), which cancels start and stop. Also the part spent in
    accessLogLogTo (the access logs and their ACLs), where the detail log's price is."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (make bench installs it)")
    d = Path(tempfile.mkdtemp(prefix="fps-bench-callgrind-"))
    os.chmod(d, 0o755)  # Squid's effective user writes the file at exit (valgrind-squid.sh)
    res = {}
    try:
        for v in VARIANTS:
            got = {}
            for phase, extra in (("short", 0), ("long", long_s)):
                tag = d / f"{v}-{phase}"
                e = {"FPS_SQUID_BIN": str(VALGRIND_SQUID), "FPS_CALLGRIND_OUT": str(tag),
                     **(OFF_ENV if v == "off" else {})}
                f = env.start_fps(name=f"callgrind-{v}", routes=False, extra_env=e, role=f"cg{v}:", wait=300)
                try:
                    if ("detail.log" in f.active_conf()) != (v == "on"):
                        raise RuntimeError(f"callgrind: the reports-{v} Squid's detail log is not as it should be")
                    r = loadrun.run_load(env, f"callgrind-{v}-{phase}", f.port, services.ORIGIN, "get1k", agents,
                                         warm_s + extra, 0)
                finally:
                    f.close()  # a clean stop: callgrind writes its file when Squid exits
                # loadgen's answers: both runs are one loadgen run each, so the requests cut off at
                # its end (as many in both) cancel in the difference
                answers = r["ok"]
                files = sorted(d.glob(f"{v}-{phase}.*"))
                # the serving Squid's file: valgrind-squid.sh leaves -k parse and signals plain
                if len(files) != 1:
                    raise RuntimeError(f"callgrind: {len(files)} output files for {v} {phase}")
                got[phase] = (callgrind_total(files[0]), callgrind_inclusive(files[0], "accessLogLogTo("), answers)
            (ir_s, log_s, a_s), (ir_l, log_l, a_l) = got["short"], got["long"]
            n = a_l - a_s
            if n <= 0:
                raise RuntimeError(f"callgrind: the long run of {v} answered no more than the short one")
            res[v] = {"ir_per_answer": round((ir_l - ir_s) / n), "access_log_ir_per_answer": round((log_l - log_s) / n),
                      "answers": n}
            log(f"reports callgrind {v:3}: {res[v]['ir_per_answer']:,} instructions per answer in Squid, "
                f"{res[v]['access_log_ir_per_answer']:,} of them in its access logs ({n} answers)")
        res["ir_ratio"] = res["on"]["ir_per_answer"] / res["off"]["ir_per_answer"]
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- the report -----------------------------------------------------------------------------

def _ci(s):
    ci = s.get("rps_ratio_ci95")
    return f", 95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else ""


def summary_line(k, s):
    return (f"{k:7}: answers/s on/off {s['rps_ratio']:.3f}{_ci(s)} (median of {s['pairs']} pairs' ratios; "
            f"medians on {s['rps_on']:.0f} off {s['rps_off']:.0f}); CPU per answer on/off {s['cpu_ratio']:.3f} "
            f"(on {s['cpu_us_on']:.1f} off {s['cpu_us_off']:.1f} us)")


def instructions_line(ins):
    return (f"Squid's instructions per answer (callgrind): on {ins['on']['ir_per_answer']:,} off "
            f"{ins['off']['ir_per_answer']:,} (on/off {ins['ir_ratio']:.4f}); in its access logs on "
            f"{ins['on']['access_log_ir_per_answer']:,} off {ins['off']['access_log_ir_per_answer']:,}")


def checks(rec):
    """The issue's target: (name, met: True/False/None, measured)."""
    s = (rec or {}).get("get1k")
    if not s or not s.get("rps_ratio"):
        return []
    lost = 1 - s["rps_ratio"]
    how = f"on/off {s['rps_ratio']:.3f} answers/s{_ci(s)}, median of {s['pairs']} pairs; CPU per answer on/off {s['cpu_ratio']:.3f}"
    if rec.get("instructions"):
        how += f"; Squid's instructions per answer on/off {rec['instructions']['ir_ratio']:.4f} (callgrind)"
    return [(f"(15) the failures and traffic reports cost <= {BOUND:.0%} of GET 1 KiB throughput (vs reports off)",
             lost <= BOUND + 1e-9,  # 4850 vs 5000 is exactly 3%, not 3% and a rounding error
             how)]


def table(rec):
    """Markdown lines of (15): every pair, then the medians and the instruction counts."""
    if not rec or not rec.get("runs"):
        return []
    lines = ["### (15) The reports' price: FPS as shipped vs `FPS_REPORTS=off`", "",
             "Pairs of runs, alternating which goes first; the same build, fps.yaml and load. *CPU µs/answer*: "
             "the instance's whole process tree (Squid, helpers, the controller reading the logs) per answer. "
             "The verdict is the median of the pairs' on/off ratios; the interval is its distribution-free 95% "
             "confidence interval.", "",
             "| load | pair | reports | answers/s | CPU µs/answer | statuses | other jobs CPU s |",
             "|---|---:|---|---:|---:|---|---:|"]
    for r in rec["runs"]:
        st = ", ".join(f"{c} {n:,}" for c, n in sorted(r["status"].items()))
        lines.append(f"| {r['kind']} | {r['pair'] + 1} | {r['variant']} | {r['rps']:,.0f} | "
                     f"{r['cpu_us_per_answer']:.1f} | {st} | {r['other_cpu_s']} |")
    lines.append("")
    for k, s in rec.items():
        if k not in ("runs", "instructions") and isinstance(s, dict) and s.get("rps_ratio"):
            lines.append(f"- {summary_line(k, s)}.")
            if s.get("pair_ratios"):
                lines.append(f"  Pairs' on/off ratios: {', '.join(f'{x:.3f}' for x in s['pair_ratios'])}.")
    if rec.get("instructions"):
        lines.append(f"- {instructions_line(rec['instructions'])}.")
    elif rec.get("instructions_error"):
        lines.append(f"- Squid's instructions per answer: not measured ({rec['instructions_error']}).")
    lines.append("")
    return lines
