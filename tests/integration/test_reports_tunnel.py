"""Failures on the tunnel route named (docs/operations.md, "Failures and traffic"): the
tunnel's server presenting a certificate from another CA is `tls`, the tunnel down is
`route_down`; the direct route's requests meanwhile are no failures at all. Real stunnel,
Squid and cloud side (test_routes.py's)."""
import json
import urllib.request

from fpsharness import wait_for
from test_routes import BAD, D, T, Cloud, Setup, base, rogue_cloud, uniq  # noqa: F401 (base: a fixture)


def failures(s):
    with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/failures", timeout=10) as r:
        return json.loads(r.read())


def entries(s, cause):
    return [e for e in failures(s)["top"] if e["host"] == T and e["cause"] == cause]


def test_tunnel_server_from_another_ca_is_named_tls(base):
    _, _, cloud, customer = base
    rogue = rogue_cloud(base, "reports-ca")
    s = None
    try:
        s = Setup("live", cloud, customer, tunnel_port=rogue.tls_port, tunnel_ca=cloud.ca).start()
        wait_for(lambda: s.tunnel_status().get("interception"), 30, what="/status reporting interception")
        assert 500 <= s.get(T, uniq("tls"))[0] <= 599
        assert 500 <= s.https(T, uniq("tlss"))[0] <= 599
        assert s.get(D, uniq("direct"))[0] == 200
        got = wait_for(lambda: sum(e["count"] for e in entries(s, "tls")) >= 2 and entries(s, "tls"), 20,
                       what="/failures naming the tunnel's TLS")
        assert all(e["route"] == "tunnel" for e in got)
        assert "Corp Firewall CA" in got[0]["detail"] and "tunnel TLS" in got[0]["detail"]
        doc = failures(s)
        assert not [e for e in doc["top"] if e["host"] == D]
        assert doc["by_cause"]["route_down"] == 0
    finally:
        if s:
            s.close()
        rogue.stop()


def test_tunnel_down_is_named_route_down(base):
    d, hosts, _, customer = base
    cloud = Cloud(d / "cloud-reports-down", hosts).start()
    s = None
    try:
        s = Setup("live", cloud, customer).start()
        wait_for(lambda: s.tunnel_status().get("up") is True, 30, what="/status tunnel up")
        assert s.get(T, uniq("before"))[0] == 200
        cloud.stop()
        wait_for(lambda: s.tunnel_status().get("up") is False, 30, what="/status tunnel down")
        assert s.get(T, uniq("down"))[0] in BAD
        got = wait_for(lambda: entries(s, "route_down"), 20, what="/failures naming the tunnel down")
        assert got[0]["route"] == "tunnel" and got[0]["status"] in BAD
        assert "tunnel down" in got[0]["detail"], got[0]
        assert not entries(s, "tls")
    finally:
        if s:
            s.close()
        cloud.stop()
