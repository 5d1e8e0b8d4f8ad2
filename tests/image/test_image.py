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
and SIGTERM ends the controller with exit 0. Needs root and podman: `make test-image`.
"""
import json
import os
import shutil
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


def run_args(spec, c, name, volumes, admin_port, pod=None):
    """The `podman run` arguments the kubelet's view of container c amounts to. pod: the podman
    pod that holds the shared namespaces (network, pid) of a multi-container layout."""
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    args = ["run", "-d", "--name", name, "--user", f"{uid}:{gid}"]
    if psc.get("fsGroup") is not None:
        args += ["--group-add", str(psc["fsGroup"])]
    if pod:
        args += ["--pod", pod]
    elif spec.get("hostNetwork"):
        args += ["--network", "host"]
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
    rest = (cmd[1:] if cmd else []) + [a.replace("127.0.0.1:8079", f"127.0.0.1:{admin_port}") for a in c.get("args", [])]
    return args + [IMAGE] + rest


class Pod:
    """The volumes of one pod and its containers."""

    def __init__(self, overlay):
        self.spec = pod_spec(overlay)
        self.w = World(f"image-{overlay}")
        self.names = []
        self.pod = None
        self.admin_port = free_port()
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
        podman(*run_args(self.spec, c, name, self.volumes, self.admin_port, self.pod))
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
