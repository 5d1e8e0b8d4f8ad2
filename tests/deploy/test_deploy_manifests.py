"""3. Invariants on the built manifests: what deploy/README.md and the operator notes require."""

import os
import re

import pytest
import yaml

from deploy_helpers import (CONTROLLER, OVERLAYS, REPO, WORKLOAD, admin_port_of, arg_value, built,
                            container, dockerfile_stages, find, pod_spec, proxy_port_of,
                            seed_config)


def workload(overlay):
    return find(built(overlay), *WORKLOAD)


def volumes_by_name(spec):
    return {v["name"]: v for v in spec.get("volumes", [])}


def all_containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request):
    return request.param


def test_host_network_and_dns(overlay):
    spec = pod_spec(workload(overlay))
    assert spec.get("hostNetwork") is True
    # With hostNetwork, anything else silently falls back to the node's resolv.conf.
    assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet"


def test_proxy_port_matches_fps_yaml(overlay):
    # Port 8080 is declared once, on the container that runs Squid: the controller in
    # supervise mode, the squid container in sidecar mode.
    fps_yaml, _ = seed_config()
    spec = pod_spec(workload(overlay))
    declared = [(c["name"], p["containerPort"]) for c in spec["containers"] for p in c.get("ports", [])
                if p.get("name") != "admin"]
    runs_squid = "squid" if overlay == "sidecar" else CONTROLLER
    assert declared == [(runs_squid, 8080)]
    assert proxy_port_of(fps_yaml) == 8080
    # The admin port is declared too (host port bookkeeping), and it is the probes' port.
    admin = [p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if p.get("name") == "admin"]
    assert admin == [admin_port_of(fps_yaml)]


def test_update_strategy_never_surges_on_host_ports(overlay):
    w = workload(overlay)
    if w["kind"] == "DaemonSet":
        ru = w["spec"]["updateStrategy"].get("rollingUpdate", {})
        assert w["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        assert ru.get("maxSurge", 0) in (0, "0", "0%"), "a surge pod would collide on host port 8080"
    else:
        assert w["spec"]["strategy"]["type"] == "Recreate"


def test_no_subpath_on_configmap_or_secret_mounts(overlay):
    spec = pod_spec(workload(overlay))
    vols = volumes_by_name(spec)
    for c in all_containers(spec):
        for m in c.get("volumeMounts", []):
            v = vols[m["name"]]
            if "configMap" in v or "secret" in v or "projected" in v:
                assert "subPath" not in m and "subPathExpr" not in m, (c["name"], m)


def test_probes_on_loopback_admin_port(overlay):
    fps_yaml, _ = seed_config()
    c = container(pod_spec(workload(overlay)), CONTROLLER)
    admin = arg_value(c["args"], "--admin")
    port = admin_port_of(fps_yaml)
    assert port == 8079
    if admin is not None:
        host, _, admin_port = admin.rpartition(":")
        assert host == "127.0.0.1" and int(admin_port) == port, admin
    assert (fps_yaml.get("admin") or {}).get("bind", "127.0.0.1") == "127.0.0.1"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind not in c:
            continue
        get = c[kind]["httpGet"]
        assert get["host"] == "127.0.0.1", kind
        assert int(get["port"]) == port, kind


def test_arg_paths_are_mounted(overlay):
    spec = pod_spec(workload(overlay))
    vols = volumes_by_name(spec)
    c = container(spec, CONTROLLER)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    expect = {"--config-dir": "configMap", "--secrets-dir": "secret", "--state-dir": "emptyDir"}
    for flag, source in expect.items():
        path = arg_value(c["args"], flag)
        assert path, f"{flag} missing from args"
        assert path in mounts, f"{flag} {path} is not a mounted volume"
        vol = vols[mounts[path]["name"]]
        assert source in vol, f"{flag} {path} is {vol}, expected a {source}"
    assert mounts[arg_value(c["args"], "--config-dir")].get("readOnly") is True
    assert mounts[arg_value(c["args"], "--secrets-dir")].get("readOnly") is True
    # The volumes refer to the objects the seed creates.
    seed = built("seed")
    cm = vols[mounts[arg_value(c["args"], "--config-dir")]["name"]]["configMap"]["name"]
    sec = vols[mounts[arg_value(c["args"], "--secrets-dir")]["name"]]["secret"]["secretName"]
    find(seed, "ConfigMap", cm)
    find(seed, "Secret", sec)


def test_writable_paths_are_emptydirs(overlay):
    # Read-only root filesystem: the state dir and /tmp must be volumes.
    spec = pod_spec(workload(overlay))
    vols = volumes_by_name(spec)
    for c in spec["containers"]:
        mounts = {m["mountPath"]: vols[m["name"]] for m in c.get("volumeMounts", [])}
        for path in ("/var/lib/fps", "/tmp"):
            assert path in mounts and "emptyDir" in mounts[path], (c["name"], path)


def test_security_context(overlay):
    spec = pod_spec(workload(overlay))
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    for c in all_containers(spec):
        sc = c.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]
        assert sc.get("privileged") is not True, c["name"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        assert isinstance(uid, int) and uid != 0, c["name"]


def test_user_matches_image(overlay):
    spec = pod_spec(workload(overlay))
    final = dockerfile_stages()[-1]
    user = [rest for ins, rest in final["ins"] if ins == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert spec["securityContext"]["runAsUser"] == int(uid)
    assert spec["securityContext"]["runAsGroup"] == int(gid or uid)


def test_secret_not_world_readable_but_readable_by_the_process(overlay):
    spec = pod_spec(workload(overlay))
    pod_sc = spec["securityContext"]
    for v in spec["volumes"]:
        if "secret" not in v:
            continue
        mode = v["secret"].get("defaultMode", 0o644)
        for item in v["secret"].get("items", []):
            assert item.get("mode", mode) & 0o007 == 0, item
        assert mode & 0o007 == 0, f"{v['name']}: mode {mode:o} is world-accessible"
        # fsGroup makes the files group-owned by a group the process has: it needs group read.
        assert mode & 0o040, f"{v['name']}: mode {mode:o} lacks group read"
        assert pod_sc.get("fsGroup") in (pod_sc.get("runAsGroup"),) + tuple(pod_sc.get("supplementalGroups", []))


def quantity(q):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?", str(q))
    assert m, q
    n, unit = float(m.group(1)), m.group(2)
    return n * {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]


def test_resources(overlay):
    spec = pod_spec(workload(overlay))
    total_limit_mem = 0
    for c in all_containers(spec):
        res = c.get("resources", {})
        for section in ("requests", "limits"):
            for what in ("cpu", "memory"):
                assert what in res.get(section, {}), f"{c['name']}: {section}.{what} missing"
        for what in ("cpu", "memory"):
            assert quantity(res["requests"][what]) <= quantity(res["limits"][what]), (c["name"], what)
        total_limit_mem += quantity(res["limits"]["memory"])
    # docs/squid-facts.md: Squid alone reaches 103 MB RSS at 1000 agents; leave room for the rest.
    assert total_limit_mem >= 256 * 2**20


def squid_shutdown_lifetime():
    """shutdown_lifetime of the rendered squid.conf (from the template), else Squid's 30 s."""
    path = os.path.join(REPO, "squid-templates", "squid.conf.tmpl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            m = re.search(r"^shutdown_lifetime\s+(\d+)\s*(seconds?|minutes?)?", f.read(), re.M)
        if m:
            return int(m.group(1)) * (60 if (m.group(2) or "").startswith("minute") else 1)
    return 30


def test_termination_grace_covers_squid_shutdown(overlay):
    # Below Squid's shutdown_lifetime plus a margin the kubelet SIGKILLs it mid-shutdown.
    grace = pod_spec(workload(overlay))["terminationGracePeriodSeconds"]
    assert grace >= squid_shutdown_lifetime() + 15, grace


def test_image_is_pinned(overlay):
    for c in all_containers(pod_spec(workload(overlay))):
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] or "@" in image, image
        assert not image.endswith(":latest"), image


def test_workload_in_namespace_with_label_selector(overlay):
    w = workload(overlay)
    assert w["metadata"]["namespace"] == "fps"
    sel = w["spec"]["selector"]["matchLabels"]
    labels = w["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sel.items())


# ---- sidecar ----------------------------------------------------------------------------------

def test_supervise_is_one_container():
    spec = pod_spec(workload("supervise"))
    assert [c["name"] for c in spec["containers"]] == [CONTROLLER]
    assert not spec.get("shareProcessNamespace")
    assert arg_value(container(spec, CONTROLLER)["args"], "--mode") in (None, "supervise")


def test_sidecar_shape():
    spec = pod_spec(workload("sidecar"))
    assert spec.get("shareProcessNamespace") is True
    names = [c["name"] for c in spec["containers"]]
    assert sorted(names) == sorted([CONTROLLER, "squid"])
    ctl = container(spec, CONTROLLER)
    assert arg_value(ctl["args"], "--mode") == "sidecar"
    state = arg_value(ctl["args"], "--state-dir")
    vols = volumes_by_name(spec)
    ctl_mounts = {m["mountPath"]: m["name"] for m in ctl["volumeMounts"]}
    squid = container(spec, "squid")
    squid_mounts = {m["mountPath"]: m["name"] for m in squid["volumeMounts"]}
    # Both containers share the state emptyDir at the same path (squid.conf, pid file, snapshot).
    assert ctl_mounts[state] == squid_mounts[state]
    assert "emptyDir" in vols[squid_mounts[state]]
    # Squid's helpers run in the squid container and read files by the controller's paths.
    for flag in ("--config-dir", "--secrets-dir"):
        path = arg_value(ctl["args"], flag)
        assert squid_mounts.get(path) == ctl_mounts[path], flag
    # It starts Squid in the foreground on the controller's rendered config, once that exists.
    script = " ".join(squid.get("command", []) + squid.get("args", []))
    assert f"{state}/current/squid.conf" in script
    assert re.search(r"exec squid -N -f", script)
    # Same uid in both containers: the controller may signal Squid without CAP_KILL.
    pod_uid = spec["securityContext"]["runAsUser"]
    uids = {c.get("securityContext", {}).get("runAsUser", pod_uid) for c in spec["containers"]}
    assert len(uids) == 1
    # The squid container cannot be killed by liveness while it waits for squid.conf.
    assert "startupProbe" in squid


# ---- seed ConfigMap and Secret -----------------------------------------------------------------

def test_seed_config_is_complete():
    fps_yaml, whitelist = seed_config()
    assert isinstance(whitelist.get("version"), int)
    assert isinstance(whitelist.get("domains"), list)
    assert (fps_yaml.get("whitelist") or {}).get("apply", "live") == "live"
    # A configured tunnel needs the CA in the Secret.
    secret = find(built("seed"), "Secret", "fps-secrets")
    if fps_yaml.get("tunnel"):
        assert "tunnel-ca.pem" in secret["stringData"]


def test_seed_secret_holds_only_placeholders():
    secret = find(built("seed"), "Secret", "fps-secrets")
    assert "data" not in secret, "use stringData with visible placeholders, not base64 data"
    keys = yaml.safe_load(secret["stringData"]["apikeys.json"])["keys"]
    assert keys
    for k in keys:
        assert "REPLACE" in k["key"] or "PLACEHOLDER" in k["key"], k
    for name, value in secret["stringData"].items():
        assert "REPLACE" in value or "PLACEHOLDER" in value, name
        assert "PRIVATE KEY-----" not in value and "BEGIN CERTIFICATE" not in value, name


# ---- cloud -------------------------------------------------------------------------------------

def cloud():
    objs = built("cloud")
    return (find(objs, "Deployment", "fps-tunnel"), find(objs, "Service", "fps-tunnel"),
            find(objs, "ConfigMap", "fps-cloud-stunnel"), find(objs, "ConfigMap", "fps-cloud-squid"))


def stunnel_option(conf, key):
    for line in conf.splitlines():
        line = line.strip()
        if line.startswith((";", "#")):
            continue
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    return None


def test_cloud_service_443_reaches_stunnel():
    dep, svc, stunnel_cm, squid_cm = cloud()
    spec = pod_spec(dep)
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 443
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    stunnel = container(spec, "stunnel")
    named = {p["name"]: p["containerPort"] for p in stunnel["ports"]}
    target = named[port["targetPort"]] if isinstance(port["targetPort"], str) else port["targetPort"]
    conf = stunnel_cm["data"]["stunnel.conf"]
    assert stunnel_option(conf, "accept").rsplit(":", 1)[1] == str(target)
    # stunnel hands connections to the cloud Squid's port.
    squid_conf = squid_cm["data"]["squid.conf"]
    http_port = re.search(r"^http_port\s+(\S+)", squid_conf, re.M).group(1)
    assert stunnel_option(conf, "connect") == http_port
    assert http_port.startswith("127.0.0.1:"), "the cloud Squid must only be reachable via stunnel"


def test_cloud_files_are_mounted():
    dep, _svc, stunnel_cm, squid_cm = cloud()
    spec = pod_spec(dep)
    vols = volumes_by_name(spec)
    stunnel = container(spec, "stunnel")
    mounts = {m["mountPath"]: vols[m["name"]] for m in stunnel["volumeMounts"]}
    conf = stunnel_cm["data"]["stunnel.conf"]
    for key in ("cert", "key"):
        path = stunnel_option(conf, key)
        d, _, _f = path.rpartition("/")
        assert d in mounts and "secret" in mounts[d], (key, path)
    cmd_conf = stunnel["command"][-1]
    assert cmd_conf.rpartition("/")[0] in mounts
    squid = container(spec, "squid")
    smounts = {m["mountPath"]: vols[m["name"]] for m in squid["volumeMounts"]}
    script = " ".join(squid["command"])
    conf_path = re.search(r"squid -N -f (\S+)", script).group(1)
    assert conf_path.rpartition("/")[0] in smounts
    # Every file Squid writes is under /tmp, an emptyDir.
    for directive in ("pid_filename", "coredump_dir", "cache_log"):
        value = re.search(rf"^{directive}\s+(\S+)", squid_cm["data"]["squid.conf"], re.M).group(1)
        assert value == "/tmp" or value.startswith("/tmp/"), directive
    assert "emptyDir" in smounts["/tmp"]


def test_cloud_security():
    dep, _svc, _s, _q = cloud()
    spec = pod_spec(dep)
    assert not spec.get("hostNetwork")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][section]), c["name"]
        for m in c.get("volumeMounts", []):
            assert "subPath" not in m
    for v in spec["volumes"]:
        if "secret" in v:
            assert v["secret"]["defaultMode"] & 0o007 == 0


def test_cloud_squid_allows_only_vendor_domains_from_localhost():
    _d, _s, _st, squid_cm = cloud()
    conf = squid_cm["data"]["squid.conf"]
    rules = re.findall(r"^http_access\s+(.*)$", conf, re.M)
    assert rules[-1] == "deny all"
    allows = [r for r in rules if r.startswith("allow")]
    assert allows and all("localhost" in r for r in allows), allows
