"""(14) The update storm: N agents fetch the same package at once (issue 24's benchmark group).

One target at a time (each fresh, started for its storms and stopped after them): nginx serving the
file itself (the box's limit), the hand-written Squid with Squid's defaults (as the seed ran it), the
hand-written Squid with collapsed forwarding and a rock store, nginx `proxy_cache` with
`proxy_cache_lock on` (lancache's configuration), FPS without a `cache` section, FPS with one
(`proxy.workers` 1 and auto). Per target: a cold storm (a URL never fetched), a warm one (the same
URL again: hits), and for some targets a slow reader pair and a storm with the origin paced to the
customer's link. The origin (bench/storm_origin.py) counts the bytes it sends; stormgen (bench/
stormgen.c) is the agents. Figures and checks: lib/stormreport.py."""
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import common, services, stormreport
from .common import BUILD, ROOT, free_port, log, max_fds, sh, wait_port

STORMGEN = BUILD / "bench" / "stormgen"
ORIGIN_PY = ROOT / "bench" / "storm_origin.py"
HOST = services.ORIGIN  # whitelisted everywhere; 127.0.0.1 in the bench's hosts file
PKG_NAME = "package.bin"
WARM_AFTER_S = 2.0

# The targets, in the order they run; PREFIX: the CPU-accounting prefix of each one's process tree.
TARGETS = [
    ("nginx-direct", "nginx serving the file itself (the box's limit)"),
    ("squid-defaults", "hand-written Squid, Squid's defaults"),
    ("squid-rock", "hand-written Squid, collapsed_forwarding + rock store"),
    ("nginx-cache", "nginx proxy_cache + proxy_cache_lock (lancache's way)"),
    ("fps-nocache", "FPS without `cache`"),
    ("fps-cache", "FPS with `cache`, `proxy.workers: 1`"),
    ("fps-cache-auto", "FPS with `cache`, `proxy.workers: auto`"),
]
PREFIX = {"nginx-direct": "stormnginx:", "nginx-cache": "stormnginx:", "squid-defaults": "stormsq:",
          "squid-rock": "stormsq:", "fps-nocache": "fps:", "fps-cache": "fps:", "fps-cache-auto": "fps:"}


def package_bytes(size, seed=24):
    """The package: pseudo-random bytes (incompressible, the same in every run of a size)."""
    return random.Random(seed).randbytes(size)


def sha_for(base, pkg_id):
    import storm_origin  # bench/ is on sys.path (run_bench.py, the tests)
    return hashlib.sha256(storm_origin.body_for(base, pkg_id)).hexdigest()


class StormOrigin:
    """bench/storm_origin.py in its own process (its CPU is not the proxies')."""

    def __init__(self, env, size):
        self.env = env
        self.dir = env.dir / "storm-origin"
        self.dir.mkdir(exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.size = size
        self.base = package_bytes(size)
        self.file = self.dir / PKG_NAME
        self.file.write_bytes(self.base)
        os.chmod(self.file, 0o644)
        self.port = free_port()
        self.proc = env.procs.spawn("storm-origin", ["/usr/bin/python3", str(ORIGIN_PY), "--port", str(self.port),
                                                     "--file", str(self.file)])
        wait_port(self.port, self.proc, what="storm origin")

    def _get(self, path):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return r.read()

    def stats(self):
        return json.loads(self._get("/__stats"))

    def set_rate(self, bps):
        self._get(f"/__rate/{int(bps)}")

    def url(self, pkg_id, host=HOST):
        return f"http://{host}:{self.port}/pkg/{pkg_id}/{PKG_NAME}"

    def sha(self, pkg_id):
        return sha_for(self.base, pkg_id)

    def close(self):
        self.env.procs.stop(self.proc)


# ---- the targets ---------------------------------------------------------------------------------

def nginx_conf(d, www, direct_port, cache_port, origin_port, cache_mb):
    """nginx for (14): the package as files on direct_port; on cache_port a caching proxy to the
    origin as lancache configures one (slice 1m, proxy_cache_lock with a 1 h timeout)."""
    return f"""
worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {max_fds()};
events {{ worker_connections 16000; }}
http {{
  access_log {d}/access.log;
  sendfile on;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=storm:16m max_size={cache_mb}m inactive=1d use_temp_path=off;
  server {{
    listen 127.0.0.1:{direct_port} backlog=4096;
    root {www};
  }}
  server {{
    listen 127.0.0.1:{cache_port} backlog=4096;
    location / {{
      slice 1m;
      proxy_cache storm;
      proxy_cache_key $host$uri$slice_range;
      proxy_set_header Range $slice_range;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 1h;
      proxy_cache_lock_age 1h;
      proxy_max_temp_file_size 40960m;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://127.0.0.1:{origin_port};
    }}
  }}
}}
"""


class Nginx:
    """One nginx with two servers: the package as files (direct) and a caching proxy to the origin
    configured as lancache does (slice 1m, proxy_cache_lock on with a 1 h timeout: one origin fetch
    per slice, everyone else waits for it)."""

    def __init__(self, env, origin, ids, name="storm-nginx"):
        d = self.dir = env.dir / name
        (d / "cache").mkdir(parents=True)
        www = d / "www"
        import storm_origin
        for pkg_id in ids:  # the files nginx serves itself: exactly the origin's bodies
            p = www / "pkg" / pkg_id
            p.mkdir(parents=True)
            (p / PKG_NAME).write_bytes(storm_origin.body_for(origin.base, pkg_id))
        for p in [d, *d.rglob("*")]:
            os.chmod(p, 0o777 if p.is_dir() else 0o644)
        self.direct_port, self.cache_port = free_port(), free_port()
        (d / "nginx.conf").write_text(nginx_conf(d, www, self.direct_port, self.cache_port, origin.port,
                                                 max(1024, 8 * origin.size >> 20)))
        self.proc = env.procs.spawn(name, ["nginx", "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")])
        wait_port(self.direct_port, self.proc, what="storm nginx")
        wait_port(self.cache_port, self.proc, what="storm nginx cache")
        env.roots["stormnginx:"] = self.proc.pid
        self.env = env

    def close(self):
        self.env.procs.stop(self.proc)
        self.env.roots.pop("stormnginx:", None)


def hand_squid_conf(env, d, port, origin_port, rock_mb=None, max_object_mb=None):
    """The hand-written Squid of (2) (Basic auth from an htpasswd, a dstdomain whitelist) with
    Squid's own cache defaults (no `cache deny all`), or with what an admin adds for an update
    cache: collapsed forwarding, a rock store, whole-object fetches for Range requests, and no
    abort of a fetch its client left. `maximum_object_size` must come before `cache_dir`: it is
    the default of that cache_dir's max-size when the line is parsed (docs/squid-facts.md)."""
    base = env.squid_base(d, port, "storm-squid").replace("cache deny all\n", "")
    cache = ""
    if rock_mb:
        cache = f"""collapsed_forwarding on
maximum_object_size {max_object_mb} MB
cache_dir rock {d}/rock {rock_mb}
range_offset_limit none
quick_abort_min -1 KB
"""
    return f"""# The hand-written Squid of the update storm: Basic auth, a dstdomain whitelist{', an update cache' if cache else ", Squid's cache defaults"}.
{base}
{cache}
auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd
auth_param basic children 10 startup=2 idle=1
auth_param basic realm proxy
auth_param basic credentialsttl 300 seconds
auth_param basic casesensitive on
acl users proxy_auth REQUIRED
acl Safe_ports port 80 443 {origin_port}
acl whitelist dstdomain -n "{d}/whitelist.txt"
http_access deny !users
http_access deny !Safe_ports
http_access deny CONNECT
http_access deny !whitelist
http_access allow users
http_access deny all
"""


class HandSquid:
    def __init__(self, env, name, agents, origin, rock=False):
        d = self.dir = env.dir / name
        d.mkdir()
        os.chmod(d, 0o777)
        creds = common.agent_creds(agents, services.APIKEY)
        hashed = sh("openssl", "passwd", "-apr1", "-stdin", input="".join(p + "\n" for _, p in creds)).stdout.split()
        (d / "htpasswd").write_text("".join(f"{u}:{h}\n" for (u, _), h in zip(creds, hashed)))
        (d / "whitelist.txt").write_text("".join(n + "\n" for n in services.base_whitelist()))
        self.port = free_port()
        mb = max(1, origin.size >> 20)
        conf = d / "squid.conf"
        conf.write_text(hand_squid_conf(env, d, self.port, origin.port, rock_mb=max(1024, 8 * mb) if rock else None,
                                        max_object_mb=max(64, 2 * mb)))
        if rock:
            sh("squid", "-N", "-z", "-f", str(conf))  # creates the rock db, then exits
        self.proc = env.procs.spawn(name, ["squid", "-N", "-f", str(conf)])
        wait_port(self.port, self.proc, what=name)
        env.roots["stormsq:"] = self.proc.pid
        self.env = env
        self.cache_log = d / "cache.log"

    def close(self):
        self.env.procs.stop(self.proc)
        self.env.roots.pop("stormsq:", None)


class StormFps(services.FpsInstance):
    """An FPS for the storm: no routes, the storm origin's port allowed, and an optional `cache`
    section as the issue and docs/configuration.md spell it. bin_root: a checkout whose
    build/ and squid-templates/ are used (another branch's build, read only)."""

    def __init__(self, env, name, origin_port, cache=None, workers=1, bin_root=None):
        root = Path(bin_root or ROOT)
        self.bin_dir = root / "build"
        self.origin_port = origin_port
        self.cache = cache
        super().__init__(env, name, routes=False, workers=workers, templates=root / "squid-templates")

    def yaml_text(self, apply=None):
        text = f"""proxy:
  bind: 127.0.0.1
  port: {self.port}
  workers: {self.workers}
  safe_ports: [80, 443, {self.origin_port}]
  connect_ports: [443]
  allow_loopback_destinations: true
  blocked_networks: ["169.254.0.0/16"]
  dns_nameservers: [127.0.0.1]
  hosts_file: {self.env.hosts}
auth:
  enabled: true
  credentials_ttl: 300
whitelist:
  apply: {apply or self.apply}
  preset: []
admin:
  bind: 127.0.0.1
  port: {self.admin_port}
"""
        if self.cache is not None:
            text += "cache:\n" + "".join(f"  {k}: {v}\n" for k, v in self.cache.items())
        return text

    def unsupported(self):
        """Why this build cannot run this configuration (`fps-controller check`), or None."""
        self.kubelet_update(self.config, self.config_files())
        p = subprocess.run([str(self.bin_dir / "fps-controller"), "check", "--config-dir", str(self.config)],
                           capture_output=True, text=True, env=dict(os.environ, FPS_TEMPLATES_DIR=str(self.templates)),
                           timeout=60)
        if p.returncode == 0:
            return None
        return stormreport.unsupported_reason(p.stdout + p.stderr)

    def start(self, wait=120):
        self.kubelet_update(self.config, self.config_files())
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(self.templates),
                   FPS_STUNNEL_TEMPLATES_DIR=str(self.stunnel_templates), **self.extra_env)
        self.proc = self.env.procs.spawn(
            f"controller-{self.name}",
            [str(self.bin_dir / "fps-controller"), "run", "--config-dir", str(self.config), "--secrets-dir",
             str(self.secrets), "--state-dir", str(self.state), "--admin", f"127.0.0.1:{self.admin_port}"],
            env=env)
        self.log_path = self.env.dir / f"controller-{self.name}.out"
        self.wait_serving(timeout=wait)
        self.env.roots[self.role] = self.proc.pid
        self.cache_log = self.state / "run" / "cache.log"

    def close(self):
        """Squid's logs are kept in the run directory (with --keep, the evidence of a failed storm).
        A controller killed from outside (seen: another checkout's test cleanup) leaves its Squid
        and helpers behind, no longer its children: they are found by this instance's directory
        in their command line and stopped too."""
        for name in ("cache.log", "access.log"):
            try:
                shutil.copyfile(self.state / "run" / name, self.env.dir / f"{self.name}-{name}")
            except OSError:
                pass
        mine = str(self.dir) + "/"
        super().close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [pid for pid, cmd in orphans(mine)]
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while left and orphans(mine) and time.monotonic() < deadline:
                time.sleep(0.1)


def orphans(needle):
    """(pid, cmdline) of live processes whose command line names needle (zombies left out)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if needle in cmd:
            out.append((int(d), cmd))
    return out


def wait_store_ready(cache_log, proc, timeout=120):
    """A disk store is indexed after Squid starts (rock: "Loading cache_dir", aufs: "Rebuilding
    storage in"; then "Store rebuilding is N% complete" and "Finished rebuilding storage from disk",
    once per kid that indexes); storms during that see TCP_SWAPFAIL_MISS (docs/squid-facts.md).
    Waits until every store that started rebuilding has finished (a Squid without a disk store:
    1 s); returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} while its store was loading")
        text = cache_log.read_text(errors="replace") if cache_log.exists() else ""
        started = len(re.findall(r"Loading cache_dir|Rebuilding storage in", text))
        finished = text.count("Finished rebuilding storage")
        if started == 0 and time.monotonic() - t0 > 1:
            break  # no disk store
        if started and finished >= started:
            break
        time.sleep(0.1)
    else:
        log(f"{cache_log}: the store is still rebuilding after {timeout} s; storming anyway")
    return round(time.monotonic() - t0, 2)


def squid_codes(access_log, url_part, want, timeout=5.0, start=0):
    """Squid's answers to one storm, from its access.log (Squid's native format): {"TCP_HIT/200
    HIER_NONE": n, ...} for the lines whose URL contains url_part. HIER_DIRECT marks a request Squid
    sent to the origin, so a storm's extra origin copies are named here (a collapsed request is
    logged TCP_MISS with HIER_NONE). Only lines from byte offset start on count (a warm storm
    asks for the cold storm's URL again). Squid writes the log through stdio buffers: waits up
    to timeout for want lines, then takes what is there."""
    deadline = time.monotonic() + timeout
    while True:
        out = {}
        try:
            with open(access_log, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 9 and url_part in f[6]:
                key = f"{f[3]} {f[8].split('/')[0]}"
                out[key] = out.get(key, 0) + 1
        if sum(out.values()) >= want or time.monotonic() > deadline:
            return dict(sorted(out.items(), key=lambda kv: -kv[1]))
        time.sleep(0.2)


# ---- one storm -----------------------------------------------------------------------------------

def run_storm(env, origin, label, target, phase, port, pkg_id, agents, *, direct=False, slow=0, slow_rate=262144,
              timeout=120, deadline=1800, url=None):
    """stormgen against one target, with the origin's byte count and the per-process CPU around it."""
    url = url or origin.url(pkg_id)
    argv = [str(STORMGEN), "--agents", str(agents), "--url", url, "--sha256", origin.sha(pkg_id), "--size",
            str(origin.size), "--timeout", str(timeout), "--deadline", str(deadline), "--json", "-"]
    argv += ["--direct"] if direct else ["--proxy", f"127.0.0.1:{port}", "--apikey", services.APIKEY]
    if slow:
        argv += ["--slow", str(slow), "--slow-rate", str(int(slow_rate))]
    o0 = origin.stats()
    before = common.snapshot(env.roots)
    mine = {pid for pid, _ in before} | {os.getpid(), origin.proc.pid}
    others_before = common.others_snapshot(mine)
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # stormgen is reaped by us: its CPU lands here
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mine.add(p.pid)
    try:
        out, err = p.communicate(timeout=deadline + 120)
    except BaseException:
        p.kill()
        p.wait()
        raise
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    after = common.snapshot(env.roots)
    mine |= {pid for pid, _ in after}
    others = common.others_delta({k: v for k, v in others_before.items() if k[0] not in mine},
                                 common.others_snapshot(mine))
    o1 = origin.stats()
    if p.returncode != 0 or not out.strip():
        raise RuntimeError(f"{label}: stormgen exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    js = json.loads(out)
    rec = stormreport.summarize(js, o0, o1, origin.size, common.cpu_delta(before, after), PREFIX[target])
    rec.update(label=label, target=target, phase=phase, pkg_id=pkg_id, wall_s=round(wall, 3),
               client_cpu_s=round(client_cpu, 2),
               other_cpu_s=round(others, 2), origin_rate=o1.get("rate", 0), url=url)
    log(f"storm {label}: {rec['ok']}/{rec['agents']} ok, origin copies {rec['origin_copies']:.2f}, "
        f"{rec['mb_s']:.0f} MB/s, last done {rec['time_to_all_s']} s, p99 {rec['p99_s']} s, "
        f"failed {rec['failed']} {rec['results']}, CPU s/GB {rec['cpu_s_per_gb']}")
    return rec


# ---- the group -----------------------------------------------------------------------------------

class StormGroup:
    """Runs the group's plan; every record goes to out (a list in the results), save() after each."""

    def __init__(self, env, a, out, save=lambda: None, wait_quiet=lambda: None):
        self.env, self.a, self.out, self.save, self.wait_quiet = env, a, out, save, wait_quiet
        self.ts = time.strftime("%H%M%S")
        self.access_log = None  # the current target's, when it is a Squid

    def fail(self, target, phase, e):
        log(f"storm/{target}/{phase}: FAILED: {e}")
        self.out.append({"target": target, "phase": phase, "error": str(e)[-1000:]})
        self.save()

    def storm(self, target, phase, port, agents, **kw):
        a = self.a
        self.wait_quiet()
        pkg_id = kw.pop("pkg_id", None) or f"{self.ts}-{target}-{phase}"
        try:
            log_at = self.access_log.stat().st_size if self.access_log is not None else 0
        except OSError:
            log_at = 0
        try:
            rec = run_storm(self.env, self.origin, f"storm-{target}-{phase}", target, phase, port, pkg_id, agents,
                            timeout=a.storm_timeout, **kw)
        except Exception as e:
            self.fail(target, phase, e)
            return None
        if target in self.fps_cache:
            rec["fps_cache"] = self.fps_cache[target]
        if self.access_log is not None:
            rec["squid_codes"] = squid_codes(self.access_log, f"/pkg/{pkg_id}/", rec["agents"], start=log_at)
        self.out.append(rec)
        self.save()
        return rec

    def run(self):
        a = self.a
        if not os.access(STORMGEN, os.X_OK):
            self.fail("all", "setup", f"{STORMGEN} missing (make -C bench all)")
            return
        self.fps_root = self.private_fps_root(a.storm_fps_root)
        self.fps_cache = {}  # target -> the `cache` section it ran with
        size = int(a.storm_mb * (1 << 20))
        self.origin = StormOrigin(self.env, size)
        try:
            for t, _ in TARGETS:
                if t in a.storm_targets:
                    self.target(t)
        finally:
            self.origin.close()

    def target(self, t):
        a, env = self.a, self.env
        n = a.storm_agents
        thing = None
        try:
            if t.startswith("nginx"):
                thing = Nginx(env, self.origin, [f"{self.ts}-direct"], name=f"storm-{t}")
                if t == "nginx-direct":
                    # The box's limit: the same bytes from files, no proxy, no origin.
                    pkg = f"{self.ts}-direct"
                    self.storm(t, "direct", None, n, direct=True, pkg_id=pkg,
                               url=f"http://127.0.0.1:{thing.direct_port}/pkg/{pkg}/{PKG_NAME}")
                    return
                port, proc, cache_log = thing.cache_port, thing.proc, None
            elif t.startswith("squid"):
                thing = HandSquid(env, f"storm-{t}", max(n, a.storm_slow_agents + 1), self.origin, rock=t == "squid-rock")
                port, proc, cache_log = thing.port, thing.proc, thing.cache_log
            else:
                cache = None
                if t != "fps-nocache":
                    mb = max(1, self.origin.size >> 20)
                    cache = {"memory_mb": 256, "disk_mb": max(1024, 8 * mb), "max_object_mb": max(64, 2 * mb)}
                thing = StormFps(env, f"storm-{t}", self.origin.port, cache=cache,
                                 workers="auto" if t == "fps-cache-auto" else 1, bin_root=self.fps_root)
                env.fps.append(thing)
                why = thing.unsupported()
                if why and cache and "disk_mb" in why and "unknown key" not in why:
                    # A build may refuse a disk store for this configuration (e.g. several workers):
                    # then what it accepts, a memory-only cache, and the table says so.
                    log(f"storm/{t}: {why}; trying `cache.disk_mb: 0`")
                    thing.cache = dict(cache, disk_mb=0)
                    why = thing.unsupported()
                self.fps_cache[t] = thing.cache
                if why:
                    log(f"storm/{t}: not available with this build: {why}")
                    self.out.append({"target": t, "phase": "all", "available": False, "reason": why})
                    self.save()
                    return
                thing.start()
                port, proc, cache_log = thing.port, thing.proc, thing.cache_log
            self.access_log = cache_log.with_name("access.log") if cache_log is not None else None
            if cache_log is not None:
                waited = wait_store_ready(cache_log, proc)
                log(f"storm/{t}: store ready after {waited} s")
            self.probe(t, port)
            self.storm(t, "cold", port, n)
            # Agents that come later: the warm storm starts WARM_AFTER_S after the cold one ended
            # (right after it, Squid's rock store was still writing the object: TCP_SWAPFAIL_MISS).
            if t in a.storm_warm_targets:
                time.sleep(WARM_AFTER_S)
                self.storm(t, "warm", port, n, pkg_id=f"{self.ts}-{t}-cold")
            if t in a.storm_slow_targets:
                # Item 3 of the issue: the same k agents' time without and with one slow reader
                # beside them (k + 1 agents), each storm on a new URL.
                k = a.storm_slow_agents
                self.storm(t, "slow-base", port, k)
                self.storm(t, "slow", port, k + 1, slow=1, slow_rate=a.storm_slow_rate)
            if t in a.storm_paced_targets and a.storm_paced_rate > 0:
                self.origin.set_rate(a.storm_paced_rate)
                try:
                    self.storm(t, "paced", port, n)
                finally:
                    self.origin.set_rate(0)
        except Exception as e:
            self.fail(t, "setup", e)
        finally:
            if thing is not None:
                try:
                    thing.close()
                except Exception as e:  # keep going: the next target needs the box
                    log(f"storm/{t}: stopping: {e}")

    def private_fps_root(self, root):
        """Another checkout's build is copied into the run directory first (binaries and templates):
        that checkout's test sessions kill every process whose command line names its build/ (their
        leaked-process check), and a rebuild there must not change the binary under a run."""
        if not root or Path(root).resolve() == ROOT.resolve():
            return None
        dst = self.env.dir / "fps-root"
        (dst / "build").mkdir(parents=True)
        for b in ("fps-controller", "fps-acl", "fps-auth"):
            shutil.copy2(Path(root) / "build" / b, dst / "build" / b)
        shutil.copytree(Path(root) / "squid-templates", dst / "squid-templates")
        for p in [dst, *dst.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() or p.parent.name == "build" else 0o644)
        log(f"storm: FPS from {root} (copied to {dst})")
        return dst

    def probe(self, t, port):
        """One authenticated request through the target before its storms: the path works."""
        user = common.agent_user(0)
        code, _ = common.fpsharness.curl(f"http://{HOST}:{self.origin.port}/__stats", f"127.0.0.1:{port}", user=user,
                                          password=common.agent_password(user, services.APIKEY), timeout=30)
        if code != 200:
            raise RuntimeError(f"{t}: a probe through it answered {code}, expected 200")


def parse_list(s, known):
    out = [x for x in (s or "").split(",") if x]
    bad = [x for x in out if x not in known]
    if bad:
        raise SystemExit(f"run_bench: unknown storm target(s) {', '.join(bad)} (known: {', '.join(known)})")
    return out


def names():
    return [t for t, _ in TARGETS]
