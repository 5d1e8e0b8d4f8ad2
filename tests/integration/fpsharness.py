"""Harness for FPS integration tests: real Squid, real origins, real curl, all on loopback.

Everything a test needs lives in one world directory under /tmp (readable by Squid's
`proxy` user, which pytest's own tmp_path is not): a ConfigMap-like config directory
updated the way the kubelet does it, a Secret directory, the controller's state dir,
a hosts file that maps test names to loopback, and origin servers on free ports.
"""
import atexit
import base64
import hashlib
import http.server
import os
import random
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FPS_BIN_DIR", ROOT / "build"))
TEMPLATES = ROOT / "squid-templates"
# promtool unpacked from Debian's prometheus package by the Makefile (installing the package
# would start a Prometheus server on 0.0.0.0:9090).
PROMTOOL = Path(os.environ.get("PROMTOOL", ROOT / "build" / "prometheus" / "usr" / "bin" / "promtool"))


def free_port():
    """A free loopback port below the kernel's ephemeral range: a port the kernel hands out
    for bind(0) may meanwhile become the source port of some outgoing connection (curl, Squid
    to an origin), and then Squid cannot bind it."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(500):
        port = random.randint(10000, max(10001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- processes: every fixture starts its programs in a process group of their own and stops
# the whole group on every path out; the session ends by checking that nothing is left.
_STARTED_DIRS = []  # test-world directories created in this session (the leak check's needles)
# Every process this session starts inherits this mark (the controller passes its environment
# on to Squid, the helpers and stunnel): the leak check counts a process that runs this
# checkout's binaries only if it carries the mark, so another pytest session of the same
# checkout running at the same time is not taken for a leak (and killed).
SESSION_MARK = f"{os.getpid()}-{random.getrandbits(64):016x}"
os.environ["FPS_TEST_SESSION"] = SESSION_MARK


def _ours(pid):
    try:
        return f"FPS_TEST_SESSION={SESSION_MARK}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def register_dir(d):
    _STARTED_DIRS.append(str(Path(d).resolve()))
    return d


def spawn(args, **kw):
    """Popen in a new session (so a new process group, pgid = pid): stop_group() then stops
    the program and everything it started, even children that outlived it."""
    return subprocess.Popen(args, start_new_session=True, **kw)


def _group_members(pgid):
    """The live (not zombie) processes of process group pgid, with their command lines."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            found.append((int(entry), _proc_refs(entry)[0]))
    return found


def stop_group(proc, sig=signal.SIGTERM, timeout=30):
    """Stops proc with sig (SIGKILL after timeout), then SIGKILLs whatever is left of its
    process group and waits until it is gone: a SIGKILLed process takes a moment to exit
    (an ASan binary unmaps gigabytes of shadow memory), and a caller that looks for leftovers
    right after must not see one still exiting. Returns proc's exit code. Safe to call twice
    and on a dead proc."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return proc.returncode
    deadline = time.monotonic() + 30
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.returncode


def _proc_refs(pid):
    """cmdline and cwd of pid ("" when gone or not ours to read)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "", ""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    return cmd, cwd


def leaked_processes(needles=None):
    """Processes (other than this one and its ancestors) whose command line refers to a world
    directory this session created, or whose working directory is in one (Squid's is its run
    directory), or that run this checkout's binaries and were started by this session."""
    dirs = list(_STARTED_DIRS if needles is None else needles)
    bins = [str(ROOT / "build"), str(BIN.resolve())] if needles is None else []
    mine = set()
    pid = os.getpid()
    while pid > 1:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except (OSError, IndexError):
            continue
        cmd, cwd = _proc_refs(entry)
        words = cmd.split()
        refers = lambda n: any(x == n or x.startswith(n + "/") or ("=" + n) in x for x in words)
        inside = lambda n: cwd == n or cwd.startswith(n + "/")
        if any(refers(n) or inside(n) for n in dirs) or (any(refers(n) for n in bins) and _ours(entry)):
            found.append((int(entry), cmd.strip()))
    return found


def end_leftovers(dirs, grace=10.0):
    """Waits until no process refers to dirs (leaked_processes), SIGKILLing what is left after
    grace seconds. Under -N Squid starts each helper in a session of its own (src/ipc.cc calls
    setsid()), so a process-group kill misses fps-acl and fps-auth: they leave by themselves
    when the end of Squid closes their stdin, a moment later."""
    deadline = time.monotonic() + grace
    while (left := leaked_processes(dirs)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 10
    while left and (left := leaked_processes(dirs)) and time.monotonic() < deadline:
        time.sleep(0.02)


def wait_for(pred, timeout=15.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# socketserver's serve_forever() looks for shutdown() every poll_interval (0.5 s by default):
# every origin's stop waited a quarter of a second on average.
SERVE_POLL = 0.02


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"origin {self.server.name} {self.headers.get('Host')} {self.path}\n".encode()
        self.server.hits.append((self.headers.get("Host"), self.path))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        """Uploads: answers with the size and SHA-256 of the body it read."""
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        body = f"origin {self.server.name} received {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}\n"
        self.server.hits.append((self.headers.get("Host"), self.path))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_PUT = do_POST

    def log_message(self, *args):
        pass


class Origin(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name="http", ssl_ctx=None, addr="127.0.0.1"):
        super().__init__((addr, 0), _Handler)
        self.name = name
        self.hits = []
        if ssl_ctx:
            self.socket = ssl_ctx.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(SERVE_POLL,), daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


def make_ca_and_cert(d, names, ca_name="FPS Test CA"):
    """A CA and a server certificate for names, with the openssl CLI."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca_name}",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "ext.cnf").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
        str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"),
        "-out", str(d / "server.pem"))
    return d / "ca.pem", d / "server.pem", d / "server.key"


def agent_credentials(key, product="ApexOne", guid="1b4e28ba-2fa1-11d2-883f-0016d3cca427"):
    user = f"{product}-{guid}"
    return user, hashlib.sha1((user + key).encode()).hexdigest()


def curl(url, proxy, user=None, password=None, cacert=None, timeout=10, extra=()):
    """An agent request with the real curl. Returns (status, body)."""
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{http_connect}", "--max-time", str(timeout), "-x", proxy]
    if user is not None:
        args += ["--proxy-user", f"{user}:{password}"]
    if cacert:
        args += ["--cacert", str(cacert)]
    args += list(extra) + [url]
    p = subprocess.run(args, capture_output=True, text=True)
    out = p.stdout
    body, _, codes = out.rpartition("\n")
    code, _, connect = codes.partition(" ")
    # A refused CONNECT leaves http_code 000; the proxy's answer is then http_connect.
    if code in ("", "000") and connect.isdigit() and connect != "000":
        code = connect
    return int(code) if code.isdigit() else 0, body


_INSTALL = None


def reachable_install():
    """The binaries and templates copied where any user can read them, as an image has them
    in /usr/local: a controller started as another user (prefix) cannot reach a checkout
    under a private directory such as /root. One copy per test session; (bin, templates)."""
    global _INSTALL
    if _INSTALL is None:
        root = Path(tempfile.mkdtemp(prefix="fps-install-", dir="/tmp"))
        (root / "bin").mkdir()
        for b in ("fps-controller", "fps-acl", "fps-auth"):
            shutil.copy2(BIN / b, root / "bin" / b)
        shutil.copytree(TEMPLATES, root / "squid-templates")
        shutil.copytree(TEMPLATES.parent / "stunnel-conf", root / "stunnel-conf")
        for dirpath, _, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                fp = Path(dirpath) / f
                fp.chmod(fp.stat().st_mode | 0o444)
        atexit.register(shutil.rmtree, root, True)
        _INSTALL = (root / "bin", root / "squid-templates")
    return _INSTALL


class World:
    """One FPS instance and its surroundings."""

    API_KEY = "k-2026-11-integration-secret"

    def __init__(self, name="fps"):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
        register_dir(self.dir)
        os.chmod(self.dir, 0o755)
        self.config = self.dir / "config"
        self.secrets = self.dir / "secrets"
        self.state = self.dir / "state"
        self.hosts = self.dir / "hosts"
        self.log_path = self.dir / "controller.log"
        for d in (self.config, self.secrets):
            d.mkdir()
            os.chmod(d, 0o755)
        os.chmod(self.secrets, 0o700)
        self.port = free_port()
        self.proxy = f"127.0.0.1:{self.port}"
        self.proc = None
        self.procs = []  # every controller this world started (a test may start several)
        self._gen = 0
        self.origins = []
        self.hosts_map = {}

    # ---- surroundings ----------------------------------------------------------------
    def origin(self, **kw):
        o = Origin(**kw)
        self.origins.append(o)
        return o

    def set_hosts(self, mapping):
        self.hosts_map.update(mapping)
        lines = [f"{ip} {name}" for name, ip in self.hosts_map.items()]
        self.hosts.write_text("\n".join(lines) + "\n")
        os.chmod(self.hosts, 0o644)

    def write_keys(self, keys=None):
        if keys is None:
            keys = [{"id": "it", "key": self.API_KEY, "expires": "2099-01-01T00:00:00Z"}]
        import json
        self.kubelet_update(self.secrets, {"apikeys.json": json.dumps({"keys": keys})})

    # ---- the kubelet's atomic update ------------------------------------------------
    def kubelet_update(self, target, files):
        """Writes files the way the kubelet updates a ConfigMap/Secret volume: a new
        timestamped directory, a `..data_tmp` symlink renamed over `..data`, visible
        names as symlinks through `..data`, the old directory removed."""
        target = Path(target)
        self._gen += 1
        ts = f"..2026_11_24_00_00_{self._gen:02d}.{os.getpid()}{self._gen:04d}"
        new = target / ts
        new.mkdir()
        for name, content in files.items():
            p = new / name
            p.write_text(content) if isinstance(content, str) else p.write_bytes(content)
            os.chmod(p, 0o644)
        old = None
        data = target / "..data"
        if data.is_symlink():
            old = target / os.readlink(data)
        tmp = target / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(ts, tmp)
        os.rename(tmp, data)
        for name in files:
            vis = target / name
            if not vis.is_symlink():
                if vis.exists():
                    vis.unlink()
                os.symlink(f"..data/{name}", vis)
        if old is not None:
            for name in os.listdir(target):
                vis = target / name
                if vis.is_symlink() and not name.startswith("..") and name not in files:
                    vis.unlink()
            shutil.rmtree(old, ignore_errors=True)

    def yaml(self, apply="live", whitelist_preset=(), extra="", auth=False, safe_ports=None, connect_ports=None,
             blocked=("169.254.0.0/16", "127.0.0.99/32"), allow_loopback=True):
        ports = [80, 443] + [o.port for o in self.origins]
        sp = safe_ports if safe_ports is not None else ports
        cp = connect_ports if connect_ports is not None else [443] + [o.port for o in self.origins]
        preset = "".join(f"\n    - \"{p}\"" for p in whitelist_preset) or " []"
        return (
            f"proxy:\n  bind: 127.0.0.1\n  port: {self.port}\n"
            f"  safe_ports: {list(sp)}\n  connect_ports: {list(cp)}\n"
            f"  blocked_networks: {list(blocked)}\n"
            # The origins are on loopback, which FPS refuses unless re-allowed (docs/security.md).
            f"  allow_loopback_destinations: {'true' if allow_loopback else 'false'}\n"
            f"  dns_nameservers: [127.0.0.1]\n  hosts_file: {self.hosts}\n"
            f"auth:\n  enabled: {'true' if auth else 'false'}\n"
            f"whitelist:\n  apply: {apply}\n  preset:{preset}\n" + extra)

    def write_config(self, yaml_text, whitelist=None, raw_whitelist=None):
        import json
        files = {"fps.yaml": yaml_text}
        if raw_whitelist is not None:
            files["whitelist.json"] = raw_whitelist
        elif whitelist is not None:
            files["whitelist.json"] = json.dumps(whitelist)
        self.kubelet_update(self.config, files)

    # ---- the controller -----------------------------------------------------------------
    def start(self, wait=True, extra_args=(), env_extra=None, prefix=()):
        # Every controller gets an admin port of its own: the admin port is bound
        # exclusively, so two worlds on the default 8079 would refuse each other.
        cfg = self.config / "fps.yaml"
        own_admin = cfg.exists() and any(l.startswith("admin:") for l in cfg.read_text().splitlines())
        if "--admin" not in extra_args and not own_admin:
            self.admin_port = getattr(self, "admin_port", None) or free_port()
            extra_args = [*extra_args, "--admin", f"127.0.0.1:{self.admin_port}"]
        self.logf = open(self.log_path, "ab")
        bin_dir, templates = (reachable_install() if prefix else (BIN, TEMPLATES))
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(templates), **(env_extra or {}))
        self.proc = spawn(
            [*prefix, str(bin_dir / "fps-controller"), "run", "--config-dir", str(self.config), "--secrets-dir",
             str(self.secrets), "--state-dir", str(self.state), *extra_args],
            stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        self.procs.append(self.proc)
        if wait:
            try:
                self.wait_serving()
            except BaseException:
                self.stop()  # a failed start leaves nothing running, whoever forgets close()
                raise
        return self.proc

    def wait_serving(self, timeout=30):
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET http://fps-readiness.invalid/ HTTP/1.0\r\n\r\n")
                    return s.recv(12).startswith(b"HTTP/1.")
            except OSError:
                return False
        try:
            wait_for(serving, timeout, what="squid answering")
        except AssertionError as e:
            cache_log = self.state / "run" / "cache.log"
            tail = cache_log.read_text(errors="replace")[-3000:] if cache_log.exists() else "(no cache.log)"
            raise AssertionError(f"{e}\n--- controller log ---\n{self.log()[-3000:]}\n--- cache.log ---\n{tail}")

    def stop(self):
        """SIGTERM the controller (a clean shutdown stops Squid and stunnel), then SIGKILL
        whatever is left in its process group: an orphaned Squid from a controller that was
        killed, helpers still exiting."""
        rc = stop_group(self.proc)
        if getattr(self, "logf", None):
            self.logf.close()
        return rc

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def squid_pid(self):
        p = self.state / "run" / "squid.pid"
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError):  # absent, or caught while Squid writes it
            return None

    def active_conf(self):
        return (self.state / "current" / "squid.conf").read_text()

    def get(self, host, port=None, path="/", **kw):
        port = port or self.origins[0].port
        return curl(f"http://{host}:{port}{path}", self.proxy, **kw)

    def wait_status(self, host, status, port=None, timeout=10, **kw):
        return wait_for(lambda: self.get(host, port, **kw)[0] == status, timeout,
                        what=f"{host} -> {status}")

    def close(self):
        """Teardown: every controller this world started and everything they started are gone
        when it returns. A controller still running is SIGKILLed with its process group (Squid,
        stunnel) rather than stopped: the graceful stop drains Squid (2-4 s on a busy box) and
        asserts nothing here; the tests of stopping call stop() themselves. An SMP Squid
        (`--foreground`, workers > 1) is still stopped gracefully: only Squid itself removes
        its shared memory segments and /run/squid sockets."""
        try:
            if (self.proc is not None and self.proc.poll() is None
                    and not any("--foreground" in cmd.split() for _, cmd in _group_members(self.proc.pid))):
                stop_group(self.proc, signal.SIGKILL)
            self.stop()
        finally:
            for p in self.procs:
                stop_group(p, signal.SIGKILL)
            end_leftovers([str(self.dir.resolve())])
        for o in self.origins:
            o.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def admin_get(w, path, timeout=5):
    """(status, body) of an admin endpoint of world w; (0, error) when it does not answer."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.admin_port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def admin_status(w):
    """w's /status as a dict; {} when it does not answer 200."""
    import json
    code, body = admin_get(w, "/status")
    return json.loads(body) if code == 200 else {}


def admin_metric(w, name):
    """The value of w's first /metrics sample called name (any labels); None when absent."""
    _, body = admin_get(w, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def fresh_request(proxy_port, host, port, path="/", headers="", timeout=5.0):
    """One GET through the proxy on a new connection, read to the end. Returns the status
    ("200", "403", ...) or the error class: refused, reset, timeout, oserror:N, garbage."""
    req = (f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
           "Connection: close\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data[9:12].decode(errors="replace") if data.startswith(b"HTTP/1.") else "garbage"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"oserror:{e.errno}"


class Prober(threading.Thread):
    """A background agent opening a new connection every few milliseconds and
    classifying every outcome, so a test can assert that nothing was refused or reset."""

    def __init__(self, proxy_port, host, port, interval=0.003):
        super().__init__(daemon=True)
        self.proxy_port, self.host, self.port, self.interval = proxy_port, host, port, interval
        self.stop_evt = threading.Event()
        self.results = {}

    def count(self, key):
        self.results[key] = self.results.get(key, 0) + 1

    def run(self):
        while not self.stop_evt.is_set():
            self.count(fresh_request(self.proxy_port, self.host, self.port))
            time.sleep(self.interval)

    def finish(self):
        self.stop_evt.set()
        self.join(10)
        return dict(self.results)
