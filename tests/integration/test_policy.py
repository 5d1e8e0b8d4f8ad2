"""Proxy policy as agents see it (docs/agents.md), in both whitelist apply modes."""
import ssl
import subprocess

import pytest

from fpsharness import World, curl, make_ca_and_cert

NAMES = {"a.allowed.test": "127.0.0.1", "b.other.test": "127.0.0.1", "wild.test": "127.0.0.1",
         "x.wild.test": "127.0.0.1", "deep.x.wild.test": "127.0.0.1", "exact.test": "127.0.0.1",
         "sub.exact.test": "127.0.0.1", "blocked.test": "127.0.0.99", "tls.allowed.test": "127.0.0.1"}


@pytest.fixture(scope="module", params=["live", "reconfigure"])
def world(request):
    w = World(f"policy-{request.param}")
    w.mode = request.param
    w.set_hosts(NAMES)
    w.http = w.origin(name="http")
    ca, cert, key = make_ca_and_cert(w.dir / "pki", ["tls.allowed.test"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    w.ca = ca
    w.https = w.origin(name="https", ssl_ctx=ctx)
    w.other_port = w.origin(name="other").port  # a port not in connect_ports
    w.write_config(
        w.yaml(apply=request.param, connect_ports=[w.https.port],
               safe_ports=[80, w.http.port, w.other_port]),
        {"version": 1, "domains": ["a.allowed.test", "*.wild.test", "exact.test", "blocked.test",
                                   "tls.allowed.test"]})
    w.start()
    yield w
    w.close()


def test_whitelisted_host_gets_200(world):
    status, body = world.get("a.allowed.test")
    assert status == 200
    assert "origin http a.allowed.test" in body


def test_not_whitelisted_gets_403_naming_the_host(world):
    status, body = world.get("b.other.test")
    assert status == 403
    assert "b.other.test" in body and "not in the whitelist" in body
    assert world.http.hits == [] or all(h[0].split(":")[0] != "b.other.test" for h in world.http.hits)


def test_wildcard_matches_apex_and_subdomains_exact_matches_only_itself(world):
    for host in ("wild.test", "x.wild.test", "deep.x.wild.test", "exact.test"):
        assert world.get(host)[0] == 200, host
    assert world.get("sub.exact.test")[0] == 403


def test_case_and_trailing_dot_in_requests_still_match(world):
    assert world.get("A.Allowed.TEST")[0] == 200


def test_connect_to_allowed_port_works(world):
    status, body = curl(f"https://tls.allowed.test:{world.https.port}/x", world.proxy, cacert=world.ca)
    assert status == 200
    assert "origin https" in body


def test_connect_to_other_port_is_403(world):
    status, _ = curl(f"https://tls.allowed.test:{world.other_port}/", world.proxy, cacert=world.ca,
                     extra=["--proxytunnel"])
    # curl reports the proxy's CONNECT answer as the status when the tunnel is refused.
    assert status == 403


def test_connect_to_non_whitelisted_host_is_403(world):
    status, _ = curl(f"https://b.other.test:{world.https.port}/", world.proxy, cacert=world.ca)
    assert status == 403


def test_whitelisted_name_resolving_into_blocked_network_is_403(world):
    status, body = world.get("blocked.test")
    assert status == 403
    assert "blocked network" in body


def test_ip_literal_destination_does_not_match_names(world):
    # 127.0.0.1 is what a.allowed.test resolves to; a name entry must never admit the literal.
    status, _ = world.get("127.0.0.1")
    assert status == 403


def test_plain_http_to_port_outside_safe_ports_is_403(world):
    status, body = world.get("a.allowed.test", port=world.https.port)
    assert status == 403
    assert "port is not allowed" in body
