#!/usr/bin/python3
"""Route throughput: direct vs tunnel vs upstream through one FPS, in one run, on loopback.

  agents (loadgen) -> FPS Squid (fps-controller, auth on) -> direct ------------------> nginx
                                                          -> stunnel client -> stunnel server -> cloud Squid -> nginx
                                                          -> customer Squid (basic auth) ---------> nginx

Every run is 10 s (the box has 2 shared cores); routes are interleaved run by run so that
drift in the machine's load hits them alike. Per run it records loadgen's JSON, the CPU
seconds each process used (from /proc/<pid>/stat), and stunnel's thread counts mid-run.

  bench/routes/bench_routes.py [--runs 3] [--agents 1000] [--duration 10] [--routes direct,tunnel,upstream]
                               [--connect-rate R] [--label TEXT] [--out FILE.jsonl] [--keep]

With --connect-rate R it also runs CONNECT+TLS (loadgen --mode connect --tunnel-rate R) per route.
The stunnel client is the controller's own when the controller runs it (tunnel_prepare wired);
otherwise this script renders stunnel-conf/client.conf.tmpl the same way and starts it.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from lib.common import free_port, sh, wait_port  # noqa: E402  (shared with run_bench.py)

LOADGEN = ROOT / "build/bench/loadgen"
CLK = os.sysconf("SC_CLK_TCK")
APIKEY = "bench-routes-key-0123456789abcdef"
NAMES = {"direct": "direct.bench.test", "tunnel": "tunnel.bench.test", "upstream": "up.bench.test"}
TUNNEL_SERVER = "tunnel.fps.test"


def cpu_seconds(pid):
    """utime+stime of pid and its threads (and reaped children), in seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK
    except (OSError, IndexError, ValueError):
        return None


def threads(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                st = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if int(st[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="fps-routes-bench-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.ports = {k: free_port() for k in ("origin", "origin_tls", "fps", "customer", "cloud_tls",
                                               "cloud_squid", "local", "admin")}

    def spawn(self, name, argv, **kw):
        log = open(self.dir / f"{name}.out", "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p))
        return p

    # ---- the world -----------------------------------------------------------------------
    def setup(self):
        d = self.dir
        hosts = d / "hosts"
        hosts.write_text("".join(f"127.0.0.1 {n}\n" for n in list(NAMES.values()) + [TUNNEL_SERVER]))
        # Origin: nginx serving a 1 KiB body, plain and TLS (for CONNECT), keep-alive forever.
        www = d / "www"
        www.mkdir()
        (www / "1k").write_bytes(b"x" * 1024)
        pki = d / "origin-pki"
        pki.mkdir()
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
           "2", "-subj", "/CN=bench origin", "-addext",
           "subjectAltName=" + ",".join(f"DNS:{n}" for n in NAMES.values()),
           "-keyout", str(pki / "key.pem"), "-out", str(pki / "cert.pem"))
        os.chmod(pki / "key.pem", 0o644)
        self.origin_ca = pki / "cert.pem"
        (d / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{self.ports['origin']} backlog=4096;
    listen 127.0.0.1:{self.ports['origin_tls']} ssl backlog=4096;
    ssl_certificate {pki}/cert.pem;
    ssl_certificate_key {pki}/key.pem;
    root {www};
  }}
}}
""")
        p = self.spawn("nginx", ["nginx", "-c", str(d / "nginx.conf")])
        wait_port(self.ports["origin"], p, what="nginx")

        # The customer's proxy: Squid requiring Basic credentials (basic_ncsa_auth).
        cust = d / "customer"
        cust.mkdir()
        os.chmod(cust, 0o777)
        hashed = sh("openssl", "passwd", "-apr1", "corp-secret").stdout.strip()
        (cust / "htpasswd").write_text(f"fps:{hashed}\n")
        (cust / "squid.conf").write_text(f"""
http_port 127.0.0.1:{self.ports['customer']}
pid_filename {cust}/squid.pid
cache_log {cust}/cache.log
coredump_dir {cust}
access_log stdio:{cust}/access.log
cache deny all
pinger_enable off
max_filedescriptors {self.maxfds()}
visible_hostname customer-proxy
hosts_file {hosts}
dns_nameservers 127.0.0.1
auth_param basic program /usr/lib/squid/basic_ncsa_auth {cust}/htpasswd
auth_param basic children 4
auth_param basic credentialsttl 3600 seconds
acl users proxy_auth REQUIRED
http_access deny !users
http_access allow localhost
http_access deny all
""")
        p = self.spawn("customer-squid", ["squid", "-N", "-f", str(cust / "squid.conf")])
        wait_port(self.ports["customer"], p, what="customer squid")

        # The cloud side: examples/cloud/run-cloud.sh.
        cloud = d / "cloud"
        env = dict(os.environ, FPS_CLOUD_HOSTS_FILE=str(hosts), **self.args.cloud_env)
        p = self.spawn("cloud", [str(ROOT / "examples/cloud/run-cloud.sh"), str(cloud), str(self.ports["cloud_tls"]),
                                 str(self.ports["cloud_squid"]), TUNNEL_SERVER], env=env)
        wait_port(self.ports["cloud_tls"], p, what="cloud stunnel")
        wait_port(self.ports["cloud_squid"], p, what="cloud squid")

        # FPS itself.
        cfg, sec, state = d / "config", d / "secrets", d / "state"
        cfg.mkdir()
        sec.mkdir(mode=0o700)
        (sec / "apikeys.json").write_text(json.dumps(
            {"keys": [{"id": "b", "key": APIKEY, "expires": "2099-01-01T00:00:00Z"}]}))
        (sec / "upstream-password").write_text("corp-secret\n")
        shutil.copy(cloud / "ca.pem", sec / "tunnel-ca.pem")
        if (cloud / "appliance.pem").exists():  # run-cloud.sh requires a client certificate (mTLS)
            shutil.copy(cloud / "appliance.pem", sec / "tunnel-client.pem")
            shutil.copy(cloud / "appliance.key", sec / "tunnel-client.key")
        po, pt = self.ports["origin"], self.ports["origin_tls"]
        (cfg / "fps.yaml").write_text(f"""proxy:
  bind: 127.0.0.1
  port: {self.ports['fps']}
  workers: 1
  safe_ports: [80, {po}]
  connect_ports: [443, {pt}]
  allow_loopback_destinations: true
  blocked_networks: ["169.254.0.0/16"]
  dns_nameservers: [127.0.0.1]
  hosts_file: {hosts}
auth:
  enabled: true
whitelist:
  apply: live
  preset: [{', '.join(NAMES.values())}]
upstream:
  host: 127.0.0.1
  port: {self.ports['customer']}
  username: fps
tunnel:
  server: {TUNNEL_SERVER}
  address: 127.0.0.1
  port: {self.ports['cloud_tls']}
  local_port: {self.ports['local']}
routes:
  - {{ via: tunnel, domains: ["{NAMES['tunnel']}"] }}
  - {{ via: upstream, domains: ["{NAMES['upstream']}"] }}
admin:
  bind: 127.0.0.1
  port: {self.ports['admin']}
""")
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(ROOT / "squid-templates"),
                   FPS_STUNNEL_TEMPLATES_DIR=str(ROOT / "stunnel-conf"), **self.args.fps_env)
        self.ctl = self.spawn("controller", [str(ROOT / "build/fps-controller"), "run", "--config-dir", str(cfg),
                                             "--secrets-dir", str(sec), "--state-dir", str(state)], env=env)
        wait_port(self.ports["fps"], self.ctl, what="fps squid")
        self.state = state
        self.stunnel_client = self.find_stunnel_client()
        if self.stunnel_client is None:
            self.stunnel_client = self.own_stunnel_client(sec)
        wait_port(self.ports["local"], what="stunnel client")
        # One request per route proves the wiring before anything is measured.
        for route, name in NAMES.items():
            url = f"http://{name}:{po}/1k"
            user = "ApexOne-00000000-0000-0000-0000-000000000000"
            pw = hashlib.sha1((user + APIKEY).encode()).hexdigest()
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                                f"127.0.0.1:{self.ports['fps']}", "-U", f"{user}:{pw}", url],
                               capture_output=True, text=True)
            if r.stdout != "200":
                raise RuntimeError(f"{route}: {url} answered {r.stdout}; see {self.dir}")

    def maxfds(self):
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        return 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)

    def find_stunnel_client(self):
        """The controller's stunnel child, if the controller runs one."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for c in children(self.ctl.pid):
                if "stunnel" in cmdline(c):
                    return c
            time.sleep(0.1)
        return None

    def own_stunnel_client(self, sec):
        tdir = self.dir / "own-tunnel"
        tdir.mkdir()
        shutil.copy(sec / "tunnel-ca.pem", tdir / "tunnel-ca.pem")
        client = "; no client certificate"
        if (sec / "tunnel-client.pem").exists():
            client = f"cert = {sec / 'tunnel-client.pem'}\nkey = {sec / 'tunnel-client.key'}"
        text = (ROOT / "stunnel-conf/client.conf.tmpl").read_text()
        vals = {"VERSION": "bench", "PID_FILE": str(tdir / "stunnel.pid"), "DEBUG": "4",
                "LOCAL_PORT": str(self.ports["local"]), "CONNECT": f"127.0.0.1:{self.ports['cloud_tls']}",
                "DELAY": "; address given: resolved once", "SERVER": TUNNEL_SERVER,
                "CA_FILE": str(tdir / "tunnel-ca.pem"), "CLIENT_CERT": client}
        for k, v in vals.items():
            text = text.replace("{{" + k + "}}", v)
        assert "{{" not in text, text
        (tdir / "stunnel.conf").write_text(text)
        print("note: controller runs no stunnel yet; bench starts its own from client.conf.tmpl", file=sys.stderr)
        return self.spawn("stunnel-client", ["stunnel4", str(tdir / "stunnel.conf")]).pid

    # ---- measuring -----------------------------------------------------------------------
    def pids(self):
        """Processes whose CPU we account, by role."""
        out = {}
        sq = self.state / "run" / "squid.pid"
        try:
            out["fps-squid"] = int(sq.read_text())
        except (OSError, ValueError):
            pass
        out["stunnel-client"] = self.stunnel_client
        for name, p in self.procs:
            if name == "nginx":
                out["nginx"] = (children(p.pid) or [p.pid])[0]
            if name == "customer-squid":
                out["customer-squid"] = p.pid
            if name == "cloud":
                for c in children(p.pid):
                    cl = cmdline(c)
                    if "stunnel" in cl:
                        out["stunnel-server"] = c
                    elif "squid" in cl:
                        out["cloud-squid"] = c
        return out

    def run_once(self, route, mode):
        name = NAMES[route]
        if mode == "get":
            urls = [f"http://{name}:{self.ports['origin']}/1k"]
            extra = []
        else:
            urls = [f"https://{name}:{self.ports['origin_tls']}/1k"]
            extra = ["--mode", "connect", "--tunnel-rate", str(self.args.connect_rate), "--cafile",
                     str(self.origin_ca)]
        argv = [str(LOADGEN), "--proxy", f"127.0.0.1:{self.ports['fps']}", "--agents", str(self.args.agents),
                "--apikey", APIKEY, "--duration", str(self.args.duration), "--json", "-"] + extra
        for u in urls:
            argv += ["--url", u]
        pids = self.pids()
        before = {k: cpu_seconds(v) for k, v in pids.items()}
        t0 = time.monotonic()
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mid = {}

        def sample():
            # Thread counts half-way through: stunnel's thread-per-connection shows here.
            time.sleep(self.args.duration / 2)
            mid.update({f"threads_{k}": threads(v) for k, v in pids.items() if k.startswith("stunnel")})
        th = threading.Thread(target=sample)
        th.start()
        out, err = lg.communicate(timeout=self.args.duration + 120)
        th.join()
        wall = time.monotonic() - t0
        lgcpu = None
        after = {k: cpu_seconds(v) for k, v in pids.items()}
        res = json.loads(out)
        cpu = {k: round(after[k] - before[k], 2) for k in pids if before.get(k) is not None and after.get(k) is not None}
        # Only 2xx count as served: a 502 storm is fast but is not throughput.
        ok = sum(n for code, n in res["status"].items() if code.startswith("2"))
        bad = res["requests"] - ok
        alive = {k: (cpu_seconds(v) is not None) for k, v in pids.items()}
        return {"label": self.args.label, "route": route, "mode": mode,
                "rps": round(ok / res["elapsed_s"], 1) if res["elapsed_s"] else 0.0, "non_2xx": bad, "alive": alive,
                "requests": res["requests"], "errors": res["errors"], "errors_total": res["errors_total"],
                "status": res["status"], "proxy_connect_status": res.get("proxy_connect_status"),
                "p50_ms": res["latency_us"].get("p50", 0) / 1000 if isinstance(res["latency_us"], dict) else None,
                "p99_ms": res["latency_us"].get("p99", 0) / 1000 if isinstance(res["latency_us"], dict) else None,
                "cpu_s": cpu, "wall_s": round(wall, 2), **mid, "loadgen_cpu": lgcpu}

    def close(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--routes", default="direct,tunnel,upstream")
    ap.add_argument("--modes", default="get")
    ap.add_argument("--connect-rate", type=int, default=200)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--hold", action="store_true", help="set up, print the ports, wait for SIGTERM (experiments)")
    ap.add_argument("--fps-env", action="append", default=[], help="VAR=VALUE for the controller (experiments)")
    ap.add_argument("--cloud-env", action="append", default=[], help="VAR=VALUE for run-cloud.sh (experiments)")
    args = ap.parse_args()
    args.fps_env = dict(kv.split("=", 1) for kv in args.fps_env)
    args.cloud_env = dict(kv.split("=", 1) for kv in args.cloud_env)
    b = Bench(args)
    results = []
    try:
        b.setup()
        print(f"world in {b.dir}", file=sys.stderr)
        if args.hold:
            print(json.dumps({"dir": str(b.dir), "ports": b.ports, "pids": b.pids(), "apikey": APIKEY}), flush=True)
            done = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: done.set())
            while not done.wait(3600):
                pass
            return
        for mode in args.modes.split(","):
            for i in range(args.runs):
                for route in args.routes.split(","):
                    r = b.run_once(route, mode)
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(r) + "\n")
    finally:
        b.close()
    print(f"\n| label | mode | route | median 2xx req/s | runs | errors (sum) | timeouts (sum) | non-2xx (sum) | p99 ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for route in args.routes.split(","):
            rs = [r for r in results if r["route"] == route and r["mode"] == mode]
            if not rs:
                continue
            to = sum(r["errors"].get("timeout", 0) for r in rs)
            print(f"| {args.label} | {mode} | {route} | {statistics.median(r['rps'] for r in rs):.0f} | "
                  f"{', '.join('%.0f' % r['rps'] for r in rs)} | {sum(r['errors_total'] for r in rs)} | {to} | "
                  f"{sum(r['non_2xx'] for r in rs)} | "
                  f"{statistics.median((r['p99_ms'] or 0) for r in rs):.0f} |")


if __name__ == "__main__":
    main()
