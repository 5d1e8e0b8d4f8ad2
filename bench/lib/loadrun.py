"""One loadgen run against one target, with the per-process CPU and peak RSS around it."""
import json
import os
import subprocess
import threading
import time

from . import common, services
from .common import LOADGEN, log

ERROR_CLASSES = ["connect_refused", "connect_error", "connect_timeout", "reset", "timeout", "eof",
                 "tls_handshake", "tls_error", "proxy_connect_refused", "malformed", "io_error"]


def proxy_us_per_answer(rec):
    """The measured proxy's CPU (its process tree, helpers included; not nginx, the cloud side
    or the customer proxy) per answer of one run, in µs: the A/B scripts' efficiency figure."""
    cpu = sum(v for k, v in rec["cpu_s"].items() if not k.startswith(("nginx", "cloud:", "cust:")))
    return cpu / max(1, rec["rps"] * rec["elapsed_s"]) * 1e6


def workload_args(env, workload, host, tunnel_rate):
    """loadgen arguments for a workload against host (a name, or 127.0.0.1 for --direct)."""
    http = f"http://{host}:{env.http_port}"
    https = f"https://{host}:{env.https_port}"
    if workload == "get1k":
        return ["--url", f"{http}/1k"]
    if workload == "get100k":
        return ["--url", f"{http}/100k"]
    if workload == "connect":
        return ["--mode", "connect", "--tunnel-rate", str(tunnel_rate), "--cafile", str(env.origin_ca),
                "--url", f"{https}/1k"]
    if workload == "mix":
        return ["--mix", "get=80,connect=20", "--tunnel-rate", str(tunnel_rate), "--cafile", str(env.origin_ca),
                "--url", f"{http}/1k", "--url", f"{https}/1k"]
    raise ValueError(workload)


def run_load(env, label, proxy_port, host, workload, agents, duration, warmup, tunnel_rate=200, during=None,
             outdir=None, perf=None, noauth=False, extra=(), on_start=None):
    """Runs loadgen for warmup+duration seconds; CPU and peak RSS are taken over the measured
    part (after the warmup). `during(stop_event)` runs in a thread meanwhile (edits, probers)
    and its return value lands in the record as "during". Returns a flat record."""
    argv = [str(LOADGEN), "--threads", "1", "--agents", str(agents), "--duration", str(duration + warmup),
            "--warmup", str(warmup), "--json", "-"]
    if proxy_port is None:
        argv += ["--direct"]
    else:
        argv += ["--proxy", f"127.0.0.1:{proxy_port}"] + (["--no-auth"] if noauth else ["--apikey", services.APIKEY])
    argv += workload_args(env, workload, host, tunnel_rate) + list(extra)
    t_start = time.time()
    la = common.loadavg()
    import tempfile
    fout, ferr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    lg = subprocess.Popen(argv, stdout=fout, stderr=ferr)
    if on_start is not None:
        on_start(lg)  # e.g. to signal it (SIGUSR1 marks a moment in its availability figures)
    watchdog = threading.Timer(duration + warmup + 120, lg.kill)
    watchdog.start()
    box, stop = {}, threading.Event()
    th = None
    if during is not None:
        th = threading.Thread(target=lambda: box.update(r=during(stop)), daemon=True)
        th.start()
    time.sleep(warmup)
    before = common.snapshot(env.roots)
    common.reset_peak_rss(before)
    lg_before = common.proc_ticks(lg.pid)
    busy_before = common.box_busy()
    irq_before = common.box_irq()
    mine = {pid for pid, _ in before} | {lg.pid, os.getpid()}
    others_before = common.others_snapshot(mine)
    perf_proc = None
    if perf:
        # System-wide (stunnel's per-connection threads appear after any attach); the report
        # keeps only this benchmark's processes, other jobs may share the box.
        perf_proc = subprocess.Popen(["perf", "record", "-a", "-F", "999", "-o", perf,
                                      "--", "sleep", str(max(1, duration - 1))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid = {}

    def sample():  # thread counts half-way (stunnel runs a thread per connection)
        if not stop.wait(duration / 2):
            s = common.snapshot(env.roots)
            mid.update({"threads_" + r: common.threads_of(s, r) for r in ("fps:stunnel", "cloud:stunnel", "tiny:tinyproxy")})
    ms = threading.Thread(target=sample, daemon=True)
    ms.start()
    try:
        # os.wait4 gives loadgen's own rusage (its CPU shares the 2 cores with the proxies).
        _, wstatus, ru = os.wait4(lg.pid, 0)
        lg.returncode = os.waitstatus_to_exitcode(wstatus)
    except BaseException:
        lg.kill()
        lg.wait()
        raise
    finally:
        stop.set()
        watchdog.cancel()
    busy = common.box_busy() - busy_before
    irq = common.box_irq() - irq_before
    after = common.snapshot(env.roots)
    mine |= {pid for pid, _ in after}
    others = common.others_delta({k: v for k, v in others_before.items() if k[0] not in mine},
                                 common.others_snapshot(mine))
    cpu = common.cpu_delta(before, after)
    rss = common.peak_rss(after)
    active = {k for k, v in cpu.items() if v >= 0.05}
    rss = {k: v for k, v in rss.items() if k in active}
    fout.seek(0)
    ferr.seek(0)
    out, err = fout.read().decode(), ferr.read().decode(errors="replace")
    fout.close()
    ferr.close()
    if perf:
        rec_pids = sorted({pid for pid, _ in before} | {pid for pid, _ in after} | {lg.pid})
    if th is not None:
        th.join(60)
    if perf_proc is not None:
        perf_proc.wait(timeout=60)
    if lg.returncode != 0 or not out.strip():
        raise RuntimeError(f"{label}: loadgen exited {lg.returncode}: {err[-2000:]}")
    r = json.loads(out)
    if outdir is not None:
        (outdir / f"{label}.loadgen.json").write_text(out)
    status = {k: v for k, v in r["status"].items()}
    ok = sum(v for k, v in status.items() if 200 <= int(k) < 300)
    non2xx = sum(v for k, v in status.items() if not 200 <= int(k) < 300)
    el = r["elapsed_s"] or 1
    lat = r["latency_us"]
    errors = {k: v for k, v in r["errors"].items() if v}
    rec = {
        "label": label, "workload": workload, "agents": agents, "duration_s": duration, "warmup_s": warmup,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)), "loadavg_before": la,
        "elapsed_s": el, "requests": r["requests"], "ok": ok, "ok_rps": round(ok / el, 1),
        "rps": r["requests_per_s"], "mb_s": r["mb_per_s"],
        "p50_ms": lat["p50"] / 1000, "p95_ms": lat["p95"] / 1000, "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p999"] / 1000, "max_ms": lat["max"] / 1000,
        "status": status, "non2xx": non2xx, "errors": errors, "errors_total": r["errors_total"],
        "failed": non2xx + r["errors_total"], "proxy_connect_status": r.get("proxy_connect_status") or {},
        "connections": r.get("connections"), "availability": r.get("availability"), "cpu_s": {k: v for k, v in cpu.items() if abs(v) >= 0.01},
        "rss_mb": rss, "loadgen_cpu_s": round(ru.ru_utime + ru.ru_stime - lg_before, 2),
        # The box's busy CPU in the window (user+nice+system+steal) and its interrupt time
        # (irq+softirq, mostly the bench's own loopback packets, accounted to no process).
        "box_busy_s": round(busy, 2), "box_irq_s": round(irq, 2), **mid,
    }
    # Other jobs: the CPU of every user-space process outside this benchmark's, counted per
    # process (the box's busy time minus ours mixed in the kernel's packet work).
    rec["other_cpu_s"] = round(others, 2)
    if "tunnel_setup" in r.get("latency_by_kind_us", {}):
        ts = r["latency_by_kind_us"]["tunnel_setup"]
        if ts.get("count"):
            rec["tunnel_setup_p50_ms"] = ts["p50"] / 1000
            rec["tunnel_setup_p99_ms"] = ts["p99"] / 1000
    if r.get("open_loop"):
        rec["open_loop"] = r["open_loop"]
    if th is not None:
        rec["during"] = box.get("r")
    if perf:
        rec["perf_pids"] = rec_pids
        rec["perf_roles"] = {str(pid): v[0] for (pid, _), v in after.items()}
    log(f"{label}: {rec['ok_rps']:.0f} 2xx/s, {rec['mb_s']:.1f} MB/s, p99 {rec['p99_ms']:.1f} ms, "
        f"failed {rec['failed']} {errors or ''} cpu {rec['cpu_s']} loadgen {rec['loadgen_cpu_s']} "
        f"other {rec['other_cpu_s']}")
    return rec
