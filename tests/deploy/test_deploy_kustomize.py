"""2. Every kustomization builds. The offline renderer (deploy_kustomize.py) always runs; when a
kubectl with kustomize >= v4 is available (PATH or $KUBECTL) its `kubectl kustomize` output must
be the same set of objects, which keeps the renderer honest."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

import deploy_kustomize
from deploy_helpers import BUILDS, K8S, built
from deploy_kustomize import res_id


EXPECTED = {
    "supervise": {("Namespace", "fps"), ("DaemonSet", "fps")},
    "sidecar": {("Namespace", "fps"), ("DaemonSet", "fps")},
    "seed": {("ConfigMap", "fps-config"), ("Secret", "fps-secrets")},
    "cloud": {("Namespace", "fps-cloud"), ("ConfigMap", "fps-cloud-stunnel"),
              ("ConfigMap", "fps-cloud-squid"), ("Deployment", "fps-tunnel"),
              ("Service", "fps-tunnel")},
}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_builds_offline(name):
    objs = built(name)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert kinds == EXPECTED[name]


def test_base_builds_and_leaves_config_and_secret_out():
    # `kubectl apply -k` of an overlay must never overwrite the customer's whitelist or keys.
    objs = deploy_kustomize.build(os.path.join(K8S, "base"))
    kinds = {o["kind"] for o in objs}
    assert "ConfigMap" not in kinds and "Secret" not in kinds, kinds


def test_no_generators_anywhere():
    # A configMapGenerator's hash suffix would restart the pod on every whitelist edit.
    for root, _dirs, files in os.walk(os.path.dirname(K8S)):
        for f in files:
            if f in deploy_kustomize.KUSTOMIZATION_NAMES:
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    k = yaml.safe_load(fh)
                assert not ({"configMapGenerator", "secretGenerator"} & set(k)), os.path.join(root, f)


def test_renderer_rejects_unsupported_fields(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(deploy_kustomize.KustomizeError):
        deploy_kustomize.build(str(tmp_path))


def test_renderer_strategic_merge_and_json6902(tmp_path):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "img:1", "args": ["p"], "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}}}))
    (tmp_path / "smp.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "a", "volumeMounts": [{"name": "w", "mountPath": "/w"}]},
            {"name": "b", "image": "img:1"}]}}}}))
    (tmp_path / "j.yaml").write_text(yaml.safe_dump([
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "q"}]))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "namespace": "n", "resources": ["d.yaml"],
        "patches": [{"path": "smp.yaml"},
                    {"path": "j.yaml", "target": {"kind": "Deployment", "name": "x"}}],
        "images": [{"name": "img", "newName": "reg/img", "newTag": "2"}]}))
    (obj,) = deploy_kustomize.build(str(tmp_path))
    a, b = obj["spec"]["template"]["spec"]["containers"]
    assert obj["metadata"]["namespace"] == "n"
    assert a["args"] == ["p", "q"]
    assert [m["mountPath"] for m in a["volumeMounts"]] == ["/v", "/w"]
    assert a["image"] == b["image"] == "reg/img:2"


def _kubectl():
    exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not exe:
        return None, "no kubectl on PATH (set $KUBECTL to use one)"
    try:
        out = subprocess.run([exe, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=60)
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return None, f"{exe}: cannot read its version: {e}"
    m = re.match(r"v?(\d+)", version or "")
    if not m or int(m.group(1)) < 4:
        return None, f"{exe}: embedded kustomize {version or 'unknown (kubectl < 1.21)'} is older than v4"
    return exe, version


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_same_output_as_kubectl_kustomize(name):
    exe, why = _kubectl()
    if not exe:
        pytest.skip(why)
    run = subprocess.run([exe, "kustomize", BUILDS[name]], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "deprecated" not in run.stderr.lower(), run.stderr
    theirs = {res_id(o): o for o in yaml.safe_load_all(run.stdout) if o}
    ours = {res_id(o): o for o in built(name)}
    assert theirs.keys() == ours.keys()
    for rid in ours:
        assert ours[rid] == theirs[rid], rid
