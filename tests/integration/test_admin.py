"""Admin endpoints (docs/operations.md) of a running controller with real Squid: status codes and content
types, `promtool check metrics`, metric and /status values across good and failed reloads and a
Squid kill, 404/405, the idle-connection limit, and scrapes that keep working while a slow client
holds a connection and the configuration reloads again and again."""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fpsharness import PROMTOOL, ROOT, World, free_port, wait_for

NAMES = {"a.allowed.test": "127.0.0.1", "b.allowed.test": "127.0.0.1"}


def request(port, path, method="GET", source="127.0.0.1", body=None, timeout=10):
    """One request on its own connection; returns (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def metrics(port):
    """The /metrics samples as {'name{labels}': value}."""
    status, _, body = request(port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def status_json(port):
    code, _, body = request(port, "/status")
    assert code == 200
    return json.loads(body)


@pytest.fixture
def world():
    w = World("admin")
    w.set_hosts(NAMES)
    w.origin()
    w.write_config(w.yaml(), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        wait_for(lambda: _code(w.admin_port, "/readyz") == 200, 30, what="/readyz 200")
        yield w
    finally:
        w.close()


def _code(port, path):
    try:
        return request(port, path, timeout=5)[0]
    except OSError:
        return None


def test_endpoints_answer_with_their_content_types(world):
    p = world.admin_port
    code, h, body = request(p, "/healthz")
    assert code == 200 and h["content-type"].startswith("text/plain")
    code, h, body = request(p, "/readyz")
    assert code == 200 and h["content-type"].startswith("text/plain") and b"ready" in body
    code, h, body = request(p, "/metrics")
    assert code == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    assert b"fps_build_info{version=" in body
    code, h, body = request(p, "/status")
    assert code == 200 and h["content-type"] == "application/json"
    st = json.loads(body)
    assert st["generation"] >= 1 and st["whitelist_version"] == 1
    assert st["children"]["squid"]["pid"] == world.squid_pid()
    # HEAD: the headers of GET, no body.
    code, h, body = request(p, "/metrics", method="HEAD")
    assert code == 200 and body == b"" and int(h["content-length"]) > 0


def test_unknown_paths_404_other_methods_405(world):
    p = world.admin_port
    for path in ("/nope", "/metrics/x", "/status.json", "//"):
        assert request(p, path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/healthz", "/readyz", "/metrics", "/status"):
            code, h, _ = request(p, path, method=method, body=b"x=1")
            assert code == 405, (method, path)
            assert h["allow"] == "GET, HEAD"


def test_metrics_pass_promtool_with_squid_figures(world):
    p = world.admin_port
    assert world.get("a.allowed.test")[0] == 200
    assert world.get("b.allowed.test")[0] == 403
    # Squid's cache manager is read (cached up to 2 s): its counters appear.
    m = wait_for(lambda: (lambda m: m if m.get("fps_squid_client_http_requests_total", 0) >= 2 else None)(
        metrics(p)), 15, what="squid counters in /metrics")
    assert m["fps_squid_scrape_ok"] == 1
    assert m["fps_squid_client_http_errors_total"] >= 1  # the 403
    assert "fps_squid_file_descriptors_in_use" in m
    body = request(p, "/metrics")[2]
    promtool = PROMTOOL if PROMTOOL.is_file() else None
    assert promtool, f"{PROMTOOL} missing: `make {PROMTOOL.relative_to(ROOT)}` unpacks it"
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    for name in ("fps_config_generation", "fps_config_reloads_total{result=\"success\"}",
                 "fps_config_last_reload_success", "fps_config_last_reload_timestamp_seconds",
                 "fps_whitelist_entries", "fps_whitelist_rejected_entries", "fps_squid_up",
                 "fps_squid_restarts_total", "fps_tunnel_up", "fps_stunnel_restarts_total",
                 "fps_whitelist_info{version=\"1\"}"):
        assert name in m, name


def test_good_and_failed_reloads_move_the_figures(world):
    p = world.admin_port
    m0 = metrics(p)
    gen0 = m0["fps_config_generation"]
    ok0 = m0['fps_config_reloads_total{result="success"}']
    fail0 = m0['fps_config_reloads_total{result="failure"}']

    world.write_config(world.yaml(), {"version": 2, "domains": ["a.allowed.test", "b.allowed.test", "bad entry"]})
    m = wait_for(lambda: (lambda m: m if m["fps_config_generation"] == gen0 + 1 else None)(metrics(p)), 15,
                 what="generation + 1")
    assert m['fps_config_reloads_total{result="success"}'] == ok0 + 1
    assert m["fps_config_last_reload_success"] == 1
    assert m["fps_whitelist_version"] == 2 and m['fps_whitelist_info{version="2"}'] == 1
    assert 'fps_whitelist_info{version="1"}' not in m
    assert m["fps_whitelist_rejected_entries"] == 1
    st = status_json(p)
    assert st["rejected"]["entries"][0]["entry"] == "bad entry"
    assert "whitelist.json" in st["rejected"]["entries"][0]["where"]

    # A malformed whitelist.json: the update is refused, the error says where.
    world.write_config(world.yaml(), raw_whitelist='{\n  "version": 3,\n  "domains": [\n    42\n  ]\n}\n')
    m = wait_for(lambda: (lambda m: m if m['fps_config_reloads_total{result="failure"}'] == fail0 + 1 else None)(
        metrics(p)), 15, what="failure counter + 1")
    assert m["fps_config_last_reload_success"] == 0
    assert m["fps_config_generation"] == gen0 + 1  # the last good generation stays
    assert m["fps_whitelist_version"] == 2
    st = status_json(p)
    assert st["last_reload"]["result"] == "failure"
    assert "whitelist.json:4" in st["last_reload"]["error"], st["last_reload"]
    assert st["reloads"]["failed"] == fail0 + 1
    assert world.get("b.allowed.test")[0] == 200  # still served by generation gen0 + 1

    # Fixed again: success, the error is gone.
    world.write_config(world.yaml(), {"version": 4, "domains": ["a.allowed.test"]})
    m = wait_for(lambda: (lambda m: m if m["fps_config_generation"] == gen0 + 2 else None)(metrics(p)), 15,
                 what="generation + 2")
    assert m["fps_config_last_reload_success"] == 1
    assert status_json(p)["last_reload"]["error"] is None


def test_squid_killed_counts_a_restart_and_readiness_flips(world):
    p = world.admin_port
    restarts0 = metrics(p)["fps_squid_restarts_total"]
    seen, stop = [], threading.Event()

    bodies, last = {}, [None]

    def watch():
        while not stop.is_set():
            try:
                code, h, body = request(p, "/readyz", timeout=5)
                bodies.setdefault(code, (h.get("content-type", ""), body))
                last[0] = body
            except OSError:
                code = None
            except Exception as e:  # an answer http.client cannot read: say so, keep watching
                code = repr(e)
            seen.append(code)
            time.sleep(0.01)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_for(lambda: len(seen) > 0, 10, what="readiness watcher")
    pid = world.squid_pid()
    os.kill(pid, signal.SIGKILL)
    try:
        wait_for(lambda: 503 in seen, 30, what="/readyz 503 after the kill")
        wait_for(lambda: 503 in seen and seen[-1] == 200 and world.squid_pid() not in (None, pid), 60,
                 what="/readyz 200 again")
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast answers {seen[-5:]} of {len(seen)}, last body {last[0]!r}, squid pid file "
                             f"{world.squid_pid()} (killed {pid})\n--- controller log ---\n{world.log()[-4000:]}")
    finally:
        stop.set()
        t.join(5)
    assert metrics(p)["fps_squid_restarts_total"] == restarts0 + 1
    # The 503 said why, in text/plain.
    ctype, body = bodies[503]
    assert ctype.startswith("text/plain") and body.startswith(b"not ready: ") and b"squid" in body, body
    code, _, body = request(p, "/readyz")
    assert code == 200
    st = status_json(p)
    assert st["children"]["squid"]["restarts"] == restarts0 + 1
    assert st["children"]["squid"]["pid"] == world.squid_pid()


class SlowClient(threading.Thread):
    """Sends a request one byte per second, then reads the answer."""

    def __init__(self, port, path="/status"):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.req = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
        self.bytes_sent = 0
        self.finish = threading.Event()
        self.answer = b""

    def run(self):
        for b in self.req:
            self.sock.sendall(bytes([b]))
            self.bytes_sent += 1
            if self.finish.wait(1.0):
                break
        # Still byte by byte, to the end of the request.
        for b in self.req[self.bytes_sent:] + b"\r\n":
            self.sock.sendall(bytes([b]))
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.answer += chunk
            if b"\r\n\r\n" in self.answer and self.answer.rstrip().endswith(b"}"):
                break
        self.sock.close()


def test_slow_client_does_not_stall_scrapes_during_reloads(world):
    p = world.admin_port
    slow = SlowClient(p)
    slow.start()
    wait_for(lambda: slow.bytes_sent >= 2, 10, what="the slow client to start")

    stop, abort = threading.Event(), threading.Event()
    results = {"reloads": 0}

    def reloader():
        for v in range(10, 60):  # 50 reloads, each applied before the next
            if abort.is_set():
                break
            world.write_config(world.yaml(), {"version": v, "domains": ["a.allowed.test"]})
            wait_for(lambda: status_json(p)["whitelist_version"] == v, 30, what=f"whitelist version {v}")
            results["reloads"] += 1
        stop.set()

    def scrape(i):
        # Sources spread over 127.0.0.1-8 so the per-address limit is not what is tested here.
        src = f"127.0.0.{1 + i % 8}"
        path = "/status" if i % 2 else "/metrics"
        code, h, body = request(p, path, source=src, timeout=30)
        assert code == 200, (path, code)
        if path == "/status":
            json.loads(body)
        else:
            assert b"fps_config_generation" in body
        return path

    rt = threading.Thread(target=reloader, daemon=True)
    rt.start()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=200) as pool:
            while not stop.is_set() or done == 0:
                futures = [pool.submit(scrape, i) for i in range(200)]
                for f in futures:
                    f.result()  # raises on any failed scrape
                done += len(futures)
    finally:
        abort.set()
        rt.join(60)
    assert results["reloads"] == 50
    # The slow client was held the whole time and is answered once it finishes.
    assert slow.is_alive()
    slow.finish.set()
    slow.join(30)
    assert slow.answer.startswith(b"HTTP/1.1 200"), slow.answer[:200]
    json.loads(slow.answer.split(b"\r\n\r\n", 1)[1])
    assert request(p, "/healthz")[0] == 200


def test_idle_connections_beyond_the_limit_are_closed_oldest_first(world):
    p = world.admin_port
    held = []
    try:
        for _ in range(100):  # more than the 64 idle connections the server keeps
            s = socket.create_connection(("127.0.0.1", p), timeout=5, source_address=("127.0.0.2", 0))
            held.append(s)
        # New connections are served, from the flooding address and from any other...
        assert request(p, "/healthz", source="127.0.0.2")[0] == 200
        assert request(p, "/healthz", source="127.0.0.3")[0] == 200
        # ...because the oldest idle ones were closed, while the newest are still served.
        try:
            assert held[0].recv(100) == b""
        except ConnectionResetError:
            pass
        held[-1].sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert held[-1].recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()
