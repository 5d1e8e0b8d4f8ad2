"""`fps-controller explain` and GET /explain (docs/operations.md) against a running stack:
each verdict is checked against what a real agent (curl through Squid) gets, the deciding
entry and route rule carry their file:line:col, and the upstream route's live state shows."""
import json
import subprocess

import pytest

from fpsharness import BIN, World, curl, free_port, wait_for
from test_admin import request

NAMES = {"a.allowed.test": "127.0.0.1", "up.allowed.test": "127.0.0.1", "blocked.allowed.test": "127.0.0.99"}


@pytest.fixture(scope="module")
def world():
    w = World("explain")
    w.set_hosts(NAMES)
    w.http = w.origin()
    w.dead_upstream = free_port()  # nothing listens: the upstream route is down
    extra = (f"upstream:\n  host: 127.0.0.1\n  port: {w.dead_upstream}\n"
             f"routes:\n  - {{ via: upstream, domains: [\"up.allowed.test\"] }}\n")
    w.write_config(w.yaml(connect_ports=[443], extra=extra),
                   {"version": 7, "domains": ["a.allowed.test", "*.allowed.test", "other.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        wait_for(lambda: status(w)["upstream"]["checked"] is not None, 30, what="the upstream probe")
        yield w
    finally:
        w.close()


def status(w):
    return json.loads(request(w.admin_port, "/status")[2])


def cli(w, *args, admin=False):
    where = ["--admin", f"127.0.0.1:{w.admin_port}"] if admin else ["--config-dir", str(w.config)]
    return subprocess.run([str(BIN / "fps-controller"), "explain", *where, *args], capture_output=True, text=True)


def endpoint(w, host, port):
    code, h, body = request(w.admin_port, f"/explain?host={host}&port={port}")
    return code, json.loads(body) if code == 200 else body.decode()


def test_allowed_host_names_its_entry_and_exits_0(world):
    assert world.get("a.allowed.test")[0] == 200
    p = cli(world, f"a.allowed.test:{world.http.port}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ALLOWED" in p.stdout.splitlines()[0]
    assert 'whitelist.json:1:' in p.stdout and '"a.allowed.test" (exact)' in p.stdout
    code, r = endpoint(world, "a.allowed.test", world.http.port)
    assert code == 200 and r["verdict"] == "allowed"
    assert r["whitelist"]["entry"] == "a.allowed.test" and r["whitelist"]["where"].startswith("whitelist.json:1:")
    assert r["addresses"] == [{"address": "127.0.0.1", "source": "hosts_file", "blocked_by": None}]
    assert r["route"] == {"via": "direct", "rule": "default_route", "where": None}
    assert r["generation"] == status(world)["generation"]


def test_not_whitelisted_host_lists_nearest_entries_and_exits_1(world):
    assert world.get("nothere.test")[0] == 403
    p = cli(world, f"nothere.test:{world.http.port}")
    assert p.returncode == 1 and "not in the whitelist" in p.stdout and "no entry matches" in p.stdout
    code, r = endpoint(world, "www.other.test", 443)
    assert r["verdict"] == "denied" and r["whitelist"]["entry"] is None
    # a near miss: the same registrable domain
    p = cli(world, "--json", "x.y.other.test")
    r = json.loads(p.stdout)
    assert p.returncode == 1 and r["whitelist"]["nearest"] == []
    wl = json.dumps({"version": 8, "domains": ["a.allowed.test", "*.allowed.test", "api.vendor.test"]})
    (world.dir / "cfg2").mkdir(exist_ok=True)
    (world.dir / "cfg2" / "fps.yaml").write_text((world.config / "fps.yaml").read_text())
    (world.dir / "cfg2" / "whitelist.json").write_text(wl)
    p = subprocess.run([str(BIN / "fps-controller"), "explain", "--config-dir", str(world.dir / "cfg2"), "--json",
                        "cdn.vendor.test"], capture_output=True, text=True)
    r = json.loads(p.stdout)
    assert p.returncode == 1
    assert [n["entry"] for n in r["whitelist"]["nearest"]] == ["api.vendor.test"]


def test_wildcard_entry_and_route_rule_with_positions_and_live_state(world):
    code, r = endpoint(world, "up.allowed.test", 443)
    assert code == 200 and r["verdict"] == "allowed"
    assert r["whitelist"]["entry"] == "*.allowed.test" and r["whitelist"]["kind"] == "wildcard"
    assert r["route"]["via"] == "upstream" and r["route"]["rule"] == "up.allowed.test"
    line = next(i for i, l in enumerate((world.config / "fps.yaml").read_text().splitlines(), 1)
                if "via: upstream" in l)
    assert r["route"]["where"].startswith(f"fps.yaml:{line}:")
    live = r["live"]
    assert live["path"] == "upstream" and live["up"] is False and live["error"]
    assert live["target"] == f"127.0.0.1:{world.dead_upstream}"
    assert world.get("up.allowed.test")[0] in (502, 503)  # what the agent sees: the path is down
    p = cli(world, "up.allowed.test", admin=True)
    assert p.returncode == 0 and "live state: upstream to 127.0.0.1" in p.stdout and "is DOWN" in p.stdout


def test_blocked_network_and_ports_deny_as_squid_does(world):
    assert world.get("blocked.allowed.test")[0] == 403
    code, r = endpoint(world, "blocked.allowed.test", world.http.port)
    assert r["verdict"] == "denied" and "blocked network" in r["reason"]
    assert r["addresses"][0]["blocked_by"] == "127.0.0.99/32"
    # CONNECT to the origin's port: not in connect_ports, but plain HTTP there is allowed
    assert curl(f"https://a.allowed.test:{world.http.port}/", world.proxy)[0] == 403
    assert r["ports"]["connect"]["allowed"] is False and r["ports"]["plain"]["allowed"] is True
    p = cli(world, "a.allowed.test:8443")
    assert p.returncode == 1 and "neither connect_ports nor safe_ports" in p.stdout


def test_cli_and_endpoint_give_the_same_answer(world):
    for target in ("a.allowed.test:443", "nothere.test:80", "up.allowed.test:443", "blocked.allowed.test:80"):
        local = json.loads(cli(world, "--json", target).stdout)
        remote = json.loads(cli(world, "--json", target, admin=True).stdout)
        for k in ("live", "generation"):
            local.pop(k), remote.pop(k)
        assert local == remote, target


def test_usage_and_runtime_exit_codes(world):
    assert cli(world, "bad host").returncode == 2
    assert cli(world, "*.wild.test").returncode == 2
    assert cli(world).returncode == 2
    p = subprocess.run([str(BIN / "fps-controller"), "explain", "--admin", f"127.0.0.1:{free_port()}", "a.test"],
                       capture_output=True, text=True)
    assert p.returncode == 3
    p = subprocess.run([str(BIN / "fps-controller"), "explain", "--config-dir", str(world.dir / "nope"), "a.test"],
                       capture_output=True, text=True)
    assert p.returncode == 3
    assert endpoint(world, "", 443)[0] == 400
    assert endpoint(world, "a.allowed.test", 70000)[0] == 400
