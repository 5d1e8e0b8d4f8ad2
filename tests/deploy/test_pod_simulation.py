"""5. The appliance pod, simulated without Kubernetes.

Runs the controller container's exact command and args from the built supervise manifest, as the
pod's non-root uid, against directories laid out the way the kubelet lays out the pod's volumes:
the ConfigMap and the Secret projected through timestamped directories and a `..data` symlink,
emptyDirs for the state dir and /tmp. Then, like an agent and like the kubelet:

  - waits for /readyz (what the readiness probe asks);
  - sends an authenticated agent request through Squid to a whitelisted origin: 200;
  - updates the ConfigMap the way the kubelet does (new timestamped dir, `..data_tmp`, rename
    over `..data`, old dir removed) to whitelist a second name, and polls until that name
    answers 200 instead of 403 (the live-apply contract);
  - sends SIGTERM (the kubelet's stop) and expects exit 0 with no process left behind.

Only environment-specific values are changed: the absolute pod paths (mapped to the temp tree),
--admin and proxy.port (free loopback ports), and in fps.yaml the bind address, hosts file,
resolver, blocked networks and safe ports needed to reach a loopback origin; tunnel, upstream and
routes are removed (no cloud here). Binaries: $FPS_BIN_DIR (default <repo>/build).
"""

import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import sys

import pytest
import yaml

from deploy_helpers import (CONTROLLER, POD_UID, REPO, WORKLOAD, arg_value, as_pod_user, built,
                            container, find, path_mapper, pod_spec, seed_config,
                            world_traversable_tmpdir)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from fpsharness import free_port  # noqa: E402  (below the ephemeral range: see there)

BIN_DIR = os.environ.get("FPS_BIN_DIR", os.path.join(REPO, "build"))
TEMPLATES = os.path.join(REPO, "squid-templates")
ORIGIN_IP = "127.0.0.2"
NAME_A, NAME_B = "origin-a.fps.test", "origin-b.fps.test"
IMAGE_BIN_DIR = "/usr/local/bin"   # where the Dockerfile installs the binaries

SKIP = None
if not os.access(os.path.join(BIN_DIR, "fps-controller"), os.X_OK):
    SKIP = f"no {BIN_DIR}/fps-controller (run `make`, or set FPS_BIN_DIR)"
elif not (shutil.which("squid") or os.path.exists("/usr/sbin/squid")) or not shutil.which("curl"):
    SKIP = "squid and curl are needed"
elif os.geteuid() == 0 and not shutil.which("setpriv"):
    SKIP = "setpriv (util-linux) is needed to drop to the pod's uid"
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


# ---- the kubelet's way of writing ConfigMap/Secret volumes ------------------------------------

def kubelet_project(volume, files, ts, file_mode, gid):
    """AtomicWriter: write a new ..<timestamp> dir, point ..data_tmp at it, rename it over
    ..data, make sure each visible name is a symlink through ..data, remove the old dir."""
    old = os.readlink(os.path.join(volume, "..data")) if os.path.islink(os.path.join(volume, "..data")) else None
    tsdir = os.path.join(volume, f"..{ts}")
    os.mkdir(tsdir)
    os.chmod(tsdir, 0o755 if file_mode & 0o004 else 0o750)
    if os.geteuid() == 0:
        os.chown(tsdir, 0, gid)
    for name, content in files.items():
        path = os.path.join(tsdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
        os.chmod(path, file_mode)
    tmp = os.path.join(volume, "..data_tmp")
    os.symlink(f"..{ts}", tmp)
    os.rename(tmp, os.path.join(volume, "..data"))
    for name in files:
        link = os.path.join(volume, name)
        if not os.path.islink(link):
            os.symlink(f"..data/{name}", link)
    for entry in os.listdir(volume):
        link = os.path.join(volume, entry)
        if not entry.startswith("..") and entry not in files:
            os.unlink(link)
    if old:
        shutil.rmtree(os.path.join(volume, old))


# ---- helpers ------------------------------------------------------------------------------------

class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        body = f"origin says hello to {self.headers.get('Host')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_for(what, deadline_s, fn, proc=None, stderr_path=None):
    """Poll fn() until it returns a truthy value; fail at the deadline or if proc dies."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"controller exited ({proc.returncode}) while waiting for {what}:\n{tail(stderr_path)}")
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last: {last!r}):\n{tail(stderr_path)}")


def tail(path, n=40):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def session_processes(sid):
    """Pids whose session id is `sid` (everything the controller started stays in its session)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(pid))
    return out


# ---- the pod ----------------------------------------------------------------------------------

class Pod:
    """The pod's volumes as local directories, its containers as local processes."""

    def __init__(self, overlay):
        self.spec = pod_spec(find(built(overlay), *WORKLOAD))
        self.ctl = container(self.spec, CONTROLLER)
        self.vols = {v["name"]: v for v in self.spec["volumes"]}
        self.gid = self.spec["securityContext"].get("fsGroup", POD_UID)
        self.root = world_traversable_tmpdir(f"fps-pod-{overlay}-")
        self.procs = {}
        self.origin = None

        # One local dir per volume (of any container), mapped from its mountPath.
        # The image's /usr/local/bin and templates, copied where the pod's user can reach them
        # as it can in the image: the checkout itself may be private (/root is mode 0700).
        image = os.path.join(self.root, "image")
        os.makedirs(os.path.join(image, "bin"))
        for b in ("fps-controller", "fps-acl", "fps-auth"):
            shutil.copy2(os.path.join(BIN_DIR, b), os.path.join(image, "bin", b))
            os.chmod(os.path.join(image, "bin", b), 0o755)
        self.templates = os.path.join(image, "squid-templates")
        shutil.copytree(TEMPLATES, self.templates)
        shutil.copytree(os.path.join(REPO, "stunnel-conf"), os.path.join(image, "stunnel-conf"))
        for dirpath, dirnames, filenames in os.walk(image):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                fp = os.path.join(dirpath, f)
                os.chmod(fp, os.stat(fp).st_mode | 0o444)
        mapping = {IMAGE_BIN_DIR: os.path.join(image, "bin")}
        self.local = {}
        for c in self.spec["containers"]:
            for m in c.get("volumeMounts", []):
                d = os.path.join(self.root, m["name"])
                if not os.path.isdir(d):
                    os.mkdir(d)
                    if "emptyDir" in self.vols[m["name"]]:
                        # The kubelet's emptyDir: created by root with mode 0777, then (fsGroup)
                        # group fsGroup and setgid. The owner stays root: the pod's user cannot
                        # chmod it.
                        if os.geteuid() == 0:
                            os.chown(d, 0, self.gid)
                        os.chmod(d, 0o2777)
                    else:
                        os.chmod(d, 0o755)
                mapping[m["mountPath"]] = d
                self.local[m["mountPath"]] = d
        self.localize = path_mapper(mapping)
        args = self.ctl["args"]
        self.config_dir = self.local[arg_value(args, "--config-dir")]
        self.secrets_dir = self.local[arg_value(args, "--secrets-dir")]
        secret_vol = [m["name"] for m in self.ctl["volumeMounts"] if m["mountPath"] == arg_value(args, "--secrets-dir")][0]
        self.secret_mode = self.vols[secret_vol]["secret"].get("defaultMode", 0o644)
        self.tmp_dir = self.local.get("/tmp", self.root)

    def start_origin(self):
        self.origin = http.server.ThreadingHTTPServer((ORIGIN_IP, 0), Origin)
        threading.Thread(target=self.origin.serve_forever, daemon=True).start()
        return self.origin.server_address[1]

    def write_config(self, fps_yaml, whitelist_json, ts):
        kubelet_project(self.config_dir, {"fps.yaml": fps_yaml, "whitelist.json": whitelist_json}, ts, 0o644, self.gid)

    def write_secrets(self, files, ts):
        kubelet_project(self.secrets_dir, files, ts, self.secret_mode, self.gid)

    def start(self, name, admin_port):
        c = container(self.spec, name)
        cmd = [self.localize(a) for a in c.get("command", []) + c.get("args", [])]
        if name == CONTROLLER:
            if "--admin" in cmd:
                cmd[cmd.index("--admin") + 1] = f"127.0.0.1:{admin_port}"
            else:
                cmd += ["--admin", f"127.0.0.1:{admin_port}"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": self.tmp_dir, "TMPDIR": self.tmp_dir, "LANG": "C.UTF-8",
               "FPS_TEMPLATES_DIR": self.templates}
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if var in os.environ:
                env[var] = os.environ[var]
        out_path = os.path.join(self.root, f"{name}.out")
        err_path = os.path.join(self.root, f"{name}.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.procs[name] = subprocess.Popen(as_pod_user() + cmd, stdout=out, stderr=err, env=env,
                                                cwd=self.tmp_dir, start_new_session=True)
        return self.procs[name], err_path

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            for pid in session_processes(p.pid):   # only what this test started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.origin is not None:
            self.origin.shutdown()
            self.origin.server_close()
        if os.environ.get("FPS_KEEP_POD_TMP"):
            print(f"pod tree kept at {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def whitelist(version, names):
    return json.dumps({"version": version, "domains": names})


def run_pod(overlay):
    pod = Pod(overlay)
    fps_yaml, _ = seed_config()
    try:
        origin_port = pod.start_origin()
        hosts = os.path.join(pod.root, "hosts")
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost\n{ORIGIN_IP} {NAME_A} {NAME_B}\n")
        os.chmod(hosts, 0o644)

        proxy_port, admin_port = free_port(), free_port()
        cfg = json.loads(json.dumps(fps_yaml))  # deep copy
        for key in ("tunnel", "upstream", "routes"):
            cfg.pop(key, None)
        cfg["default_route"] = "direct"
        cfg["proxy"].update({
            "bind": "127.0.0.1", "port": proxy_port, "hosts_file": hosts,
            "dns_nameservers": ["127.0.0.1"],
            "blocked_networks": ["169.254.0.0/16"],      # not the origin's 127.0.0.2
            "allow_loopback_destinations": True,         # the origin is on loopback
            "safe_ports": [80, 443, origin_port],
        })
        cfg["admin"] = {"bind": "127.0.0.1", "port": admin_port}
        fps_text = yaml.safe_dump(cfg, sort_keys=False)
        pod.write_config(fps_text, whitelist(1, [NAME_A]), "2026_11_24_10_00_00.000000001")

        user = f"ApexOne-{uuid.uuid4()}"
        key = secrets.token_hex(24)
        password = hashlib.sha1((user + key).encode()).hexdigest()
        expires = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod.write_secrets({"apikeys.json": json.dumps({"keys": [{"id": "test", "key": key, "expires": expires}]})},
                          "2026_11_24_10_00_00.000000001")

        # Containers start in any order in a pod: the sidecar's Squid waits for squid.conf.
        for c in pod.spec["containers"]:
            if c["name"] != CONTROLLER:
                pod.start(c["name"], admin_port)
        proc, stderr_path = pod.start(CONTROLLER, admin_port)

        admin = f"http://127.0.0.1:{admin_port}"
        wait_for("/healthz", 60, lambda: http_status(admin + "/healthz")[0] == 200, proc, stderr_path)
        wait_for("/readyz 200", 90, lambda: http_status(admin + "/readyz")[0] == 200, proc, stderr_path)

        def agent(name, creds=True):
            args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "15",
                    "-x", f"http://127.0.0.1:{proxy_port}", f"http://{name}:{origin_port}/"]
            if creds:
                args[1:1] = ["-U", f"{user}:{password}"]
            run = subprocess.run(args, capture_output=True, text=True)
            body, _, code = run.stdout.rpartition("\n")
            return code, body

        code, body = agent(NAME_A)
        assert code == "200", f"{code}\n{body}\n{tail(stderr_path)}"
        assert f"hello to {NAME_A}" in body
        assert agent(NAME_A, creds=False)[0] == "407"
        code, body = agent(NAME_B)
        assert code == "403", body

        # The backend changes the whitelist; the kubelet delivers it.
        pod.write_config(fps_text, whitelist(2, [NAME_A, NAME_B]), "2026_11_24_10_00_05.000000002")
        assert sorted(os.listdir(pod.config_dir)) == ["..2026_11_24_10_00_05.000000002", "..data",
                                                      "fps.yaml", "whitelist.json"]
        wait_for(f"{NAME_B} to be allowed", 60, lambda: agent(NAME_B)[0] == "200", proc, stderr_path)
        assert agent(NAME_A)[0] == "200"
        status, text = http_status(admin + "/status")
        assert status == 200
        json.loads(text)

        # The kubelet stops the pod: SIGTERM to every container's main process at once.
        for p in pod.procs.values():
            p.send_signal(signal.SIGTERM)
        for name, p in pod.procs.items():
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not exit after SIGTERM:\n{tail(os.path.join(pod.root, name + '.err'))}")
            assert rc == 0, f"{name} exited {rc}:\n{tail(os.path.join(pod.root, name + '.err'))}"
            # Nothing it started (Squid, helpers, stunnel) outlives it.
            wait_for(f"{name}'s children to be gone", 30, lambda: not session_processes(p.pid))
    finally:
        pod.close()


# ---- the tests ----------------------------------------------------------------------------------

def test_pod_simulation():
    """Supervise overlay (the default): the controller runs Squid as its child."""
    run_pod("supervise")


def test_pod_simulation_sidecar():
    """Sidecar overlay: the squid container's own command waits for the controller's squid.conf
    and runs Squid; the controller (--mode sidecar) signals it through its pid file."""
    run_pod("sidecar")
