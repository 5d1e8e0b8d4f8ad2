"""The update cache on the routes (docs/operations.md "The update cache", Routes): objects
fetched through the tunnel and the customer's proxy are kept, and a kept object is still
answered while its route is down (a missing one gets Squid's 502/503, never a direct fetch).
The cloud side and the customer's proxy are those of test_routes.py."""
import pytest

from cacheharness import CountingOrigin, package
from fpsharness import wait_for
from test_cache import fresh
from test_routes import BAD, Cloud, Setup, T, U, base  # noqa: F401 (base is a fixture)

CACHE = "cache:\n  memory_mb: 64\n  disk_mb: 128\n  max_object_mb: 16\n"


def test_tunnel_and_upstream_objects_are_kept_and_served_while_the_route_is_down(base):  # noqa: F811
    d, hosts, _, customer = base
    cloud = Cloud(d / "cloud-cache", hosts).start()
    s = None
    co = CountingOrigin()
    try:
        s = Setup("live", cloud, customer)
        w = s.w
        y = (w.config / "fps.yaml").read_text().replace("  safe_ports: [", f"  safe_ports: [{co.port}, ", 1)
        w.write_config(y + CACHE)
        s.start()
        wait_for(lambda: s.tunnel_status().get("up") is True, 60, what="tunnel up")
        kept = {}
        for host in (T, U):
            path = fresh(size=200000)
            body, _ = package(path.split("?")[0], 200000)
            u = f"http://{host}:{co.port}{path}"
            for _ in range(2):
                status, got = curl_bytes(u, w.proxy)
                assert status == 200 and got == body, host
            assert co.hits(path.split("?")[0]) == 1, host  # the second came from the cache
            kept[host] = (u, body)
        log = (w.state / "run" / "access.log").read_text()
        assert "FIRSTUP_PARENT/127.0.0.1" in log and "HIT/200" in log
        # the tunnel goes down: the kept object is still answered, a new one is not fetched direct
        cloud.stop()
        u, body = kept[T]
        status, got = curl_bytes(u, w.proxy)
        assert status == 200 and got == body
        new = fresh(size=1000)
        wait_for(lambda: curl_bytes(f"http://{T}:{co.port}{new}", w.proxy)[0] in BAD, 20,
                 what="502/503 for a missing object while the tunnel is down")
        assert co.hits(new.split("?")[0]) == 0
    finally:
        if s:
            s.close()
        cloud.stop()
        co.stop()


def curl_bytes(u, proxy):
    import subprocess
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "%{http_code}", "--max-time", "15", "-x", proxy, u],
                       capture_output=True)
    return int(r.stdout[-3:] or b"0"), r.stdout[:-3]
