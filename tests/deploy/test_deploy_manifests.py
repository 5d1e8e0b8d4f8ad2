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


def test_no_host_ports_so_the_new_pod_of_a_rolling_update_is_placed(overlay):
    """With hostNetwork the API server turns every containerPort into a hostPort, and the
    scheduler's NodePorts filter keeps a pod off a node where another pod declares the same
    host port: the surge pod of a rolling update would stay Pending beside the old one
    (deploy/README.md, "Upgrade and roll back"). So no container declares ports; the proxy
    port is fps.yaml's."""
    fps_yaml, _ = seed_config()
    spec = pod_spec(workload(overlay))
    for c in all_containers(spec):
        assert not c.get("ports"), (c["name"], c.get("ports"))
    assert proxy_port_of(fps_yaml) == 8080


def test_update_strategy_starts_the_new_pod_before_the_old_one_stops(overlay):
    """maxSurge 1, maxUnavailable 0: the new pod runs beside the old one on the node, and the
    old one is deleted (and drains) only once the new one is ready, which a readiness probe
    decides."""
    w = workload(overlay)
    assert w["kind"] == "DaemonSet"
    assert w["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    ru = w["spec"]["updateStrategy"]["rollingUpdate"]
    assert ru.get("maxSurge") in (1, "1"), ru
    assert ru.get("maxUnavailable") in (0, "0", "0%"), ru
    assert "readinessProbe" in container(pod_spec(w), CONTROLLER)


def test_no_subpath_on_configmap_or_secret_mounts(overlay):
    spec = pod_spec(workload(overlay))
    vols = volumes_by_name(spec)
    for c in all_containers(spec):
        for m in c.get("volumeMounts", []):
            v = vols[m["name"]]
            if "configMap" in v or "secret" in v or "projected" in v:
                assert "subPath" not in m and "subPathExpr" not in m, (c["name"], m)


def test_probes_find_this_pods_own_admin_address(overlay):
    """Both pods of a rolling update share the node's 127.0.0.1: the controller binds --admin,
    or --admin-spare while the other pod holds it, both on loopback and distinct, and every
    probe is an exec of `fps-controller get --state-dir <the pod's state emptyDir> PATH`, which
    reads the address this pod's controller wrote there. No probe names a fixed port the two
    pods share (httpGet, tcpSocket, or a curl on the proxy port)."""
    fps_yaml, _ = seed_config()
    spec = pod_spec(workload(overlay))
    c = container(spec, CONTROLLER)
    admin, spare = arg_value(c["args"], "--admin"), arg_value(c["args"], "--admin-spare")
    assert admin and spare, c["args"]
    host, _, admin_port = admin.rpartition(":")
    spare_host, _, spare_port = spare.rpartition(":")
    assert host == spare_host == "127.0.0.1", (admin, spare)
    assert int(admin_port) == admin_port_of(fps_yaml) == 8079
    assert int(spare_port) != int(admin_port)
    assert int(spare_port) not in (proxy_port_of(fps_yaml), 9090)
    assert (fps_yaml.get("admin") or {}).get("bind", "127.0.0.1") == "127.0.0.1"
    state = arg_value(c["args"], "--state-dir")
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for kind, path in want.items():
        assert kind in c, kind
        assert c[kind]["exec"]["command"] == [c["command"][0], "get", "--state-dir", state, path], kind
    for other in all_containers(spec):
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = other.get(kind)
            if not probe:
                continue
            assert "httpGet" not in probe and "tcpSocket" not in probe, (other["name"], kind)
            text = " ".join(probe["exec"]["command"])
            assert f":{proxy_port_of(fps_yaml)}" not in text and ":8079" not in text, (other["name"], kind, text)


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


def controller_bound_ms(name, pattern=None):
    """A time bound of the drain as the controller's sources define it (any file: the
    controller is being split into files), in ms."""
    import glob
    rx = re.compile(pattern or rf"#define\s+{name}\s+(\d+)")
    for path in sorted(glob.glob(os.path.join(REPO, "fps-controller", "*.c"))):
        with open(path, encoding="utf-8") as f:
            m = rx.search(f.read())
        if m:
            return int(m.group(1))
    raise AssertionError(f"{name} not found in fps-controller/*.c")


def test_termination_grace_covers_the_drain(overlay):
    """The old pod of a rolling update drains on SIGTERM (docs/operations.md, "Stopping"): its
    accept queue (HO_QUEUE_MS), the helper lookups (DRAIN_QUIET_MS), the drain configuration's
    reconfigure (2 s with 100,000 entries), the connections closing after their answers
    (DRAIN_MAX_MS), then Squid's stop (SIGKILL after its stop grace, above shutdown_lifetime) and
    stunnel's. The kubelet's SIGKILL must come after all of it."""
    grace = pod_spec(workload(overlay))["terminationGracePeriodSeconds"]
    squid_stop = controller_bound_ms("squid", r'sup_init\(&\w+(?:\.|->)squid, "squid", \w+, (\d+)\)')
    stunnel_stop = controller_bound_ms("stunnel", r'sup_init\(&\w+(?:\.|->)stunnel, "stunnel", \w+, (\d+)\)')
    assert squid_stop >= squid_shutdown_lifetime() * 1000
    worst_ms = (controller_bound_ms("HO_QUEUE_MS") + controller_bound_ms("DRAIN_QUIET_MS") + 2000 +
                controller_bound_ms("DRAIN_MAX_MS") + squid_stop + stunnel_stop)
    assert grace * 1000 >= worst_ms + 5000, (grace, worst_ms)


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
    # Its probes ask this pod's own Squid, on the controller-only port the state directory
    # names: during a rolling update the two pods' Squids share the proxy port.
    for kind in ("startupProbe", "livenessProbe"):
        assert f"{state}/run/mgr.port" in " ".join(squid[kind]["exec"]["command"]), kind


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
