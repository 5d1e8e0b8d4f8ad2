"""whitelist.mode: report (docs/operations.md): unlisted destinations are allowed on the
default route and counted as would-deny; credentials, ports and blocked networks are enforced
exactly as in enforce; the mode shows in /status, /metrics and the log, and switching back
to enforce applies live."""
import json
import subprocess

import pytest

from fpsharness import BIN, World, agent_credentials, curl, free_port, wait_for
from test_admin import metrics, request, status_json

NAMES = {"a.allowed.test": "127.0.0.1", "new.vendor.test": "127.0.0.1", "inside.vendor.test": "127.0.0.99"}


def config(w, mode, apply="live"):
    y = w.yaml(auth=True, apply=apply, connect_ports=[443])
    return y.replace("whitelist:\n", f"whitelist:\n  mode: {mode}\n")


@pytest.fixture
def world():
    w = World("report")
    w.set_hosts(NAMES)
    w.http = w.origin()
    w.write_keys()
    w.write_config(config(w, "report"), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()


def test_unlisted_is_allowed_and_counted_as_would_deny(world):
    user, pw = agent_credentials(world.API_KEY)
    code, body = world.get("new.vendor.test", user=user, password=pw)
    assert code == 200 and "origin" in body  # reached the origin, on the default (direct) route
    assert world.get("a.allowed.test", user=user, password=pw)[0] == 200
    port = world.http.port

    def entry():
        code, _, body = request(world.admin_port, "/denied")
        return next((e for e in json.loads(body)["top"] if e["host"] == "new.vendor.test"), None)
    wait_for(lambda: entry() is not None, 15, what="new.vendor.test in /denied")
    e = entry()
    assert e["count"] == 1 and e["port"] == port and e["would_deny"] is True and e["products"] == ["ApexOne"]
    s = status_json(world.admin_port)
    assert s["whitelist_mode"] == "report" and s["denied"]["total"] == 1
    assert metrics(world.admin_port)["fps_whitelist_report_mode"] == 1
    assert "whitelist.mode is report" in world.log()
    p = subprocess.run([str(BIN / "fps-controller"), "explain", "--admin", f"127.0.0.1:{world.admin_port}", "--json",
                        f"new.vendor.test:{port}"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert p.returncode == 0 and r["mode"] == "report" and r["would_deny"] is True and r["verdict"] == "allowed"


def test_credentials_ports_and_blocked_networks_still_enforced(world):
    user, pw = agent_credentials(world.API_KEY)
    assert world.get("new.vendor.test")[0] == 407
    assert world.get("new.vendor.test", user=user, password="0" * 40)[0] == 407
    assert world.get("inside.vendor.test", user=user, password=pw)[0] == 403  # 127.0.0.99/32 is blocked
    code, _ = curl(f"https://new.vendor.test:{world.http.port}/", world.proxy, user=user, password=pw)
    assert code == 403  # CONNECT outside connect_ports
    assert curl(f"http://new.vendor.test:{free_port()}/", world.proxy, user=user, password=pw)[0] == 403


def test_switching_to_enforce_applies_live(world):
    user, pw = agent_credentials(world.API_KEY)
    assert world.get("new.vendor.test", user=user, password=pw)[0] == 200
    squid_pid = world.squid_pid()
    conf = world.active_conf()
    world.write_config(config(world, "enforce"), {"version": 2, "domains": ["a.allowed.test"]})
    world.wait_status("new.vendor.test", 403, user=user, password=pw)
    assert world.squid_pid() == squid_pid and world.active_conf() == conf  # no reconfigure
    assert status_json(world.admin_port)["whitelist_mode"] == "enforce"
    assert metrics(world.admin_port)["fps_whitelist_report_mode"] == 0


def test_report_needs_live_apply(world):
    d = world.dir / "bad"
    d.mkdir()
    (d / "fps.yaml").write_text(config(world, "report", apply="reconfigure"))
    p = subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(d)], capture_output=True, text=True)
    line = next(i for i, l in enumerate((d / "fps.yaml").read_text().splitlines(), 1) if "mode: report" in l)
    assert p.returncode == 1 and f"fps.yaml:{line}" in p.stderr and "needs whitelist.apply 'live'" in p.stderr
