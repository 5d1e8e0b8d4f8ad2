"""`make test-image`: the image built by `make image`, run the way the DaemonSet runs it.

The pod spec is rendered from deploy/k8s/overlays/{supervise,sidecar} by `kubectl kustomize`, and
each container becomes a `podman run` with what the kubelet would give it: the same command and
args, the securityContext (uid/gid 13, fsGroup 13, read-only root filesystem without podman's
extra tmpfs, all capabilities dropped, no privilege escalation), hostNetwork, the ConfigMap and the
Secret as kubelet-style directories (`..data` symlink swaps; Secret files 0440 group 13), and
host directories for the emptyDirs. Only the admin port is moved off its default 8079 (a free port: the
machine is shared), and resource limits are not applied (cgroup limits need a cgroup setup
this sandbox may lack).

Agents get 200/407/403 through the container's Squid, a ConfigMap swap applies, /readyz goes 200
and SIGTERM ends the controller with exit 0. The rolling update runs two pods of the supervise
layout on one node network (a network namespace) under load, with the manifest's own admin
addresses and exec probes, and counts every failed agent request. Needs root and podman:
`make test-image`.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from fpsharness import World, agent_credentials, free_port, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("FPS_IMAGE", f"localhost/fps:{(ROOT / 'VERSION').read_text().strip()}")
CONF = os.environ.get("CONTAINERS_CONF", str(ROOT / "deploy" / "image" / "containers.conf"))
KUBECTL = os.environ.get("KUBECTL", "kubectl")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("podman") is None,
                                reason="needs root and podman (make test-image installs podman)")


def podman(*args, check=True, timeout=120):
    p = subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, CONTAINERS_CONF=CONF))
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {p.returncode}\n{p.stderr}")
    return p


def pod_spec(overlay):
    out = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    ds = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "DaemonSet")
    return ds["spec"]["template"]["spec"]


def run_args(spec, c, name, volumes, admin_port, pod=None, spare_port=None, netns=None):
    """The `podman run` arguments the kubelet's view of container c amounts to. pod: the podman
    pod that holds the shared namespaces (network, pid) of a multi-container layout. netns: a
    network namespace (ip netns) that stands for the node's network instead of the host's."""
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    args = ["run", "-d", "--name", name, "--user", f"{uid}:{gid}"]
    if psc.get("fsGroup") is not None:
        args += ["--group-add", str(psc["fsGroup"])]
    if pod:
        args += ["--pod", pod]
    elif spec.get("hostNetwork"):
        args += ["--network", f"ns:/run/netns/{netns}" if netns else "host"]
    if csc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if "ALL" in csc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", "ALL"]
    if csc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for m in c.get("volumeMounts", []):
        args += ["-v", f"{volumes[m['name']]}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    cmd = c.get("command")
    if cmd:
        args += ["--entrypoint", json.dumps(cmd[:1])]
    moved = {"127.0.0.1:8079": f"127.0.0.1:{admin_port}", "127.0.0.1:8078": f"127.0.0.1:{spare_port or admin_port + 1}"}
    rest = (cmd[1:] if cmd else []) + [moved.get(a, a) for a in c.get("args", [])]
    return args + [IMAGE] + rest


class Pod:
    """The volumes of one pod and its containers."""

    def __init__(self, overlay):
        self.spec = pod_spec(overlay)
        self.w = World(f"image-{overlay}")
        self.names = []
        self.pod = None
        self.netns = None  # a network namespace standing for the node's network (the rolling update)
        self.admin_port = free_port()
        self.spare_port = free_port()
        self.volumes = {"config": self.w.config, "secrets": self.w.secrets, "state": self.w.dir / "state",
                        "tmp": self.w.dir / "tmp"}
        for v in ("state", "tmp"):  # emptyDirs: group 13 (fsGroup), setgid, group-writable
            self.volumes[v].mkdir()
            os.chown(self.volumes[v], 0, 13)
            os.chmod(self.volumes[v], 0o2770)

    def configure(self, domains):
        w = self.w
        self.origin = w.origin(name="http")
        w.set_hosts({"a.allowed.test": "127.0.0.1", "b.allowed.test": "127.0.0.1", "not.allowed.test": "127.0.0.1"})
        text = w.yaml(auth=True).replace(f"hosts_file: {w.hosts}", "hosts_file: /etc/fps/config/hosts")
        self.write_config(text, domains)
        w.write_keys()
        self.secret_perms()

    def write_config(self, text, domains):
        self.fps_yaml = text
        self.w.kubelet_update(self.w.config, {"fps.yaml": text, "hosts": self.w.hosts.read_text(),
                                              "whitelist.json": json.dumps({"version": 1, "domains": domains})})

    def secret_perms(self):
        """What defaultMode 0440 and fsGroup 13 give the Secret's files."""
        for p in self.w.secrets.iterdir():
            if p.is_dir() and p.name.startswith("..") and not p.is_symlink():
                os.chown(p, 0, 13)
                os.chmod(p, 0o750)
                for f in p.iterdir():
                    os.chown(f, 0, 13)
                    os.chmod(f, 0o440)
        os.chown(self.w.secrets, 0, 13)
        os.chmod(self.w.secrets, 0o750)

    def start_pod(self):
        """Like the kubelet's pause container: it holds the pod's namespaces, so that one
        container exiting does not take the other's processes with it (as PID 1 would)."""
        self.pod = f"fps-test-pod-{uuid.uuid4().hex[:8]}"
        share = ["--share", "net,pid" if self.spec.get("shareProcessNamespace") else "net"]
        net = ["--network", "host"] if self.spec.get("hostNetwork") else []
        podman("pod", "create", "--name", self.pod, *net, *share)

    def run(self, cname):
        c = next(c for c in self.spec["containers"] if c["name"] == cname)
        name = f"fps-test-{cname}-{uuid.uuid4().hex[:8]}"
        podman(*run_args(self.spec, c, name, self.volumes, self.admin_port, self.pod, self.spare_port, self.netns))
        self.names.append(name)
        return name

    def logs(self):
        return "\n".join(f"--- {n}\n" + podman("logs", n, check=False).stdout + podman("logs", n, check=False).stderr
                         for n in self.names)

    def admin(self, path):
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                            f"http://127.0.0.1:{self.admin_port}{path}"], capture_output=True, text=True)
        return int(p.stdout or 0)

    def close(self):
        for n in reversed(self.names):
            podman("rm", "-f", "-t", "5", n, check=False)
        if self.pod:
            podman("pod", "rm", "-f", self.pod, check=False)
        self.w.close()


@pytest.fixture(scope="module", autouse=True)
def image_exists():
    assert podman("image", "exists", IMAGE, check=False).returncode == 0, f"{IMAGE} missing: run make image"


def agent_checks(pod):
    w = pod.w
    user, password = agent_credentials(w.API_KEY)
    assert w.get("a.allowed.test")[0] == 407
    assert w.get("a.allowed.test", user=user, password=password)[0] == 200
    assert w.get("not.allowed.test", user=user, password=password)[0] == 403
    assert w.get("b.allowed.test", user=user, password=password)[0] == 403
    # The backend rewrites the ConfigMap: the kubelet swaps ..data; it applies without a restart.
    pod.write_config(pod.fps_yaml, ["a.allowed.test", "b.allowed.test"])
    wait_for(lambda: w.get("b.allowed.test", user=user, password=password)[0] == 200, 20, what="ConfigMap swap")


def stop_ok(name):
    """SIGTERM (what the kubelet sends first) ends the container with exit 0. A container that
    has stopped already (Squid, once the sidecar controller stopped it) must have exited 0 too."""
    running = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"
    if running:
        podman("kill", "--signal", "TERM", name)
    rc = podman("wait", name, timeout=60).stdout.strip()
    assert rc == "0", f"{name} exit {rc}\n" + podman("logs", name, check=False).stdout[-3000:] + podman("logs", name, check=False).stderr[-3000:]


def test_supervise_layout():
    pod = Pod("supervise")
    try:
        pod.configure(["a.allowed.test"])
        ctl = pod.run("fps")
        try:
            wait_for(lambda: pod.admin("/readyz") == 200, 60, what="/readyz 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{pod.logs()}")
        agent_checks(pod)
        # Every process of the container runs as uid 13; the root filesystem is read-only.
        top = podman("top", ctl, "user", "comm").stdout.split("\n")[1:]
        assert top and all(line.split()[0] in ("proxy", "13") for line in top if line.strip()), top
        assert any("squid" in line for line in top), top
        assert podman("exec", ctl, "touch", "/usr/local/bin/x", check=False).returncode != 0
        stop_ok(ctl)
        assert "signal 15: shutting down" in pod.logs()
    finally:
        pod.close()


def test_sidecar_layout():
    pod = Pod("sidecar")
    try:
        pod.configure(["a.allowed.test"])
        pod.start_pod()
        ctl = pod.run("fps")
        squid = pod.run("squid")
        try:
            wait_for(lambda: pod.admin("/readyz") == 200, 60, what="/readyz 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{pod.logs()}")
        agent_checks(pod)
        # Squid runs in its own container (the controller only signals it through the shared pid
        # namespace), and it is the Squid the agents were answered by: its pid file says so.
        squid_pid = int(podman("inspect", "--format", "{{.State.Pid}}", squid).stdout)
        assert Path(f"/proc/{squid_pid}/comm").read_text().strip() == "squid"
        assert (pod.volumes["state"] / "run" / "squid.pid").exists()
        stop_ok(ctl)
        try:
            stop_ok(squid)
        except AssertionError as e:
            cache_log = (pod.volumes["state"] / "run" / "cache.log").read_text(errors="replace")
            raise AssertionError(f"{e}\n{pod.logs()[-4000:]}\n--- cache.log\n{cache_log[-3000:]}")
    finally:
        pod.close()


# ---- the rolling update: two pods of the DaemonSet on one node ---------------------------------

LOADGEN = Path(os.environ.get("LOADGEN", ROOT / "build" / "bench" / "asan" / "loadgen"))
HARNESS = ROOT / "tests" / "integration"

# Run inside the node's network namespace (ip netns exec), with the test harness's origin and
# fresh-connection prober: each prints what it has to say and stops when its stdin closes.
ORIGIN_PY = """
import sys
sys.path.insert(0, sys.argv[1])
from fpsharness import Origin
class BacklogOrigin(Origin):
    request_queue_size = 4096  # a real server's backlog: resumed agents open many connections at once
o = BacklogOrigin()
print(o.port, flush=True)
sys.stdin.read()
"""
PROBER_PY = """
import base64, json, sys, time
sys.path.insert(0, sys.argv[1])
from fpsharness import Prober, agent_credentials, fresh_request
user, password = agent_credentials(sys.argv[5], guid="00000000-0000-0000-0000-00000000f5e5")
auth = "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "\\r\\n"
class AuthProber(Prober):
    def run(self):
        while not self.stop_evt.is_set():
            self.count(fresh_request(self.proxy_port, self.host, self.port, headers=auth))
            time.sleep(self.interval)
p = AuthProber(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), interval=0.01)
p.start()
sys.stdin.read()
print(json.dumps(p.finish()), flush=True)
"""


class Node:
    """A network namespace standing for one node's network: both pods are hostNetwork, so they
    share it (and its 127.0.0.1), while each keeps its own pid namespace, as on a real node.
    net.ipv4.tcp_migrate_req is per network namespace: set here, it is this node's setting."""

    def __init__(self, migrate_req):
        self.name = f"fps-node-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.procs = []
        try:
            self.run("ip", "link", "set", "lo", "up")
            self.run("sysctl", "-q", "-w", f"net.ipv4.tcp_migrate_req={migrate_req}")
        except BaseException:
            self.close()
            raise

    def run(self, *argv):
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True, text=True)

    def spawn(self, *argv):
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def probe(name, path):
    """The pod's exec probe, as the kubelet runs it: `fps-controller get` in the container."""
    c = next(c for c in pod_spec("supervise")["containers"] if c["name"] == "fps")
    kind = "readinessProbe" if path == "/readyz" else "livenessProbe"
    cmd = c[kind]["exec"]["command"]
    assert cmd[-1] == path, cmd
    return podman("exec", name, *cmd, check=False, timeout=30).returncode


def container_log(name):
    return podman("logs", name, check=False).stdout + podman("logs", name, check=False).stderr


@pytest.mark.skipif(not LOADGEN.exists(), reason="needs the load generator: make -C bench all asan")
@pytest.mark.parametrize("migrate_req", [0, 1])
def test_rolling_update_two_pods_on_one_node_lose_no_request(migrate_req):
    """The DaemonSet's rolling update (maxSurge 1, maxUnavailable 0) on one node, with the image
    and the pod spec of the supervise overlay: pod A serves agents under load (keep-alive agents
    with credentials, and a fresh connection every 10 ms); pod B starts beside it on the same
    node network with its own pid namespace and emptyDirs: its Squid joins the proxy port, its
    admin endpoints take the spare address, and its own exec readiness probe says ready; then A
    is stopped as the kubelet deletes a pod (SIGTERM) and drains. 0 failed agent requests, with
    net.ipv4.tcp_migrate_req 0 (the default) and 1."""
    node = Node(migrate_req)
    a = b = None
    load = prober = None
    try:
        a, b = Pod("supervise"), Pod("supervise")
        for pod in (a, b):
            pod.netns = node.name
            pod.admin_port, pod.spare_port = 8079, 8078  # the manifest's own: the node is ours
        origin = node.spawn(sys.executable, "-c", ORIGIN_PY, str(HARNESS))
        oport = int(origin.stdout.readline())
        w = a.w
        w.origins.append(type("NodeOrigin", (), {"port": oport, "stop": lambda self: None})())
        w.set_hosts({"a.allowed.test": "127.0.0.1"})
        text = w.yaml(auth=True).replace(f"hosts_file: {w.hosts}", "hosts_file: /etc/fps/config/hosts")
        a.write_config(text, ["a.allowed.test"])
        w.write_keys()
        a.secret_perms()
        # Both pods mount the same ConfigMap and Secret; each has its own state and /tmp.
        b.volumes["config"], b.volumes["secrets"] = a.volumes["config"], a.volumes["secrets"]

        ctl_a = a.run("fps")
        wait_for(lambda: probe(ctl_a, "/readyz") == 0, 90, interval=0.5, what="pod A ready (its exec probe)")
        load = node.spawn(str(LOADGEN), "--proxy", w.proxy, "--apikey", w.API_KEY, "--agents", "100",
                          "--duration", "600", "--timeout", "10000", "--url", f"http://a.allowed.test:{oport}/",
                          "--json", "-")
        prober = node.spawn(sys.executable, "-c", PROBER_PY, str(HARNESS), str(w.port), "a.allowed.test", str(oport),
                            w.API_KEY)
        before = (a.volumes["state"] / "run" / "access.log")
        wait_for(lambda: before.exists() and before.stat().st_size > 20000, 60, what="load on pod A")

        ctl_b = b.run("fps")
        wait_for(lambda: probe(ctl_b, "/readyz") == 0, 120, interval=0.5,
                 what=f"pod B ready (its exec probe)\n{container_log(ctl_b)[-3000:]}")
        blog = container_log(ctl_b)
        assert "joining it (SO_REUSEPORT)" in blog and "another pid namespace" in blog, blog[-3000:]
        assert "using the spare address 127.0.0.1:8078" in blog, blog[-3000:]
        assert (b.volumes["state"] / "admin.address").read_text().startswith("127.0.0.1:8078 ")
        assert (a.volumes["state"] / "admin.address").read_text().startswith("127.0.0.1:8079 ")
        # Each pod's probes reach its own controller: A's still answers for A while B is up.
        assert probe(ctl_a, "/healthz") == 0 and probe(ctl_b, "/healthz") == 0

        # The DaemonSet controller deletes the old pod: the kubelet sends SIGTERM.
        podman("stop", "-t", "45", ctl_a, timeout=120)
        rc = podman("inspect", "--format", "{{.State.ExitCode}}", ctl_a).stdout.strip()
        alog = container_log(ctl_a)
        assert rc == "0", alog[-3000:]
        assert "no longer accepts on port" in alog and "drained" in alog, alog[-3000:]
        # B serves alone; its probes still find it on the spare address.
        b_served = (b.volumes["state"] / "run" / "access.log")
        size = b_served.stat().st_size if b_served.exists() else 0
        wait_for(lambda: b_served.exists() and b_served.stat().st_size > size + 20000, 60, what="load on pod B alone")
        assert probe(ctl_b, "/readyz") == 0

        load.send_signal(signal.SIGINT)  # loadgen reports as at the end of its duration
        out, err = load.communicate(timeout=60)
        assert load.returncode == 0, err[-2000:]
        result = json.loads(out)
        pout, _ = prober.communicate("", timeout=60)
        fresh = json.loads(pout.strip().splitlines()[-1])
        bad = {f"status {k}": v for k, v in result["status"].items() if not k.startswith("2") and v}
        bad.update({k: v for k, v in result["errors"].items() if v})
        bad.update({f"fresh {k}": v for k, v in fresh.items() if k != "200" and v})
        print(f"ROLLING UPDATE tcp_migrate_req={migrate_req}: {result['requests']} requests, "
              f"{sum(fresh.values())} fresh connections, failed {bad or 0}, "
              f"availability {json.dumps(result.get('availability', {}))}")
        assert result["requests"] > 1000 and sum(fresh.values()) > 50, (result["requests"], fresh)
        assert bad == {}, (result["status"], result["errors"], fresh)
        stop_ok(ctl_b)
    finally:
        for p in (load, prober):
            if p is not None and p.poll() is None:
                p.kill()
        node.close()
        for pod in (a, b):
            if pod is not None:
                pod.close()
