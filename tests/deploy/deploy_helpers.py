"""Shared helpers for tests/deploy (a plain module, not conftest.py, so it cannot collide with
other test directories' conftest files)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
OVERLAYS = {
    "supervise": os.path.join(K8S, "overlays", "supervise"),
    "sidecar": os.path.join(K8S, "overlays", "sidecar"),
}
SEED = os.path.join(K8S, "seed")
CLOUD = os.path.join(DEPLOY, "cloud")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
DOCKERIGNORE = os.path.join(DEPLOY, "Dockerfile.dockerignore")

# Kustomizations the tests build, by a short name.
BUILDS = {**OVERLAYS, "seed": SEED, "cloud": CLOUD}

CONTROLLER = "fps"          # name of the controller container in base/daemonset.yaml
WORKLOAD = ("DaemonSet", "fps")


def kubectls() -> list[str]:
    """The kubectl binaries the manifests are rendered with: $KUBECTL first (`make integration`
    points it at Debian 12's kubectl 1.20, kustomize v2.0.3, the oldest the manifests support),
    then $KUBECTL_ALT and the kubectl on PATH (a current kustomize, if there is one)."""
    found = []
    for exe in (os.environ.get("KUBECTL"), os.environ.get("KUBECTL_ALT"), shutil.which("kubectl")):
        if exe and os.access(exe, os.X_OK) and os.path.realpath(exe) not in map(os.path.realpath, found):
            found.append(exe)
    return found


def kustomize(path: str, exe: str | None = None) -> subprocess.CompletedProcess:
    exe = exe or kubectls()[0]
    return subprocess.run([exe, "kustomize", path], capture_output=True, text=True, timeout=120)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> str:
    # Cache as YAML text so every caller gets a fresh, mutable copy.
    assert kubectls(), "no kubectl: set $KUBECTL (make integration extracts Debian's kubernetes-client)"
    run = kustomize(BUILDS[name])
    assert run.returncode == 0, f"kubectl kustomize {BUILDS[name]}: {run.stderr}"
    return run.stdout


def res_id(obj: dict) -> tuple[str, str, str, str]:
    md = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), md.get("namespace") or "", md.get("name", ""))


def built(name: str) -> list[dict]:
    return [o for o in yaml.safe_load_all(_built(name)) if o]


def find(objs: list[dict], kind: str, name: str) -> dict:
    for obj in objs:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise AssertionError(f"{kind}/{name} not in the built output")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(spec: dict, name: str) -> dict:
    for c in spec.get("containers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"container {name} not found")


def arg_value(args: list[str], flag: str) -> str | None:
    """Value of `--flag V` or `--flag=V`."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def seed_config() -> tuple[dict, dict]:
    """(fps.yaml, whitelist.json) of the example ConfigMap."""
    cm = find(built("seed"), "ConfigMap", "fps-config")
    return yaml.safe_load(cm["data"]["fps.yaml"]), json.loads(cm["data"]["whitelist.json"])


def admin_port_of(fps_yaml: dict) -> int:
    return int(((fps_yaml or {}).get("admin") or {}).get("port", 8079))


def proxy_port_of(fps_yaml: dict) -> int:
    return int(((fps_yaml or {}).get("proxy") or {}).get("port", 8080))


# ---- Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions(path: str = DOCKERFILE) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], continuation lines joined and comment lines dropped, the way
    the Dockerfile frontend reads them."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out: list[tuple[str, str]] = []
    buf = ""
    for line in lines:
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continuation
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        m = re.match(r"(\w+)\s*(.*)", buf, re.S)
        if m:
            out.append((m.group(1).upper(), m.group(2).strip()))
        buf = ""
    return out


def dockerfile_stages(path: str = DOCKERFILE) -> list[dict]:
    """[{'from': image, 'name': alias, 'ins': [(INS, args), ...]}]; ARGs before the first FROM
    are substituted into FROM lines."""
    args: dict[str, str] = {}
    stages: list[dict] = []
    for ins, rest in dockerfile_instructions(path):
        if ins == "ARG" and not stages:
            key, _, val = rest.partition("=")
            args[key.strip()] = val.strip().strip('"')
            continue
        if ins == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
            parts = image.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": name, "ins": []})
            continue
        if stages:
            stages[-1]["ins"].append((ins, rest))
    return stages


def copy_sources(rest: str) -> tuple[dict, list[str], str]:
    """Parse COPY/ADD arguments: ({'from': ...}, [sources], dest)."""
    items = json.loads(rest) if rest.startswith("[") else rest.split()
    flags = {}
    while items and items[0].startswith("--"):
        key, _, val = items.pop(0)[2:].partition("=")
        flags[key] = val
    return flags, items[:-1], items[-1]


# ---- running things as the pod's user ----------------------------------------------------------

POD_UID = 13   # runAsUser/runAsGroup/fsGroup of the manifests (Debian's `proxy`)


def world_traversable_tmpdir(prefix: str) -> str:
    """A temp dir that uid 13 can reach (pytest's tmp_path lives under a 0700 directory)."""
    import tempfile
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return path


def as_pod_user() -> list[str]:
    """Command prefix that runs a program as the pod's uid/gid with fsGroup as its only group,
    when we are root; nothing when already unprivileged. setpriv execs in place (no fork), so
    signals sent to the pid reach the program itself."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={POD_UID}", f"--regid={POD_UID}", "--clear-groups"]


def path_mapper(mapping: dict[str, str]):
    """Return f(text) that rewrites absolute pod paths (and anything below them) to local ones in
    one pass, so a replacement is never rewritten again (/tmp inside /tmp/fps-... stays)."""
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(k) for k in keys) + r")(?=/|\s|$|[\"':;,])")

    def rewrite(text: str) -> str:
        return pattern.sub(lambda m: mapping[m.group(1)], text)
    return rewrite
