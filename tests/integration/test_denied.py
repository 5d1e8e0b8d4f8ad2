"""The denied-destination report (docs/operations.md): real agents (curl, with the products'
credentials) denied by real Squid and fps-acl; /status "denied", GET /denied and its whitelist
fragment, the metrics, `fps-controller denied`, and counts that survive helper restarts and
Squid reconfigures."""
import json
import os
import signal
import ssl
import subprocess
import time

import pytest

from fpsharness import BIN, World, agent_credentials, curl, free_port, make_ca_and_cert, wait_for
from test_admin import metrics, request, status_json

NAMES = {"a.allowed.test": "127.0.0.1", "tls.allowed.test": "127.0.0.1"}


@pytest.fixture
def world():
    w = World("denied")
    w.set_hosts(NAMES)
    w.http = w.origin()
    ca, cert, key = make_ca_and_cert(w.dir / "pki", ["tls.allowed.test"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    w.https = w.origin(name="https", ssl_ctx=ctx)
    w.write_keys()
    w.write_config(w.yaml(auth=True, connect_ports=[w.https.port]),
                   {"version": 1, "domains": ["a.allowed.test", "tls.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()


def agent(w, product="ApexOne"):
    return agent_credentials(w.API_KEY, product=product)


def denied(w):
    code, h, body = request(w.admin_port, "/denied")
    assert code == 200 and h["content-type"] == "application/json"
    return json.loads(body)


def entry(d, host, port):
    return next((e for e in d["top"] if e["host"] == host and e["port"] == port), None)


def deny_some(w):
    """3 GETs by ApexOne and 1 by DeepSec to needed.vendor.test, 2 CONNECTs to
    tls.needed.test, 1 allowed GET. Returns the time just before the first."""
    t0 = time.time()
    apex, apex_pw = agent(w)
    deep, deep_pw = agent(w, "DeepSec")
    for _ in range(3):
        assert w.get("needed.vendor.test", user=apex, password=apex_pw)[0] == 403
    assert w.get("Needed.Vendor.test.", user=deep, password=deep_pw)[0] == 403  # as Squid gives it: normalized
    for _ in range(2):
        code, _ = curl(f"https://tls.needed.test:{w.https.port}/", w.proxy, user=apex, password=apex_pw)
        assert code == 403
    assert w.get("a.allowed.test", user=apex, password=apex_pw)[0] == 200
    return t0


def test_denials_are_reported_with_port_products_and_times(world):
    t0 = deny_some(world)
    http_port = world.http.port
    wait_for(lambda: (e := entry(denied(world), "needed.vendor.test", http_port)) and e["count"] == 4, 15,
             what="4 denials of needed.vendor.test in /denied")
    d = status_json(world.admin_port)["denied"]
    e = entry(d, "needed.vendor.test", http_port)
    assert e["count"] == 4
    assert sorted(e["products"]) == ["ApexOne", "DeepSec"]
    assert e["first_seen"] <= e["last_seen"]
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 1)) <= e["first_seen"]
    c = entry(d, "tls.needed.test", world.https.port)
    assert c is not None and c["count"] == 2 and c["products"] == ["ApexOne"]
    assert d["top"][0]["host"] == "needed.vendor.test"  # most denied first
    assert d["total"] == 6 and d["distinct"] == 2 and d["truncated"] is False
    assert d["since"] is not None
    assert all(x["host"] != "a.allowed.test" for x in d["top"])  # allowed requests are not counted


def test_denied_endpoint_whitelist_fragment_and_metrics(world):
    deny_some(world)
    wait_for(lambda: denied(world)["total"] == 6, 15, what="6 denials")
    code, h, body = request(world.admin_port, "/denied?format=whitelist")
    assert code == 200 and h["content-type"] == "application/json"
    assert json.loads(body) == {"domains": ["needed.vendor.test", "tls.needed.test"]}
    assert request(world.admin_port, "/denied?format=yaml")[0] == 400
    m = metrics(world.admin_port)
    assert m["fps_whitelist_denied_requests_total"] == 6
    assert m["fps_whitelist_denied_hosts"] == 2
    assert not any("needed" in k for k in m)  # no host label


def test_cli_prints_the_table_and_the_fragment(world):
    deny_some(world)
    wait_for(lambda: denied(world)["total"] == 6, 15, what="6 denials")
    admin = f"127.0.0.1:{world.admin_port}"
    p = subprocess.run([str(BIN / "fps-controller"), "denied", "--admin", admin], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("denied since ") and "6 requests, 2 destinations" in lines[0]
    row = next(l for l in lines if f"needed.vendor.test:{world.http.port}" in l)
    assert row.split()[0] == "4" and "ApexOne,DeepSec" in row
    frag = p.stdout[p.stdout.index("{"):]
    assert json.loads(frag) == {"domains": ["needed.vendor.test", "tls.needed.test"]}
    p = subprocess.run([str(BIN / "fps-controller"), "denied", "--admin", admin, "--json"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["total"] == 6
    p = subprocess.run([str(BIN / "fps-controller"), "denied", "--admin", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True)
    assert p.returncode == 3 and "cannot connect" in p.stderr


def helper_pids(w):
    d = w.state / "run" / "denied"
    return [int(n[len("acl-"):-len(".denied")]) for n in os.listdir(d) if n.endswith(".denied")]


def test_counts_survive_helper_restarts_and_squid_reconfigure(world):
    apex, apex_pw = agent(world)
    for _ in range(3):
        assert world.get("kept.vendor.test", user=apex, password=apex_pw)[0] == 403
    port = world.http.port
    wait_for(lambda: (e := entry(denied(world), "kept.vendor.test", port)) and e["count"] == 3, 15,
             what="3 denials")
    # A helper killed outright: its last file (written within a second) still counts.
    for pid in helper_pids(world):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: world.get("kept.vendor.test", user=apex, password=apex_pw)[0] == 403, 15,
             what="a new helper answering")
    wait_for(lambda: entry(denied(world), "kept.vendor.test", port)["count"] == 4, 15, what="4 after the kill")
    # A change to squid.conf reconfigures Squid, which restarts every helper.
    squid_pid = world.squid_pid()
    world.write_config(world.yaml(auth=True, connect_ports=[world.https.port],
                                  safe_ports=[80, 443, 8081, world.http.port, world.https.port]),
                       {"version": 2, "domains": ["a.allowed.test", "tls.allowed.test"]})
    wait_for(lambda: "8081" in world.active_conf() and status_json(world.admin_port)["squid_runs_active"], 30,
             what="the reconfigured generation")
    assert world.squid_pid() == squid_pid  # reconfigured, not restarted
    wait_for(lambda: world.get("kept.vendor.test", user=apex, password=apex_pw)[0] == 403, 15, what="403 again")
    wait_for(lambda: entry(denied(world), "kept.vendor.test", port)["count"] == 5, 15, what="5 after reconfigure")
    # The files of the helpers that are gone were folded in and removed.
    wait_for(lambda: all(_alive(p) for p in helper_pids(world)), 15, what="only live helpers' files")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
