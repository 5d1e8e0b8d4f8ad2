#!/usr/bin/python3
"""The FPS benchmark: 1000 agents through FPS on every route, against the limit of the machine
and against what users would run instead, in one run, all on loopback.

  (1) loadgen --direct to nginx                 (5) FPS tunnel route (local cloud side)
  (2) hand-written Squid: basic_ncsa_auth +     (6) FPS upstream route (customer Squid, Basic auth)
      dstdomain whitelist                       (7) FPS while the whitelist is edited every 2 s:
  (3) tinyproxy: BasicAuth + Filter                 live apply vs apply: reconfigure
  (4) FPS direct route                          (8) edit-to-enforced latency (bench/edit_latency.py)
                                                (9) CONNECT + TLS, and an 80/20 GET/CONNECT mix
                                                (10) ramp: 1000 agents connect at once
                                                (11) restart: SIGTERM FPS under load, start again
                                                (12) open loop: latency at fixed arrival rates
                                                (13) SMP: FPS `workers: 2` and `auto` vs the
                                                     hand-written Squid with `workers 2`
                                                (14) update storm: N agents fetch one package
                                                     at once (FPS cache, Squids, nginx)
                                                (15) the reports' price: FPS as shipped vs
                                                     FPS_REPORTS=off, GET 1 KiB in pairs

  bench/run_bench.py [--quick] [--agents N] [--duration S] [--reps N] [--workers N]
                     [--groups get1k,connect,get100k,ramp,restart,openloop,smp,edits,latency,storm,reports] [--no-profile] [--keep]
  bench/run_bench.py --quick --groups tunnel   # FPS direct vs tunnel only (appliance-side CPU)
  bench/run_bench.py --quick --groups storm --storm-agents 100   # (14) alone
  bench/run_bench.py --groups reports                            # (15) alone

Writes bench/results/<timestamp>.{json,md,png} and latest.{json,md,png}; prints the tables.
Everything it starts runs in its own process group and is stopped on exit, failure or Ctrl-C.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lib import common, loadrun, report, reportsprice, services, storm, stormreport  # noqa: E402
from lib.common import log  # noqa: E402
import edit_latency  # noqa: E402

RESULTS = HERE / "results"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke version (< 3 minutes)")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=None, help="seconds per scenario [10; quick 2]")
    ap.add_argument("--warmup", type=float, default=None, help="seconds excluded at the start [2; quick 0.5]")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of the GET 1 KiB scenarios [3; quick 1]")
    ap.add_argument("--workers", type=int, default=1, help="Squid workers, for FPS and the hand-written Squid [1]")
    ap.add_argument("--tunnel-rate", type=float, default=200, help="CONNECT tunnels recycled per second [200]")
    ap.add_argument("--edit-interval", type=float, default=2.0)
    ap.add_argument("--edits-duration", type=float, default=None, help="length of the (7) runs [20; quick 5]")
    ap.add_argument("--edit-entries", type=int, default=10, help="whitelist size in (7) [10]")
    ap.add_argument("--lat-entries", default="10,100000")
    ap.add_argument("--lat-edits", type=int, default=None, help="edits per configuration in (8) [20; quick 4]")
    ap.add_argument("--groups", default="get1k,connect,get100k,ramp,restart,openloop,smp,edits,latency,storm,reports",
                    help="comma-separated; 'tunnel' (not in the default) runs only FPS direct and FPS tunnel, "
                         "GET 1 KiB (--reps) and CONNECT, for the appliance-side CPU target")
    ap.add_argument("--openloop-fractions", default="0.5,0.8",
                    help="(12) open-loop rates as fractions of the closed-loop capacity measured just before")
    ap.add_argument("--reports-pairs", type=int, default=None,
                    help="(15) pairs of GET 1 KiB runs, reports on and off [16; quick 1]")
    ap.add_argument("--reports-duration", type=float, default=None,
                    help="(15) seconds per run of a pair [5; quick: --duration]")
    ap.add_argument("--no-callgrind", action="store_true",
                    help="(15) leave out Squid's instruction count under callgrind (about 3 minutes)")
    ap.add_argument("--storm-agents", type=int, default=None, help="(14) agents per storm [--agents; quick 200]")
    ap.add_argument("--storm-mb", type=float, default=None, help="(14) package size in MiB [16; quick 2]")
    ap.add_argument("--storm-targets", default=",".join(storm.names()), help="(14) targets, in this order")
    ap.add_argument("--storm-warm-targets", default="squid-rock,nginx-cache,fps-cache,fps-cache-auto",
                    help="(14) targets that also get the warm storm (the same URL again); the ones without a cache "
                         "keep nothing of it, their second storm is their first again")
    ap.add_argument("--storm-slow-targets", default="fps-cache,squid-rock,nginx-cache",
                    help="(14) targets that also get the slow-reader pair")
    ap.add_argument("--storm-slow-agents", type=int, default=40, help="(14) agents of the slow-reader pair [40]")
    ap.add_argument("--storm-slow-rate", type=float, default=262144, help="(14) the slow reader's bytes/s [256 KiB/s]")
    ap.add_argument("--storm-paced-targets", default="fps-nocache,fps-cache,squid-rock",
                    help="(14) targets that also get a storm with the origin paced")
    ap.add_argument("--storm-paced-rate", type=float, default=125e6,
                    help="(14) the paced origin's bytes/s, shared by its connections [125e6: 1 Gbps; 0: none]")
    ap.add_argument("--storm-timeout", type=float, default=120,
                    help="(14) an agent that gets no byte for this long fails [120]")
    ap.add_argument("--storm-fps-root", default=None,
                    help="(14) a checkout whose build/ and squid-templates/ the FPS targets use (read only) [this one]")
    ap.add_argument("--no-profile", action="store_true", help="skip the perf runs (full mode only anyway)")
    ap.add_argument("--settle", type=float, default=None, help="pause between runs [0.5]")
    ap.add_argument("--quiet-budget", type=float, default=None,
                    help="seconds in total the bench may wait, before runs, for other jobs on the box to calm "
                         "down (busy < half a core) [90; quick 0]")
    ap.add_argument("--rerun-budget", type=float, default=None,
                    help="seconds for re-running GET 1 KiB targets whose every run was disturbed [90; quick 0]")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--report", metavar="JSON", help="only re-render the Markdown and chart of an earlier run's JSON")
    ap.add_argument("--keep", action="store_true", help="keep the run directory under /tmp")
    a = ap.parse_args()
    q = a.quick
    a.duration = a.duration if a.duration is not None else (2 if q else 10)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if q else 2)
    a.reps = a.reps if a.reps is not None else (1 if q else 3)
    a.edits_duration = a.edits_duration if a.edits_duration is not None else (5 if q else 20)
    a.lat_edits = a.lat_edits if a.lat_edits is not None else (4 if q else 20)
    a.settle = a.settle if a.settle is not None else 0.5
    a.rerun_budget = a.rerun_budget if a.rerun_budget is not None else (0 if q else 90)
    a.quiet_budget = a.quiet_budget if a.quiet_budget is not None else (0 if q else 90)
    a.reports_pairs = a.reports_pairs if a.reports_pairs is not None else (1 if q else 16)
    a.reports_duration = a.reports_duration if a.reports_duration is not None else (a.duration if q else 5)
    a.groups = a.groups.split(",")
    a.storm_agents = a.storm_agents or (min(a.agents, 200) if q else a.agents)
    a.storm_mb = a.storm_mb or (2 if q else 16)
    a.storm_targets = storm.parse_list(a.storm_targets, storm.names())
    a.storm_slow_targets = storm.parse_list(a.storm_slow_targets, storm.names())
    a.storm_warm_targets = storm.parse_list(a.storm_warm_targets, storm.names())
    a.storm_paced_targets = storm.parse_list(a.storm_paced_targets, storm.names())
    return a


def versions():
    def first(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    return "; ".join([first(["squid", "-v"]).replace("Squid Cache: Version", "squid"),
                      stunnel_version(),
                      first(["nginx", "-v"]).replace("nginx version: ", ""), first(["tinyproxy", "-v"])])


def stunnel_version():
    p = subprocess.run(["stunnel4", "-version"], capture_output=True, text=True)
    for line in (p.stdout + p.stderr).splitlines():
        if line.startswith("stunnel"):
            return " ".join(line.split()[:2])
    return "stunnel ?"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", str(common.ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(common.ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:
        return "?"


def preflight():
    missing = [b for b in ("nginx", "squid", "stunnel4", "tinyproxy", "openssl", "curl", "unshare")
               if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    for f in (common.LOADGEN, common.BUILD / "fps-controller", common.BUILD / "fps-acl", common.BUILD / "fps-auth"):
        if not os.access(f, os.X_OK):
            missing.append(str(f))
    if missing:
        sys.exit(f"run_bench: missing: {', '.join(missing)} (make all; make -C bench all; "
                 f"apt-get install nginx-light tinyproxy gnuplot-nox squid stunnel4)")
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no chart (apt-get install gnuplot-nox)")


class Bench:
    def __init__(self, a):
        self.a = a
        self.ts = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(a.results)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.res = {
            "meta": {"timestamp": self.ts, "mode": "quick" if a.quick else "full", "agents": a.agents,
                     "duration": a.duration, "warmup": a.warmup, "reps": a.reps, "workers": a.workers,
                     "tunnel_rate": a.tunnel_rate, "host": platform.node(), "nproc": os.cpu_count(),
                     "kernel": platform.release(), "versions": versions(), "git": git_rev(),
                     "loadavg_start": common.loadavg(), "args": vars(a), "partial": True},
            "runs": [], "failures": [], "summary": {}, "live_edits": [], "smp": [], "edit_latency": [], "targets": [], "profile": {},
        }
        self.env = None
        self.fps = None
        self.fps_reconf = None
        self.origin_up = False  # the shared origin (nginx), started by setup() or by the first group needing it

    # ---- results -------------------------------------------------------------------------
    def save(self, final=False):
        r = self.res
        r["summary"] = report.aggregate(r["runs"])
        r["targets"] = report.target_checks(r["summary"], r["live_edits"], r["edit_latency"], r["runs"],
                                            r.get("availability"), r.get("smp")) + stormreport.checks(r.get("storm")) + \
            reportsprice.checks(r.get("reports_price"))
        r["meta"]["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        r["meta"]["loadavg_end"] = common.loadavg()
        r["meta"]["partial"] = not final
        md = report.markdown(r)
        (self.out / f"{self.ts}.json").write_text(json.dumps(r, indent=1))
        (self.out / f"{self.ts}.md").write_text(md)
        png = None
        try:
            with tempfile.TemporaryDirectory(prefix="fps-bench-chart-") as tmp:
                png = report.chart(r, self.out / f"{self.ts}.png", tmp)
        except Exception as e:
            log(f"chart: {e}")
        for ext in ("json", "md") + (("png",) if png else ()):
            shutil.copyfile(self.out / f"{self.ts}.{ext}", self.out / f"latest.{ext}")
        return md

    # ---- the world -----------------------------------------------------------------------
    def setup(self):
        a = self.a
        self.env = env = services.Env(keep=a.keep)
        log(f"run directory {env.dir}")
        env.start_nginx()
        self.origin_up = True
        env.start_hand_squid(a.agents, workers=a.workers)
        self.hand_port = env.hand_port
        # (2b): the same hand-written config listening as FPS does (8 SO_REUSEPORT sockets).
        env.start_hand_squid(a.agents, workers=a.workers, name="hand8", listen_sockets=8)
        self.hand8_port, env.hand_port = env.hand_port, self.hand_port
        env.start_tinyproxy(a.agents)
        env.start_customer_squid()
        env.start_cloud()
        self.fps = env.start_fps("main", workers=a.workers)
        # (4b): the same FPS with `apply: reconfigure`, alive as long as the others (a fresh
        # Squid answers ~10% faster than one that has served minutes of traffic, hand-written
        # ones included: started per run, (4b) was flattered). Its processes are "fpsr:".
        self.fps_reconf = env.start_fps("reconf", apply="reconfigure", workers=a.workers, role="fpsr:")
        # Every path answers before anything is measured.
        for host, code in ((services.ORIGIN, 200), (services.TUNNELED, 200), (services.UPSTREAM, 200),
                           (services.DENIED, 403)):
            self.fps.check(host, env.http_port, code)
            self.fps_reconf.check(host, env.http_port, code)
        user = common.agent_user(a.agents - 1)
        pw = common.agent_password(user, services.APIKEY)
        for name, port in (("hand-written squid", env.hand_port), ("hand-written squid, 8 sockets", self.hand8_port),
                           ("tinyproxy", env.tiny_port)):
            for host, code in ((services.ORIGIN, 200), (services.DENIED, 403)):
                got, _ = common.fpsharness.curl(f"http://{host}:{env.http_port}/1k", f"127.0.0.1:{port}", user=user,
                                                password=pw)
                if got != code:
                    raise RuntimeError(f"{name}: {host} answered {got}, expected {code}; see {env.dir}")
        log(f"world ready in {time.monotonic() - self.t0:.1f}s")

    def close_reconf(self):
        if self.fps_reconf is not None:
            self.fps_reconf.close()
            self.fps_reconf = None

    def target(self, t):
        env, f = self.env, self.fps
        return {"direct": (None, "127.0.0.1"), "squid": (env.hand_port, services.ORIGIN),
                "tinyproxy": (env.tiny_port, services.ORIGIN), "fps-direct": (f.port, services.ORIGIN),
                "fps-tunnel": (f.port, services.TUNNELED), "fps-upstream": (f.port, services.UPSTREAM),
                "squid-mix": (env.hand_port, services.ORIGIN), "fps-direct-mix": (f.port, services.ORIGIN),
                "squid-8": (self.hand8_port, services.ORIGIN),
                "fps-reconf": (self.fps_reconf.port if self.fps_reconf else None, services.ORIGIN)}[t]

    def wait_quiet(self):
        """Other jobs share this box: wait (within a total budget) until it is nearly idle."""
        waited = 0.0
        while self.a.quiet_budget > 0:
            b0 = common.box_busy()
            time.sleep(0.5)
            busy = (common.box_busy() - b0) / 0.5
            if busy < 0.5:
                break
            self.a.quiet_budget -= 0.5
            waited += 0.5
        if waited:
            log(f"waited {waited:.1f}s for the box to calm down (budget left {max(0, self.a.quiet_budget):.0f}s)")
        self.res["meta"]["quiet_waited_s"] = round(self.res["meta"].get("quiet_waited_s", 0) + waited, 1)

    def one(self, group, t, workload, rep, perf=None):
        a = self.a
        self.wait_quiet()
        port, host = self.target(t)
        label = f"{group}-{t}-r{rep}" if not perf else f"profile-{t}"
        fps = self.fps_reconf if t == "fps-reconf" else self.fps if t.startswith("fps-") else None
        marks = fps.log_marks() if fps else None
        rec = loadrun.run_load(self.env, label, port, host, workload, a.agents, a.duration, a.warmup,
                               a.tunnel_rate, perf=perf)
        rec.update(group=group, target=t, rep=rep)
        if fps and rec["status"].get("403"):
            rec["denied_403"] = fps.denials_since(marks)  # the evidence: which rule, what Squid logged
        time.sleep(a.settle)
        return rec

    # ---- scenario groups ---------------------------------------------------------------------
    def throughput(self):
        a = self.a
        main = ["direct", "squid", "tinyproxy", "fps-direct", "fps-tunnel", "fps-upstream"]
        # (2b) and (4b) isolate two costs: serving every agent of a connection storm (FPS's 8
        # listening sockets, given to the hand-written config) and sub-second live apply.
        wide = main[:2] + ["squid-8"] + main[2:4] + ["fps-reconf"] + main[4:]
        plan = []
        if "get1k" in a.groups:
            # Repetitions interleaved, so drift in the machine's load hits every target alike.
            plan += [("get1k", t, "get1k", rep) for rep in range(1, a.reps + 1) for t in wide]
        if "connect" in a.groups:
            # As many repetitions as GET: one CONNECT run each was too noisy to bisect on.
            plan += [("connect", t, "connect", rep) for rep in range(1, a.reps + 1) for t in wide]
            plan += [("connect", "squid-mix", "mix", 1), ("connect", "fps-direct-mix", "mix", 1)]
        if "get100k" in a.groups:
            plan += [("get100k", t, "get100k", 1) for t in main]
        if "tunnel" in a.groups:
            # Only the two routes the tunnel's appliance-side CPU target compares, interleaved
            # (a short A/B of tunnel settings): GET 1 KiB reps, then CONNECT reps.
            pair = ["fps-direct", "fps-tunnel"]
            plan += [(g, t, g, rep) for g in ("get1k", "connect") for rep in range(1, a.reps + 1) for t in pair]
        for group, t, wl, rep in plan:
            try:
                self.res["runs"].append(self.one(group, t, wl, rep))
            except Exception as e:  # one broken path must not cost the other results
                log(f"{group}/{t}: FAILED: {e}")
                self.res.setdefault("failures", []).append({"group": group, "target": t, "rep": rep,
                                                            "error": str(e)[-1000:]})
            self.save()
        # Re-run (within a budget) the GET 1 KiB targets that other jobs disturbed every time.
        budget = a.rerun_budget
        for _ in range(2):
            for g, t in [(g, t) for g in ("get1k", "connect") for t in wide]:
                rs = [r for r in self.res["runs"] if r["group"] == g and r["target"] == t]
                if not rs or any(report.disturbed(r) is False for r in rs):
                    continue
                if budget < a.duration + a.warmup:
                    break
                t0 = time.monotonic()
                log(f"{g}/{t}: every run was disturbed by other jobs: one more")
                try:
                    self.res["runs"].append(self.one(g, t, g, len(rs) + 1))
                except Exception as e:
                    log(f"{g}/{t}: FAILED: {e}")
                budget -= time.monotonic() - t0
                self.save()

    def profile(self):
        if self.a.quick or self.a.no_profile or not shutil.which("perf") or "get1k" not in self.a.groups:
            return
        d = self.env.dir / "perf"
        d.mkdir(exist_ok=True)
        for t in ("fps-direct", "fps-tunnel"):
            pf = d / f"{t}.data"
            try:
                rec = self.one("profile", t, "get1k", 0, perf=str(pf))
                roles = {int(k): v for k, v in rec.pop("perf_roles").items()}
                mine = set(rec.pop("perf_pids"))
                script = subprocess.run(["perf", "script", "-i", str(pf), "-F", "pid,comm"], capture_output=True,
                                        text=True).stdout
                by_role = {}
                for line in script.splitlines():
                    parts = line.split()
                    if len(parts) < 2:
                        continue
                    pid = int(parts[-1]) if parts[-1].isdigit() else int(parts[-2]) if parts[-2].isdigit() else None
                    comm = parts[0]
                    if pid not in mine:
                        continue
                    role = roles.get(pid) or ("loadgen" if comm == "loadgen" else comm)
                    by_role[role] = by_role.get(role, 0) + 1
                total = sum(by_role.values()) or 1
                share = "\n".join(f"{100 * n / total:6.1f}%  {r}" for r, n in
                                  sorted(by_role.items(), key=lambda kv: -kv[1]) if n / total >= 0.005)
                by_sym = subprocess.run(["perf", "report", "-i", str(pf), "--stdio", "--sort", "comm,dso,sym",
                                         "--pid", ",".join(map(str, sorted(mine))), "--percentage", "relative",
                                         "--percent-limit", "0.8"], capture_output=True, text=True).stdout
                keep = lambda s, n: "\n".join([l for l in s.splitlines() if l.strip() and not l.startswith("#")][:n])
                self.res["profile"][f"{report.TITLE[t]}, GET 1 KiB ({rec['ok_rps']:,.0f} req/s under perf)"] = (
                    "share of the CPU samples of the bench's processes, by process role:\n" + share +
                    "\n\ntop symbols (comm, object, symbol):\n" + keep(by_sym, 25))
            except Exception as e:
                log(f"profile {t}: {e}")
        self.save()

    # ---- (12) latency at a fixed arrival rate ------------------------------------------------
    def open_loop(self):
        """(12) per target: closed-loop capacity (GET 1 KiB), then loadgen --rate at each fraction
        of it: latency from each request's scheduled time, so a stall is not hidden by a slower
        arrival rate (closed-loop figures are). Hand-written Squid and FPS direct, interleaved."""
        a = self.a
        if self.fps is None:
            return
        out = self.res.setdefault("open_loop", [])
        fracs = [float(x) for x in a.openloop_fractions.split(",") if x]
        cap = {}
        for t in ("squid", "fps-direct"):
            try:
                rec = self.one("openloop", t, "get1k", 0)
            except Exception as e:
                log(f"openloop/{t} capacity: FAILED: {e}")
                self.res["failures"].append({"group": "openloop", "target": t, "rep": 0, "error": str(e)[-1000:]})
                continue
            rec.update(fraction=None, rate=None)
            cap[t] = rec["ok_rps"]
            out.append(rec)
            self.save()
        for frac in fracs:
            for t in ("squid", "fps-direct"):
                if not cap.get(t):
                    continue
                rate = round(cap[t] * frac)
                self.wait_quiet()
                port, host = self.target(t)
                try:
                    rec = loadrun.run_load(self.env, f"openloop-{t}-{frac:g}", port, host, "get1k", a.agents,
                                           a.duration, a.warmup, extra=["--rate", str(rate)])
                except Exception as e:
                    log(f"openloop/{t} at {frac:g}: FAILED: {e}")
                    self.res["failures"].append({"group": "openloop", "target": t, "rep": frac,
                                                 "error": str(e)[-1000:]})
                    continue
                rec.update(group="openloop", target=t, rep=frac, fraction=frac, rate=rate, capacity_rps=cap[t])
                out.append(rec)
                time.sleep(a.settle)
                self.save()

    # ---- availability: a connect storm, and a restart under load ----------------------------
    def availability(self):
        """(10) ramp: 1000 agents connect within ~50 ms (what every appliance restart causes),
        FPS beside the hand-written Squid, no warmup excluded; (11) restart: SIGTERM to FPS under
        load and the controller started again on the same state dir."""
        a = self.a
        out = self.res.setdefault("availability", [])
        if "ramp" in a.groups:
            dur = 6  # longer than loadgen's 5 s timeout, so an agent never served counts as failed
            for rep in range(1, (1 if a.quick else 2) + 1):
                for t in ("squid", "fps-direct"):
                    self.wait_quiet()
                    port, host = self.target(t)
                    try:
                        rec = loadrun.run_load(self.env, f"ramp-{t}-r{rep}", port, host, "get1k", a.agents, dur, 0)
                    except Exception as e:
                        log(f"ramp/{t}: FAILED: {e}")
                        self.res["failures"].append({"group": "ramp", "target": t, "rep": rep, "error": str(e)[-1000:]})
                        continue
                    rec.update(group="ramp", target=t, rep=rep)
                    out.append(rec)
                    time.sleep(a.settle)
                    self.save()
        if "restart" in a.groups and self.fps is not None:
            f = self.fps
            dur = 8 if a.quick else 20
            at = 3.0
            box = {}

            def during(stop):
                if stop.wait(a.warmup + at):
                    return {}
                box["lg"].send_signal(signal.SIGUSR1)  # mark: "every agent served again" counts from here
                st = f.restart()
                return {"restart_at_s": a.warmup + at, "squid_answering_after_ms": st["squid_answering"], "stages": st}
            self.wait_quiet()
            marks = f.log_marks()
            try:
                rec = loadrun.run_load(self.env, "restart-fps-direct", f.port, services.ORIGIN, "get1k", a.agents, dur,
                                       a.warmup, during=during, on_start=lambda lg: box.update(lg=lg))
                rec.update(group="restart", target="fps-direct", rep=1)
                # /proc accounting cannot follow a process tree that ends and is replaced (the old
                # one's CPU in the window is lost with it): not measured for this run.
                rec["cpu_s"], rec["rss_mb"] = {}, {}
                rec["cpu_note"] = "not measured across the restart"
                if rec["status"].get("403"):
                    rec["denied_403"] = f.denials_since(marks)
                out.append(rec)
            except Exception as e:
                log(f"restart: FAILED: {e}")
                self.res["failures"].append({"group": "restart", "target": "fps-direct", "rep": 1,
                                             "error": str(e)[-1000:]})
            self.save()
            # (11) handover and adoption: a second instance joins the port and the first drains;
            # the controller is SIGKILLed and the next one adopts its Squid (docs/operations.md).
            for target, act in (("fps-handover", f.handover), ("fps-sigkill-adopt", f.kill_and_adopt)):
                box2 = {}

                def during2(stop, act=act, box2=box2):
                    if stop.wait(a.warmup + at):
                        return {}
                    box2["lg"].send_signal(signal.SIGUSR1)
                    return {"restart_at_s": a.warmup + at, "stages": act()}
                self.wait_quiet()
                try:
                    rec = loadrun.run_load(self.env, f"restart-{target}", f.port, services.ORIGIN, "get1k", a.agents,
                                           dur, a.warmup, during=during2, on_start=lambda lg, b=box2: b.update(lg=lg))
                    rec.update(group="restart", target=target, rep=1)
                    rec["cpu_s"], rec["rss_mb"] = {}, {}
                    rec["cpu_note"] = "not measured across the handover"
                    out.append(rec)
                except Exception as e:
                    log(f"restart/{target}: FAILED: {e}")
                    self.res["failures"].append({"group": "restart", "target": target, "rep": 1,
                                                 "error": str(e)[-1000:]})
                self.save()

    # ---- (13) SMP: FPS with 2 workers and `auto` against the hand-written Squid with 2 ----------
    def smp(self):
        """GET 1 KiB and CONNECT+TLS, 1000 agents: the hand-written Squid with `workers 2`, FPS with
        `proxy.workers: 2` and with `auto` (one worker per core), one FPS at a time, each FPS run
        right after a run of the hand-written Squid (its baseline). Half-way through each run the helpers are counted per Squid kid from /proc."""
        a = self.a
        env = self.env
        if self.fps is not None:
            self.fps.close()  # one FPS at a time (the idle one would only take memory, but its
            self.fps = None   # "fps:" accounting slot is the one the SMP instance needs)
        self.close_reconf()
        out = self.res.setdefault("smp", [])
        main_port = env.hand_port
        try:
            hand = env.start_hand_squid(a.agents, workers=2, name="hand2")
        except Exception as e:
            log(f"smp: hand-written Squid with 2 workers: FAILED: {e}")
            self.res["failures"].append({"group": "smp", "target": "squid-smp2", "rep": 1, "error": str(e)[-1000:]})
            return
        hand_port, env.hand_port = env.hand_port, main_port
        try:
            # The third: `workers: 2` with `apply: reconfigure`, the cost of live apply alone under SMP.
            for workers, t, apply in ((2, "fps-smp2", "live"), ("auto", "fps-smpauto", "live"),
                                      (2, "fps-smp2-reconf", "reconfigure")):
                try:
                    f = env.start_fps(f"smp-{workers}-{apply}", workers=workers, routes=False, apply=apply)
                except Exception as e:
                    log(f"smp: FPS workers {workers}: FAILED: {e}")
                    self.res["failures"].append({"group": "smp", "target": t, "rep": 1, "error": str(e)[-1000:]})
                    continue
                try:
                    f.check(services.ORIGIN, env.http_port, 200)
                    # The hand-written Squid right before each FPS run: its same-run baseline (runs a
                    # minute apart differ by up to ~10% on this shared box; adjacent ones much less).
                    for wl in ("get1k", "connect"):
                        for tt, port, root, fps in (("squid-smp2", hand_port, hand.pid, None),
                                                    (t, f.port, f.proc.pid, f)):
                            self.smp_one(out, tt, wl, port, root, fps, workers if fps else 2)
                finally:
                    f.close()
        finally:
            env.procs.stop(hand)
            env.roots.pop("hand2:", None)

    def smp_one(self, out, t, wl, port, root, fps, workers):
        a = self.a
        self.wait_quiet()

        def during(stop):
            if stop.wait(a.warmup + a.duration / 2):
                return {}
            return {"helpers_per_kid": common.smp_helpers(root)}
        marks = fps.log_marks() if fps else None
        try:
            rec = loadrun.run_load(self.env, f"smp-{t}-{wl}", port, services.ORIGIN, wl, a.agents, a.duration,
                                   a.warmup, a.tunnel_rate, during=during)
        except Exception as e:
            log(f"smp/{t}/{wl}: FAILED: {e}")
            self.res["failures"].append({"group": "smp", "target": t, "rep": wl, "error": str(e)[-1000:]})
            return
        rec.update(group="smp", target=t, rep=1, workers=workers)
        rec["helpers_per_kid"] = (rec.pop("during", None) or {}).get("helpers_per_kid")
        if fps and rec["status"].get("403"):
            rec["denied_403"] = fps.denials_since(marks)
        log(f"smp/{t}/{wl}: helpers per kid {rec['helpers_per_kid']}")
        out.append(rec)
        time.sleep(a.settle)
        self.save()

    def live_edits(self):
        a = self.a
        if self.fps is not None:
            self.fps.close()  # one FPS at a time: the others would share the CPU
            self.fps = None
        self.close_reconf()
        for apply in ("live", "reconfigure"):
            base = services.base_whitelist(a.edit_entries)
            f = self.env.start_fps(f"edits-{apply}", apply=apply, whitelist=base, routes=False, workers=a.workers)
            try:
                f.check(services.ORIGIN, self.env.http_port, 200)
                f.check(services.EDITED, self.env.http_port, 403)

                def during(stop, f=f, base=base):
                    prober = edit_latency.Poller(f.port, services.ORIGIN, self.env.http_port, 0.005, keep_events=False)
                    prober.start()
                    n, present, times = 0, False, []
                    t_begin = time.monotonic()
                    if not stop.wait(a.warmup + a.edit_interval / 2):
                        while True:
                            present = not present
                            wl = base + [services.EDITED] if present else base
                            times.append(round(time.monotonic() - t_begin, 2))
                            services.kubelet_swap(f.config, f.config_files(wl), gen=n + 1)
                            n += 1
                            if stop.wait(a.edit_interval):
                                break
                    return {"edits": n, "edit_at_s": times, "prober": prober.finish()}

                if apply == "live":
                    # Control: the same instance and load without edits, so failures that load
                    # alone causes on this box are not blamed on the edits.
                    def control(stop, f=f):
                        prober = edit_latency.Poller(f.port, services.ORIGIN, self.env.http_port, 0.005,
                                                     keep_events=False)
                        prober.start()
                        stop.wait()
                        return {"edits": 0, "prober": prober.finish()}
                    self.wait_quiet()
                    marks = f.log_marks()
                    rec = loadrun.run_load(self.env, "edits-control", f.port, services.ORIGIN, "get1k", a.agents,
                                           a.edits_duration, a.warmup, during=control)
                    if rec["status"].get("403"):
                        rec["denied_403"] = f.denials_since(marks)
                    rec.update(group="edits", target="fps-control", apply="none (control)",
                               whitelist_entries=a.edit_entries)
                    self.res["live_edits"].append(rec)
                    time.sleep(a.settle)
                self.wait_quiet()
                marks = f.log_marks()
                rec = loadrun.run_load(self.env, f"edits-{apply}", f.port, services.ORIGIN, "get1k", a.agents,
                                       a.edits_duration, a.warmup, during=during)
                if rec["status"].get("403"):
                    rec["denied_403"] = f.denials_since(marks)
                rec.update(group="edits", target=f"fps-{apply}", apply=apply, whitelist_entries=a.edit_entries)
                self.res["live_edits"].append(rec)
            finally:
                f.close()
            time.sleep(a.settle)
            self.save()

    def latency(self):
        a = self.a
        if self.fps is not None:
            self.fps.close()
            self.fps = None
        self.close_reconf()
        for n in [int(x) for x in a.lat_entries.split(",")]:
            for apply in ("live", "reconfigure"):
                self.res["edit_latency"].append(edit_latency.measure(self.env, n, apply, edits=a.lat_edits))
                self.save()

    def reports_price(self):
        """(15) the price of the failures and traffic reports (lib/reportsprice.py): two FPS of
        their own, reports on and off, in pairs of GET 1 KiB runs."""
        a = self.a
        fps = {}
        try:
            if not self.origin_up:  # --groups reports (and storm) alone: no shared world
                self.env.start_nginx()
                self.origin_up = True
            fps = reportsprice.start(self.env)
            self.res["reports_price"] = reportsprice.measure(self.env, fps, ["get1k"], a.reports_pairs, a.agents,
                                                             a.reports_duration, a.warmup,
                                                             before_run=self.wait_quiet)
        except Exception as e:  # one broken group must not cost the other results
            log(f"reports: FAILED: {e}")
            self.res["failures"].append({"group": "reports", "target": "fps", "rep": 0, "error": str(e)[-1000:]})
        finally:
            for f in fps.values():
                f.close()
        self.save()
        rec = self.res.get("reports_price")
        if rec and not a.no_callgrind and not a.quick:
            try:
                self.wait_quiet()
                rec["instructions"] = reportsprice.instructions(self.env)
            except Exception as e:  # the throughput pairs stand without it
                log(f"reports: callgrind: FAILED: {e}")
                rec["instructions_error"] = str(e)[-300:]
            self.save()

    def storm(self):
        """(14) the update storm (lib/storm.py): one proxy at a time, each started for its storms."""
        if self.fps is not None:
            self.fps.close()
            self.fps = None
        self.close_reconf()
        storm.StormGroup(self.env, self.a, self.res.setdefault("storm", []), save=self.save,
                         wait_quiet=self.wait_quiet).run()

    def setup_storm_only(self):
        """--groups storm and/or reports alone: no shared world (the storm starts what it compares, one at
        a time; the reports group starts the origin and its two FPS)."""
        self.env = services.Env(keep=self.a.keep, cloud_netns=False)
        log(f"run directory {self.env.dir}")

    def run(self):
        try:
            if set(self.a.groups) <= {"storm", "reports"}:
                self.setup_storm_only()
            else:
                self.setup()
            self.throughput()
            self.profile()
            self.close_reconf()  # only (4b) used it
            self.availability()
            if "openloop" in self.a.groups:
                self.open_loop()
            if "smp" in self.a.groups:
                self.smp()
            if "edits" in self.a.groups:
                self.live_edits()
            if "latency" in self.a.groups:
                self.latency()
            if "reports" in self.a.groups:
                self.reports_price()
            if "storm" in self.a.groups:
                self.storm()
            ok = True
        finally:
            if self.env is not None:
                log("stopping everything the bench started")
                self.env.close()
        md = self.save(final=ok)
        print(md)
        if not self.a.quick and Path(self.a.results).resolve() == RESULTS.resolve() and set(self.a.groups) >= {
                "get1k", "ramp", "restart"}:
            if report.update_readme(common.ROOT / "README.md", self.res):
                log("README.md: benchmark block regenerated from this run")
        log(f"done in {time.monotonic() - self.t0:.0f}s: {self.out}/{self.ts}.md (and latest.md/json/png)")
        bad = report.whitelisted_403(self.res["runs"], self.res["live_edits"] + self.res.get("availability", []) +
                                     self.res.get("smp", []))  # not the reconfigure comparison (report.reconfiguring)
        if bad:
            log(f"FAILED: a whitelisted host was denied (403) in {', '.join(f'{k} ({v})' for k, v in bad.items())}")
            return 1
        return 0


def rereport(path):
    """Markdown, targets and chart again from a results JSON (e.g. after a report change)."""
    path = Path(path)
    res = json.loads(path.read_text())
    res["summary"] = report.aggregate(res["runs"])
    res["targets"] = report.target_checks(res["summary"], res["live_edits"], res["edit_latency"], res["runs"],
                                          res.get("availability"), res.get("smp")) + stormreport.checks(res.get("storm")) + \
        reportsprice.checks(res.get("reports_price"))
    md = report.markdown(res)
    path.write_text(json.dumps(res, indent=1))
    path.with_suffix(".md").write_text(md)
    with tempfile.TemporaryDirectory(prefix="fps-bench-chart-") as tmp:
        report.chart(res, path.with_suffix(".png"), tmp)
    print(md)
    return 0


def main():
    a = parse_args()
    if a.report:
        return rereport(a.report)
    preflight()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    b = Bench(a)
    try:
        return b.run()
    except KeyboardInterrupt:
        log("interrupted: partial results kept")
        b.save()
        return 130
    except Exception:
        if b.res["runs"] or b.res["edit_latency"]:
            b.save()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
