"""The world the benchmark runs in, on loopback but for the cloud side (its own network
namespace): the origin (nginx), the alternatives (a hand-written Squid, tinyproxy), the
customer's proxy, the cloud side, and FPS instances."""
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from . import common
from .common import ROOT, BUILD, Procs, free_port, log, max_fds, sh, wait_port

APIKEY = "fps-bench-key-0123456789abcdef0123"
TUNNEL_SERVER = "tunnel.fps.test"
# Host names (all 127.0.0.1 in the hosts file). The FPS routes pick by name.
ORIGIN = "origin.bench.test"    # whitelisted, FPS route direct
TUNNELED = "tunnel.bench.test"  # whitelisted, FPS route tunnel
UPSTREAM = "up.bench.test"      # whitelisted, FPS route upstream
EDITED = "edit.bench.test"      # toggled in and out of the whitelist by the edit scenarios
DENIED = "denied.bench.test"    # never whitelisted
NAMES = [ORIGIN, TUNNELED, UPSTREAM, EDITED, DENIED, TUNNEL_SERVER]


def base_whitelist(n=10):
    """The whitelist every proxy gets: the three names the agents use plus fillers up to n."""
    out = [ORIGIN, TUNNELED, UPSTREAM]
    i = 0
    while len(out) < n:
        out.append(f"svc{i}.filler{i % 997}.bench-filler.test")
        i += 1
    return out


class CloudNet:
    """The cloud side's own network namespace: `ip netns` plus a veth pair with a /30 of
    10.213.0.0/16, both named and numbered after this process's pid, so two benches (or a
    bench and a test) never collide. Traffic between the appliance and the cloud crosses the
    veth pair instead of loopback, as it crosses a NIC in production. close() removes it
    (after the processes in it are stopped); a namespace left by a bench that was killed is
    removed by the next one (its pid is gone)."""

    PREFIX = "fpsbench-"

    def __init__(self):
        pid = os.getpid()
        self.name = f"{self.PREFIX}{pid}"
        self.host_if, self.ns_if = f"fbh{pid}"[:15], f"fbc{pid}"[:15]
        i = pid % 16384
        base = f"10.213.{i >> 6}."
        self.host_addr, self.ns_addr = base + str(((i & 63) << 2) + 1), base + str(((i & 63) << 2) + 2)
        self.up = False

    @classmethod
    def remove_stale(cls):
        try:
            names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        except OSError:
            return
        for n in names:
            if n.startswith(cls.PREFIX) and n[len(cls.PREFIX):].isdigit() and \
                    not os.path.exists(f"/proc/{n[len(cls.PREFIX):]}"):
                log(f"removing network namespace {n} left by a bench that is gone")
                subprocess.run(["ip", "netns", "del", n], capture_output=True)
                subprocess.run(["ip", "link", "del", f"fbh{n[len(cls.PREFIX):]}"[:15]], capture_output=True)

    def create(self):
        self.remove_stale()
        self.up = True  # from here on close() cleans up, whatever step fails
        ns = ["ip", "netns", "exec", self.name]
        for argv in (["ip", "netns", "add", self.name],
                     ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
                     ["ip", "link", "set", self.ns_if, "netns", self.name],
                     ["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if],
                     ["ip", "link", "set", self.host_if, "up"],
                     ns + ["ip", "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if],
                     ns + ["ip", "link", "set", self.ns_if, "up"],
                     ns + ["ip", "link", "set", "lo", "up"]):
            sh(*argv)
        log(f"cloud side network namespace {self.name}: {self.host_if} {self.host_addr} <-> "
            f"{self.ns_if} {self.ns_addr}")

    def exec_argv(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)

    def wait_port(self, port, proc, timeout=30, what="port"):
        """A port on the namespace's loopback (not reachable from outside it)."""
        deadline = time.monotonic() + timeout
        probe = self.exec_argv(["/usr/bin/python3", "-c", "import socket,sys; "
                                f"socket.create_connection(('127.0.0.1', {port}), timeout=1)"])
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} in {self.name} after {timeout}s")

    def close(self):
        if not self.up:
            return
        self.up = False
        # Deleting the namespace destroys its veth end, and with it the pair.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)


class Env:
    """The run directory, the processes, and the shared services."""

    def __init__(self, keep=False, cloud_netns=True):
        self.dir = Path(tempfile.mkdtemp(prefix="fps-bench-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.keep = keep
        self.procs = Procs(self.dir)
        self.hosts = self.dir / "hosts"
        self.hosts.write_text("".join(f"127.0.0.1 {n}\n" for n in NAMES))
        os.chmod(self.hosts, 0o644)
        self.roots = {}  # CPU accounting: prefix -> root pid
        self.fps = []
        # The cloud side's namespace exists before nginx starts, so nginx can listen on the
        # host end of the veth pair too (the cloud Squid's way to the origin).
        self.cloudnet = CloudNet() if cloud_netns else None

    def close(self):
        try:
            for f in list(self.fps):
                f.close()
            self.procs.stop_all()
        finally:
            if self.cloudnet is not None:
                self.cloudnet.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- origin: nginx, plain and TLS ----------------------------------------------------
    def start_nginx(self):
        extra_listen = ""
        if self.cloudnet is not None:
            self.cloudnet.create()
            h = self.cloudnet.host_addr
            extra_listen = f"""
    # the cloud side (its own network namespace) reaches the origin over the veth pair
    listen {h}:{{self.http_port}} backlog=4096;
    listen {h}:{{self.https_port}} ssl backlog=4096;"""
        d = self.dir / "origin"
        www = d / "www"
        www.mkdir(parents=True)
        (www / "1k").write_bytes(b"x" * 1024)
        (www / "100k").write_bytes(b"y" * 102400)
        for p in (d, www, www / "1k", www / "100k"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        # ECDSA P-256: the cheapest handshake nginx and loadgen can do; names and 127.0.0.1.
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
           "-subj", "/CN=fps bench origin", "-addext",
           "subjectAltName=" + ",".join(f"DNS:{n}" for n in NAMES) + ",IP:127.0.0.1",
           "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"))
        os.chmod(d / "key.pem", 0o644)
        self.origin_ca = d / "cert.pem"
        self.http_port, self.https_port = free_port(), free_port()
        (d / "nginx.conf").write_text(f"""
worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {max_fds()};
events {{ worker_connections 16000; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  ssl_session_cache shared:bench:10m;
  server {{
    listen 127.0.0.1:{self.http_port} backlog=4096;
    listen 127.0.0.1:{self.https_port} ssl backlog=4096;{extra_listen.format(self=self)}
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    root {www};
  }}
}}
""")
        p = self.procs.spawn("nginx", ["nginx", "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")])
        wait_port(self.http_port, p, what="nginx")
        wait_port(self.https_port, p, what="nginx tls")
        self.roots[""] = p.pid

    def squid_base(self, d, port, name):
        """What every self-contained Squid on this box needs (docs/squid-facts.md), before its policy."""
        return f"""http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
cache deny all
pinger_enable off
max_filedescriptors {max_fds()}
shutdown_lifetime 1 seconds
visible_hostname {name}
hosts_file {self.hosts}
dns_nameservers 127.0.0.1"""

    # ---- (2) a hand-written Squid: basic_ncsa_auth + dstdomain ----------------------------
    def start_hand_squid(self, agents, workers=1, whitelist=None, name="hand-squid", edit=None, listen_sockets=1):
        """edit(conf_text, port) -> conf_text: a variant of the hand-written config (ab_variants.py);
        with another name, a second instance beside the first (self.hand_port is the latest).
        listen_sockets > 1: that many `http_port ... worker-queues` lines, as FPS listens (2b)."""
        d = self.dir / name
        d.mkdir()
        os.chmod(d, 0o777)
        creds = common.agent_creds(agents, APIKEY)
        # openssl passwd -apr1 hashes one password per stdin line, in one process.
        hashed = sh("openssl", "passwd", "-apr1", "-stdin", input="".join(p + "\n" for _, p in creds)).stdout.split()
        assert len(hashed) == len(creds), "openssl passwd -stdin gave a short answer"
        (d / "htpasswd").write_text("".join(f"{u}:{h}\n" for (u, _), h in zip(creds, hashed)))
        (d / "whitelist.txt").write_text("".join(n + "\n" for n in (whitelist or base_whitelist())))
        self.hand_port = free_port()
        (d / "squid.conf").write_text(f"""# What an admin would write without FPS: Basic auth from an htpasswd file, a dstdomain whitelist.
{self.squid_base(d, self.hand_port, "hand-squid")}
{f"workers {workers}" if workers > 1 else ""}

auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd
auth_param basic children 10 startup=2 idle=1
auth_param basic realm proxy
auth_param basic credentialsttl 300 seconds
auth_param basic casesensitive on
acl users proxy_auth REQUIRED

acl SSL_ports port 443 {self.https_port}
acl Safe_ports port 80 443 {self.http_port} {self.https_port}
acl CONNECT method CONNECT
acl whitelist dstdomain -n "{d}/whitelist.txt"

http_access deny !users
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access deny !whitelist
http_access allow users
http_access deny all
""")
        if listen_sockets > 1:
            one = f"http_port 127.0.0.1:{self.hand_port}\n"
            (d / "squid.conf").write_text((d / "squid.conf").read_text().replace(
                one, one.replace("\n", " worker-queues\n") * listen_sockets, 1))
        if edit is not None:
            (d / "squid.conf").write_text(edit((d / "squid.conf").read_text(), self.hand_port))
        argv = (["squid", "--foreground", "-n", f"fpsbenchhand{self.hand_port}"] if workers > 1 else ["squid", "-N"])
        p = self.procs.spawn(name, argv + ["-f", str(d / "squid.conf")])
        wait_port(self.hand_port, p, what="hand-written squid")
        self.roots["hand:" if name == "hand-squid" else name + ":"] = p.pid
        return p

    # ---- (3) tinyproxy: BasicAuth pairs + a Filter whitelist -----------------------------
    def start_tinyproxy(self, agents, whitelist=None):
        d = self.dir / "tinyproxy"
        d.mkdir()
        os.chmod(d, 0o777)
        (d / "filter").write_text("".join(n + "\n" for n in (whitelist or base_whitelist())))
        self.tiny_port = free_port()
        auth = "".join(f"BasicAuth {u} {p}\n" for u, p in common.agent_creds(agents, APIKEY))
        (d / "tinyproxy.conf").write_text(f"""User nobody
Group nogroup
Port {self.tiny_port}
Listen 127.0.0.1
Timeout 600
MaxClients {agents * 2 + 100}
LogFile "{d}/tinyproxy.log"
LogLevel Error
PidFile "{d}/tinyproxy.pid"
DisableViaHeader Yes
Allow 127.0.0.1
ConnectPort 443
ConnectPort {self.https_port}
Filter "{d}/filter"
FilterType fnmatch
FilterDefaultDeny Yes
{auth}""")
        for f in ("tinyproxy.conf", "filter"):
            os.chmod(d / f, 0o644)
        # tinyproxy resolves with the system resolver (no hosts_file setting): give it our
        # hosts file in a private mount namespace. exec keeps tinyproxy as the leader.
        script = f"mount --bind {self.hosts} /etc/hosts && exec tinyproxy -d -c {d}/tinyproxy.conf"
        p = self.procs.spawn("tinyproxy", ["unshare", "-m", "--propagation", "private", "sh", "-c", script])
        wait_port(self.tiny_port, p, what="tinyproxy")
        self.roots["tiny:"] = p.pid

    # ---- the customer's proxy: a plain Squid with Basic auth -----------------------------
    def start_customer_squid(self):
        d = self.dir / "customer"
        d.mkdir()
        os.chmod(d, 0o777)
        hashed = sh("openssl", "passwd", "-apr1", "corp-secret").stdout.strip()
        (d / "htpasswd").write_text(f"fps:{hashed}\n")
        self.customer_port = free_port()
        (d / "squid.conf").write_text(f"""{self.squid_base(d, self.customer_port, "customer-proxy")}
auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd
auth_param basic children 4
auth_param basic credentialsttl 3600 seconds
acl users proxy_auth REQUIRED
acl SSL_ports port 443 {self.https_port}
acl CONNECT method CONNECT
http_access deny !users
http_access deny CONNECT !SSL_ports
http_access allow localhost
http_access deny all
""")
        p = self.procs.spawn("customer-squid", ["squid", "-N", "-f", str(d / "squid.conf")])
        wait_port(self.customer_port, p, what="customer squid")
        self.roots["cust:"] = p.pid

    # ---- the cloud side: examples/cloud/run-cloud.sh --------------------------------------
    def start_cloud(self):
        """The cloud stunnel server and cloud Squid; in self.cloudnet's namespace when there is one
        (then the appliance reaches the server at self.cloud_addr over the veth pair, and the
        cloud Squid reaches the origin at the host end of it)."""
        d = self.dir / "cloud"
        self.cloud_tls_port, self.cloud_squid_port = free_port(), free_port()
        argv = [str(ROOT / "examples/cloud/run-cloud.sh"), str(d), str(self.cloud_tls_port),
                str(self.cloud_squid_port), TUNNEL_SERVER]
        net = self.cloudnet
        if net is not None:
            hosts = self.dir / "hosts-cloud"
            hosts.write_text("".join(f"{net.host_addr} {n}\n" for n in NAMES))
            os.chmod(hosts, 0o644)
            self.cloud_addr = net.ns_addr
            env = dict(os.environ, FPS_CLOUD_HOSTS_FILE=str(hosts), FPS_CLOUD_LISTEN=net.ns_addr)
            p = self.procs.spawn("cloud", net.exec_argv(argv), env=env)
            wait_port(self.cloud_tls_port, p, what="cloud stunnel server", host=net.ns_addr)
            net.wait_port(self.cloud_squid_port, p, what="cloud squid")
        else:
            self.cloud_addr = "127.0.0.1"
            env = dict(os.environ, FPS_CLOUD_HOSTS_FILE=str(self.hosts))
            p = self.procs.spawn("cloud", argv, env=env)
            wait_port(self.cloud_tls_port, p, what="cloud stunnel server")
            wait_port(self.cloud_squid_port, p, what="cloud squid")
        self.cloud_ca = d / "ca.pem"
        self.roots["cloud:"] = p.pid

    # ---- FPS ------------------------------------------------------------------------------
    def start_fps(self, name="fps", apply="live", whitelist=None, routes=True, workers=1, wait=120, templates=None,
                  stunnel_templates=None, extra_env=None, role="fps:"):
        f = FpsInstance(self, name, apply=apply, whitelist=whitelist, routes=routes, workers=workers,
                        templates=templates, stunnel_templates=stunnel_templates, extra_env=extra_env, role=role)
        self.fps.append(f)
        f.start(wait)
        return f


class FpsInstance(common.fpsharness.World):
    """One FPS (controller + its Squid, helpers and stunnel client), configured through the
    ConfigMap-like directory the kubelet way (fpsharness.World), started in its own session."""

    def __init__(self, env, name, apply="live", whitelist=None, routes=True, workers=1, templates=None,
                 stunnel_templates=None, extra_env=None, role="fps:"):
        super().__init__(name=f"fps-bench-{name}")
        self.env, self.name, self.apply, self.routes, self.workers = env, name, apply, routes, workers
        self.role = role  # prefix of its processes in the CPU accounting (a second FPS: its own)
        self.templates = templates or ROOT / "squid-templates"  # a variant's copy, for A/B runs
        self.stunnel_templates = stunnel_templates or ROOT / "stunnel-conf"
        self.extra_env = dict(extra_env or {})
        self.whitelist = list(whitelist if whitelist is not None else base_whitelist())
        self.admin_port = free_port()
        self.version = 1
        self.tunnel_local = free_port()
        secrets = {"apikeys.json": json.dumps({"keys": [{"id": "bench", "key": APIKEY,
                                                          "expires": "2099-01-01T00:00:00Z"}]})}
        if routes:
            secrets["upstream-password"] = "corp-secret\n"
            secrets["tunnel-ca.pem"] = env.cloud_ca.read_text()
            # run-cloud.sh requires a client certificate from its appliance CA (mTLS)
            client = env.cloud_ca.parent / "appliance.pem"
            if client.exists():
                secrets["tunnel-client.pem"] = client.read_text()
                secrets["tunnel-client.key"] = client.with_suffix(".key").read_text()
        self.kubelet_update(self.secrets, secrets)

    def yaml_text(self, apply=None):
        e = self.env
        text = f"""proxy:
  bind: 127.0.0.1
  port: {self.port}
  workers: {self.workers}
  safe_ports: [80, 443, {e.http_port}]
  connect_ports: [443, {e.https_port}]
  allow_loopback_destinations: true
  blocked_networks: ["169.254.0.0/16"]
  dns_nameservers: [127.0.0.1]
  hosts_file: {e.hosts}
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
        if self.routes:
            text += f"""upstream:
  host: 127.0.0.1
  port: {e.customer_port}
  username: fps
tunnel:
  server: {TUNNEL_SERVER}
  address: {e.cloud_addr}
  port: {e.cloud_tls_port}
  local_port: {self.tunnel_local}
routes:
  - {{ via: tunnel, domains: ["{TUNNELED}"] }}
  - {{ via: upstream, domains: ["{UPSTREAM}"] }}
default_route: direct
"""
        return text

    def config_files(self, whitelist=None):
        self.version += 1
        wl = self.whitelist if whitelist is None else whitelist
        return {"fps.yaml": self.yaml_text(),
                "whitelist.json": json.dumps({"version": self.version, "domains": list(wl)})}

    def start(self, wait=120):
        self.kubelet_update(self.config, self.config_files())
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(self.templates),
                   FPS_STUNNEL_TEMPLATES_DIR=str(self.stunnel_templates), **self.extra_env)
        self.proc = self.env.procs.spawn(
            f"controller-{self.name}",
            [str(BUILD / "fps-controller"), "run", "--config-dir", str(self.config), "--secrets-dir",
             str(self.secrets), "--state-dir", str(self.state), "--admin", f"127.0.0.1:{self.admin_port}"],
            env=env)
        self.log_path = self.env.dir / f"controller-{self.name}.out"
        self.wait_serving(timeout=wait)
        self.t_serving = time.time()  # Squid answers on the proxy port (restart's stage times)
        if self.routes:
            wait_port(self.tunnel_local, self.proc, timeout=30, what="FPS stunnel client")
        self.env.roots[self.role] = self.proc.pid

    def restart(self, wait=120):
        """What an appliance restart does: SIGTERM to the controller (it stops its Squid and
        stunnel), then the controller again on the same state dir. Returns where the gap goes:
        the stages' times in ms after the SIGTERM, from the bench (old controller gone, new one
        spawned, its Squid answering on the proxy port) and from the controller's log (old Squid
        stopped, new generation active i.e. rendered and proven with `squid -k parse`, new Squid
        started), the old Squid's shutdown lines from cache.log, and what one `squid -k parse`
        of the new generation's candidate costs on its own."""
        cache_log = self.state / "run" / "cache.log"
        off_log = self.log_path.stat().st_size if self.log_path.exists() else 0
        off_cache = cache_log.stat().st_size if cache_log.exists() else 0
        t = {"sigterm": time.time()}
        self.env.procs.stop(self.proc, grace=30)
        t["old_controller_gone"] = time.time()
        self.proc = None
        off_new = self.log_path.stat().st_size if self.log_path.exists() else 0
        t["new_controller_spawned"] = time.time()
        self.start(wait)
        t["squid_answering"] = self.t_serving
        out = {k: round((v - t["sigterm"]) * 1000) for k, v in t.items()}
        text = self.log_path.read_bytes().decode(errors="replace")
        for key, pat, lo, hi in (("old_squid_stopped", r"squid: pid \d+ stopped", off_log, off_new),
                                 ("new_generation_active", r"generation \d+ active", off_new, None),
                                 ("new_squid_started", r"squid: started pid", off_new, None)):
            for line in text.encode()[lo:hi].decode(errors="replace").splitlines():
                if re.search(pat, line):
                    try:
                        ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                            tzinfo=datetime.timezone.utc).timestamp()
                    except (ValueError, IndexError):
                        continue
                    out[key] = round((ts - t["sigterm"]) * 1000)
                    break
        try:
            with open(cache_log, "rb") as f:
                f.seek(off_cache)
                lines = f.read(1 << 20).decode(errors="replace").splitlines()
            keep = [l for l in lines if re.search(
                r"Preparing for shutdown|Shutting down|Closing HTTP|Waiting \d+ seconds|exiting|Exiting|Starting Squid",
                l)]
            seen = {}  # the same line again (the controller may signal Squid more than once): counted
            for l in keep:
                seen[l] = seen.get(l, 0) + 1
            out["old_squid_cache_log"] = [l + (f"  (x{n})" if n > 1 else "") for l, n in seen.items()][:16]
        except OSError:
            pass
        # the controller removes its check.conf after the parse: the active squid.conf is the
        # same candidate pointing at `current` instead of the generation's directory
        conf = sorted(self.state.rglob("squid.conf"), key=lambda p: p.stat().st_mtime)
        if conf:
            took = []
            for _ in range(3):
                t0 = time.monotonic()
                subprocess.run(["squid", "-k", "parse", "-f", str(conf[-1])], capture_output=True)
                took.append((time.monotonic() - t0) * 1000)
            out["squid_parse_ms"] = round(sorted(took)[1])
        return out

    def _spawn_controller(self, tag):
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(self.templates),
                   FPS_STUNNEL_TEMPLATES_DIR=str(self.stunnel_templates), **self.extra_env)
        return self.env.procs.spawn(
            f"controller-{self.name}{tag}",
            [str(BUILD / "fps-controller"), "run", "--config-dir", str(self.config), "--secrets-dir",
             str(self.secrets), "--state-dir", str(self.state), "--admin", f"127.0.0.1:{self.admin_port}"],
            env=env)

    def _squid_answering(self, admin_port, proc, wait):
        """Polls /status until children.squid.answering (not /readyz: a second instance's stunnel
        client cannot bind tunnel.local_port while the first one's holds it)."""
        deadline = time.time() + wait
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"controller exited {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=2) as r:
                    sq = json.loads(r.read()).get("children", {}).get("squid", {})
                    if sq.get("answering"):
                        return time.time()
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("squid not answering")

    def handover(self, wait=120):
        """(11) handover: a second instance with its own state directory and admin port, on the
        same ConfigMap and Secret (so the same proxy port), starts beside this one; once its
        Squid answers, SIGTERM to this one, which drains (docs/operations.md, "Handing over").
        This object then stands for the second instance. Stage times in ms after the SIGTERM."""
        old_proc, old_state, old_admin = self.proc, self.state, self.admin_port
        self.state = self.dir / "state-b"
        self.admin_port = free_port()
        t = {"second_started": time.time()}
        self.proc = self._spawn_controller("-b")
        t["second_squid_answering"] = self._squid_answering(self.admin_port, self.proc, wait)
        t["sigterm"] = time.time()
        self.env.procs.stop(old_proc, grace=30)
        t["first_controller_gone"] = time.time()
        self.env.roots[self.role] = self.proc.pid
        shutil.rmtree(old_state, ignore_errors=True)
        del old_admin
        return {k: round((v - t["sigterm"]) * 1000) for k, v in t.items()}

    def kill_and_adopt(self, wait=120):
        """(11) SIGKILL of the controller (outside a container its Squid keeps serving), then a new
        controller on the same state directory, which adopts that Squid. Stage times in ms."""
        t = {"sigkill": time.time()}
        os.kill(self.proc.pid, signal.SIGKILL)  # the controller only: its Squid lives on
        self.proc.wait()
        t["new_controller_spawned"] = time.time()
        self.proc = self._spawn_controller("-adopter")
        t["squid_answering_under_new_controller"] = self._squid_answering(self.admin_port, self.proc, wait)
        self.env.roots[self.role] = self.proc.pid
        return {k: round((v - t["sigkill"]) * 1000) for k, v in t.items()}

    def close(self):
        if self.proc is not None:
            self.env.procs.stop(self.proc, grace=30)
            self.proc = None
        if self.env.roots.get(self.role) and self in self.env.fps:
            self.env.roots.pop(self.role, None)
        if self in self.env.fps:
            self.env.fps.remove(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- evidence for denials (a 403 for a whitelisted host fails the bench) --------------
    def _logs(self):
        run = self.state / "run"
        return {"access": run / "access.log", "cache": run / "cache.log"}

    def log_marks(self):
        """Where Squid's logs end now, so denials_since() reads only what a run added."""
        return {k: (p.stat().st_size if p.exists() else 0) for k, p in self._logs().items()}

    def denials_since(self, marks, keep=5):
        """The 403 lines of the access log and the WARNING/ERROR lines of cache.log written
        since marks: a few samples and counts (the log rotation can shorten a file: then from 0)."""
        out = {}
        for k, p in self._logs().items():
            try:
                with open(p, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(marks.get(k, 0) if marks.get(k, 0) <= size else 0)
                    text = f.read(64 << 20).decode(errors="replace")
            except OSError:
                continue
            pick = (lambda l: "/403 " in l) if k == "access" else (lambda l: "WARNING" in l or "ERROR" in l)
            lines = [l for l in text.splitlines() if pick(l)]
            out[k] = {"count": len(lines), "samples": lines[:keep]}
        return out

    def check(self, host, port, expect):
        user = common.agent_user(0)
        code, _ = common.fpsharness.curl(f"http://{host}:{port}/1k", self.proxy, user=user,
                                          password=common.agent_password(user, APIKEY))
        if code != expect:
            raise RuntimeError(f"FPS {self.name}: {host} answered {code}, expected {expect}; see {self.log_path}")


def kubelet_swap(target, files, gen):
    """The kubelet's atomic update (as fpsharness.World.kubelet_update), split so the caller
    learns the moment of the `..data` rename: the new directory is written first, then the
    rename, whose time.monotonic() is returned, then the old directory is removed."""
    target = Path(target)
    ts = f"..2026_11_24_00_bench_{gen:06d}.{os.getpid()}"
    new = target / ts
    new.mkdir()
    for name, content in files.items():
        (new / name).write_text(content)
        os.chmod(new / name, 0o644)
    data = target / "..data"
    old = target / os.readlink(data) if data.is_symlink() else None
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(ts, tmp)
    os.rename(tmp, data)
    t_swap = time.monotonic()
    for name in files:
        vis = target / name
        if not vis.is_symlink():
            os.symlink(f"..data/{name}", vis)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return t_swap
