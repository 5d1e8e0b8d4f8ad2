"""Hostile input and hostile neighbours (docs/security.md): requests crafted to slip past
credentials or the destination checks, floods of the admin port, bombs in the ConfigMap, and
what the logs keep of them. Every test drives the real Squid, helpers and origins."""
import http.client
import http.server
import json
import os
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fpsharness import BIN, SERVE_POLL, TEMPLATES, World, _Handler, agent_credentials, curl, free_port, wait_for


def raw(port, data, timeout=10):
    """Sends data on a new connection to 127.0.0.1:port and reads the answer's headers.
    Returns the status code as a string ("" if the server answered nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        try:
            while b"\r\n\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    return got[9:12].decode(errors="replace") if got.startswith(b"HTTP/1.") else ""


def admin_get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def metric(port, name):
    code, body = admin_get(port, "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


# ---- 1. nothing reaches an origin without credentials -------------------------------------

@pytest.fixture(scope="module")
def authworld():
    w = World("sec-auth")
    w.set_hosts({"a.allowed.test": "127.0.0.1", "denied.test": "127.0.0.1"})
    w.http = w.origin(name="http")
    w.other = w.origin(name="other")  # outside safe_ports and connect_ports
    w.write_keys()
    w.write_config(w.yaml(auth=True, safe_ports=[80, w.http.port], connect_ports=[443, w.http.port]),
                   {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
    try:
        yield w
    finally:
        w.close()


def test_cache_manager_path_never_reaches_an_origin_without_credentials(authworld):
    w = authworld
    hp, op = w.http.port, w.other.port
    mgr_port = int((w.state / "run" / "mgr.port").read_text())
    requests = []
    for host, port in (("denied.test", hp), ("a.allowed.test", hp), ("127.0.0.1", hp), ("a.allowed.test", op)):
        url = f"http://{host}:{port}/squid-internal-mgr/x"
        requests.append(f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        requests.append(f"POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n"
                        "Connection: close\r\n\r\nhi".encode())
        requests.append(f"GET http://{host}:{port}/cache_object/x HTTP/1.1\r\nHost: {host}\r\n"
                        "Connection: close\r\n\r\n".encode())
    requests.append(f"CONNECT a.allowed.test:{hp} HTTP/1.1\r\nHost: a.allowed.test:{hp}\r\n\r\n".encode())
    answers = {}
    for req in requests:
        # The agents' port, and the controller's own cache-manager port: a local process can
        # reach both, and neither forwards anything without credentials.
        for port in (w.port, mgr_port):
            answers[(port, req.split(b"\r\n")[0])] = raw(port, req)
    assert w.http.hits == [] and w.other.hits == [], (w.http.hits, w.other.hits, answers)
    assert all(code not in ("", "200") for code in answers.values()), answers
    # The controller's own scrape still works, through its port only.
    wait_for(lambda: metric(w.admin_port, "fps_squid_scrape_ok") == 1, 15, what="fps_squid_scrape_ok 1")
    # With credentials the same origin is reachable: the denials above were about credentials.
    user, pw = agent_credentials(w.API_KEY)
    assert curl(f"http://a.allowed.test:{hp}/", w.proxy, user=user, password=pw)[0] == 200


def test_cache_manager_serves_only_the_pages_the_controller_reads(authworld):
    w = authworld
    mgr_port = int((w.state / "run" / "mgr.port").read_text())
    get = lambda page: raw(mgr_port, f"GET /squid-internal-mgr/{page} HTTP/1.0\r\n\r\n".encode())
    assert get("counters") == "200" and get("info") == "200"
    # config would show squid.conf (an upstream password), client_list the agents' addresses.
    assert get("config") != "200" and get("client_list") != "200" and get("menu") != "200"


# ---- 2. destinations that are never legitimate --------------------------------------------

class _DualStackOrigin(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An origin on [::] with IPV6_V6ONLY off: 0.0.0.0 and :: both reach it. Records hits."""
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("::", 0), _Handler)
        self.name, self.hits, self.port = "dual", [], self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(SERVE_POLL,), daemon=True).start()

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def stop(self):
        self.shutdown()
        self.server_close()


SPECIAL = {"zero.test": "0.0.0.0", "zero-net.test": "0.1.2.3", "unspec6.test": "::",
           "mapped-zero.test": "::ffff:0.0.0.0", "linklocal.test": "169.254.169.254",
           "lo.test": "127.0.0.1", "lo6.test": "::1", "mapped-lo.test": "::ffff:127.0.0.1"}


def _special_world(allow_loopback):
    w = World("sec-dst")
    w.set_hosts(SPECIAL)
    srv = _DualStackOrigin()
    w.origins.append(srv)
    # blocked_networks names an unrelated network: the refusals below are the built-in ones.
    w.write_config(w.yaml(blocked=("192.0.2.0/24",), allow_loopback=allow_loopback, connect_ports=[443, srv.port]),
                   {"version": 1, "domains": list(SPECIAL)})
    w.start()
    return w, srv


def _tried(w, srv, host):
    """GET and CONNECT to host through the proxy: the two statuses."""
    get = curl(f"http://{host}:{srv.port}/", w.proxy)[0]
    conn = raw(w.port, f"CONNECT {host}:{srv.port} HTTP/1.1\r\nHost: {host}:{srv.port}\r\n\r\n".encode())
    return get, conn


def test_unspecified_and_link_local_destinations_are_refused_even_with_the_loopback_exception():
    w, srv = _special_world(allow_loopback=True)
    try:
        # The exception re-allows loopback only: the control request reaches the service.
        assert _tried(w, srv, "lo.test") == (200, "200")
        srv.hits.clear()
        for host in ("zero.test", "zero-net.test", "unspec6.test", "mapped-zero.test", "linklocal.test"):
            assert _tried(w, srv, host) == (403, "403"), host
        assert srv.hits == []
    finally:
        w.close()


def test_loopback_destinations_are_refused_in_every_spelling_without_the_exception():
    w, srv = _special_world(allow_loopback=False)
    try:
        for host in SPECIAL:
            assert _tried(w, srv, host) == (403, "403"), host
        code, body = curl(f"http://lo.test:{srv.port}/", w.proxy)
        assert "blocked network" in body
        assert srv.hits == []
    finally:
        w.close()


# ---- 3. wrong passwords under an agent's name do not lock the agent out --------------------

def _auth_status(port, host, oport, user, pw):
    import base64
    tok = base64.b64encode(f"{user}:{pw}".encode()).decode()
    return raw(port, (f"GET http://{host}:{oport}/ HTTP/1.1\r\nHost: {host}:{oport}\r\n"
                      f"Proxy-Authorization: Basic {tok}\r\nConnection: close\r\n\r\n").encode())


def test_wrong_password_burst_never_denies_the_agents_correct_password(authworld):
    w = authworld
    user, pw = agent_credentials(w.API_KEY)
    host, oport = "a.allowed.test", w.http.port
    assert _auth_status(w.port, host, oport, user, pw) == "200"
    # The agent keeps working while someone sends wrong passwords under its name: the burst
    # goes on until it is 400 requests long and 5 of the agent's requests were answered in it.
    agent_codes, wrong_codes, stop = [], [], threading.Event()
    lock = threading.Lock()

    def attacker(k):
        i = 0
        while not stop.is_set():
            c = _auth_status(w.port, host, oport, user, f"wrong-{k}-{i}")
            with lock:
                wrong_codes.append(c)
                if len(wrong_codes) >= 400 and len(agent_codes) >= 5:
                    stop.set()
            i += 1

    attackers = [threading.Thread(target=attacker, args=(k,)) for k in range(20)]
    for t in attackers:
        t.start()
    try:
        while not stop.is_set():
            code = _auth_status(w.port, host, oport, user, pw)
            if not stop.is_set():
                with lock:
                    agent_codes.append(code)
    finally:
        stop.set()
        for t in attackers:
            t.join(30)
    assert set(wrong_codes) == {"407"}, sorted(set(wrong_codes))
    assert len(agent_codes) >= 5 and set(agent_codes) == {"200"}, agent_codes
    # And right after it.
    assert [_auth_status(w.port, host, oport, user, pw) for _ in range(5)] == ["200"] * 5


# ---- 7. fps-acl judges the name Squid resolves ---------------------------------------------

@pytest.fixture(scope="module", params=["live", "reconfigure"])
def policyworld(request):
    w = World(f"sec-acl-{request.param}")
    w.set_hosts({"allowed.test": "127.0.0.1"})
    w.http = w.origin()
    w.write_config(w.yaml(apply=request.param), {"version": 1, "domains": ["allowed.test"]})
    w.start()
    try:
        yield w
    finally:
        w.close()


@pytest.mark.parametrize("host", ["allowed%2etest", "%61llowed.test", "allowed.test%00", "allowed.tes%74"])
def test_escaped_host_names_are_refused_not_decoded(policyworld, host):
    w = policyworld
    assert w.get("allowed.test")[0] == 200
    w.http.hits.clear()
    port = w.http.port
    assert raw(w.port, f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
               .encode()) in ("400", "403")
    assert raw(w.port, f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()) in ("400", "403")
    assert w.http.hits == []


# ---- 5. ConfigMap bombs: refused quickly, the last good config keeps serving ---------------

@pytest.fixture
def adminworld():
    w = World("sec-bomb")
    w.set_hosts({"a.allowed.test": "127.0.0.1"})
    w.origin()
    w.write_config(w.yaml(), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
    try:
        yield w
    finally:
        w.close()


def _last_error(w):
    code, body = admin_get(w.admin_port, "/status")
    assert code == 200
    return (json.loads(body).get("last_reload") or {}).get("error") or ""


def _healthy_until(w, pred, what):
    """Polls /healthz until pred() holds; every answer on the way must be 200."""
    codes = []

    def check():
        codes.append(admin_get(w.admin_port, "/healthz")[0])
        assert codes[-1] == 200, codes
        return pred()
    wait_for(check, 30, interval=0.05, what=what)
    codes += [admin_get(w.admin_port, "/healthz")[0] for _ in range(10)]
    assert set(codes) == {200}, codes


def test_bomb_configmaps_are_refused_while_healthz_and_the_last_good_config_serve(adminworld):
    w = adminworld
    names = ", ".join(f"n{i}.example.test" for i in range(1000))
    bombs = {
        "nested deeper than 32 levels": ("proxy: " + "[" * 100_000 + "\n", None),
        "more than 100000 YAML nodes": ("whitelist:\n  preset: &n [" + names + "]\nroutes:\n"
                                        + "  - {via: direct, domains: *n}\n" * 3000, None),
        "whitelist.json:1:1200042: more than 600016 values":
            (w.yaml(), '{"domains": [' + ",".join(["1"] * 700_000) + "]}"),
    }
    for why, (yaml_text, json_text) in bombs.items():
        w.write_config(yaml_text, raw_whitelist=json_text)
        _healthy_until(w, lambda: why in _last_error(w), f"'{why}' in /status")
        assert w.get("a.allowed.test")[0] == 200


def test_fifo_in_place_of_a_config_file_is_refused_without_blocking(adminworld):
    w = adminworld
    target = w.config / "whitelist.json"
    target.unlink()  # the kubelet's symlink
    os.mkfifo(target)
    _healthy_until(w, lambda: "not a regular file (a FIFO)" in _last_error(w), "FIFO refused in /status")
    assert w.get("a.allowed.test")[0] == 200
    # A valid edit still applies afterwards.
    target.unlink()
    w.write_config(w.yaml(), {"version": 2, "domains": ["a.allowed.test", "b.allowed.test"]})
    wait_for(lambda: _last_error(w) == "", 30, what="good reload")


# ---- 8. logs and errors --------------------------------------------------------------------

def test_credentials_of_any_scheme_stay_out_of_every_log(authworld):
    w = authworld
    import base64
    port, oport = w.port, w.http.port
    marker = "Zq7SecretMarker"
    w.http.hits.clear()
    headers = [
        f'Digest username="ApexOne-x", realm="FPS", nonce="n", uri="/", response="{marker}1"',
        f"Negotiate {marker}2",
        f"Bearer {marker}3",
        "Basic " + base64.b64encode(f"ApexOne-x:pa\rss{marker}4".encode()).decode(),
        f"Basic {marker}5!!not-base64",
    ]
    for h in headers:
        code = raw(port, f"GET http://a.allowed.test:{oport}/ HTTP/1.1\r\nHost: a.allowed.test\r\n"
                         f"Proxy-Authorization: {h}\r\nConnection: close\r\n\r\n".encode())
        assert code in ("400", "403", "407"), (h, code)
    # A header block Squid refuses as a whole (a NUL in it), with credentials inside.
    raw(port, f"GET http://a.allowed.test:{oport}/ HTTP/1.1\r\nHost: a.allowed.test\r\n"
              f"Proxy-Authorization: Basic {marker}6\r\nX-Bad: a\0b\r\nConnection: close\r\n\r\n".encode())
    # Every answer was written after Squid logged what it had to say about the request.
    assert w.http.hits == []
    logs = {p.name: p.read_bytes() for p in (w.state / "run").iterdir() if p.name.endswith(".log")}
    logs["controller.log"] = w.log_path.read_bytes()
    assert "cache.log" in logs and "access.log" in logs
    for name, text in logs.items():
        assert marker.encode() not in text, (name, text[-2000:])


def test_hostile_config_text_is_escaped_and_bounded_in_logs_and_status(adminworld):
    w = adminworld
    w.write_config(w.yaml(blocked=("\r\x1b[2J\x1b]0;pwned\x07" + "A" * 300,)),
                   {"version": 2, "domains": ["a.allowed.test"]})
    wait_for(lambda: "not an IP network" in _last_error(w), 30, what="bad network reported")
    err = _last_error(w)
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in err), err
    assert "\\x1b[2J" in err and "A" * 60 not in err, err
    log = w.log_path.read_bytes()
    assert b"not an IP network" in log
    assert b"\x1b" not in log and b"\r" not in log and b"\x07" not in log


def test_config_symlinked_to_another_file_is_refused_without_quoting_it(adminworld):
    w = adminworld
    other = w.dir / "other-file"
    other.write_text("topsecret_first_line: some private value\n")
    visible = w.config / "fps.yaml"
    visible.unlink()
    os.symlink(other, visible)
    wait_for(lambda: "resolves to a file outside" in _last_error(w), 30, what="symlink refused")
    assert "topsecret" not in _last_error(w)
    assert "topsecret" not in w.log()
    assert w.get("a.allowed.test")[0] == 200


# ---- 6. probes keep answering while a local client floods the admin port -------------------

def test_healthz_answers_from_127_0_0_1_while_slow_clients_flood_the_admin_port(adminworld):
    w = adminworld
    stop, socks = threading.Event(), []

    def trickle():
        # A header byte per second on each connection: never idle long enough for a timeout.
        while not stop.wait(1.0):
            for s in list(socks):
                try:
                    s.sendall(b"x")
                except OSError:
                    pass
    t = threading.Thread(target=trickle)
    wait_for(lambda: admin_get(w.admin_port, "/readyz")[0] == 200, 30, what="/readyz 200")
    try:
        for _ in range(100):  # from the probes' own address
            s = socket.create_connection(("127.0.0.1", w.admin_port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        t.start()
        codes = [admin_get(w.admin_port, "/healthz")[0] for _ in range(20)]
        codes += [admin_get(w.admin_port, "/readyz")[0] for _ in range(5)]
        assert set(codes) == {200}, codes
    finally:
        stop.set()
        if t.is_alive():
            t.join(10)
        for s in socks:
            s.close()
