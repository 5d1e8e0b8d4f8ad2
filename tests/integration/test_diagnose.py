"""`fps-controller diagnose` (docs/operations.md) against real servers on loopback: a TLS server with a
certificate from our CA, one from a rogue CA (an intercepting firewall), a closed port, an
upstream proxy that accepts or refuses credentials, and the local proxy of a running FPS.

One FPS instance (Squid with auth on) serves every test's self-test; each test writes its own
config and secrets directories for diagnose, with the same proxy section and the tunnel/upstream
parts under test, so exactly one check is expected to fail in each negative case.
"""
import base64
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from fpsharness import BIN, SERVE_POLL, World, make_ca_and_cert

UP_USER, UP_PASS = "fps", "s3cret-upstream"


class _ProxyHandler(socketserver.StreamRequestHandler):
    """Just enough of an HTTP proxy to judge credentials: CONNECT with the expected Basic
    credentials gets 200 (then the connection closes), anything else 407."""

    def handle(self):
        lines = []
        while True:
            line = self.rfile.readline(8192)
            if not line or line in (b"\r\n", b"\n"):
                break
            lines.append(line.decode("latin-1").rstrip("\r\n"))
        if not lines:
            return
        self.server.requests.append(lines)
        want = "Basic " + base64.b64encode(f"{UP_USER}:{UP_PASS}".encode()).decode()
        auth = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("proxy-authorization:")]
        if self.server.accept and lines[0].startswith("CONNECT ") and auth == [want]:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            self.wfile.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")


class UpstreamProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, accept):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.accept = accept
        self.requests = []
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(SERVE_POLL,), daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class TLSServer:
    """Accepts TLS connections with the given certificate and completes the handshake."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as t:
                    self.handshakes += 1
                    t.recv(1)  # until the client closes
            except (OSError, ssl.SSLError):
                conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def closed_port():
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env():
    w = World("diag")
    pki = Path(tempfile.mkdtemp(prefix="diag-pki-", dir="/tmp"))
    servers = []
    try:
        w.set_hosts({"diag.test": "127.0.0.1"})
        origin = w.origin()
        w.write_keys()
        base = w.yaml(auth=True, whitelist_preset=["diag.test"], safe_ports=[origin.port, 443])
        w.write_config(base)
        w.start()
        ca, cert, key = make_ca_and_cert(pki / "good", ["localhost"], "FPS Test CA")
        _, rcert, rkey = make_ca_and_cert(pki / "rogue", ["localhost"], "Rogue Firewall CA")
        good, rogue = TLSServer(cert, key), TLSServer(rcert, rkey)
        ok_proxy, bad_proxy = UpstreamProxy(accept=True), UpstreamProxy(accept=False)
        servers += [good, rogue, ok_proxy, bad_proxy]
        yield dict(world=w, base=base, ca=ca, good=good, rogue=rogue, ok_proxy=ok_proxy, bad_proxy=bad_proxy,
                   origin=origin)
    finally:
        for s in servers:
            s.stop()
        w.close()
        shutil.rmtree(pki, ignore_errors=True)


def diagnose(env, extra_yaml="", base=None, json_out=True, products=None):
    """Writes a config/secrets pair for diagnose and runs it. Returns (rc, report)."""
    d = Path(tempfile.mkdtemp(prefix="diag-run-", dir="/tmp"))
    cfg, sec = d / "config", d / "secrets"
    cfg.mkdir()
    sec.mkdir()
    text = base if base is not None else env["base"]
    if products is not None:
        text = text.replace("auth:\n", f"auth:\n  products: {json.dumps(products)}\n", 1)
    (cfg / "fps.yaml").write_text(text + extra_yaml)
    shutil.copy(env["world"].secrets / "apikeys.json", sec / "apikeys.json")
    shutil.copy(env["ca"], sec / "tunnel-ca.pem")
    (sec / "upstream-password").write_text(UP_PASS)
    args = [str(BIN / "fps-controller"), "diagnose", "--config-dir", str(cfg), "--secrets-dir", str(sec)]
    if json_out:
        args.append("--json")
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert p.returncode in (0, 1), f"rc {p.returncode}\n{p.stdout}\n{p.stderr}"
    report = json.loads(p.stdout) if json_out else p.stdout
    return p.returncode, report


def by_name(report):
    return {c["check"]: c for c in report["checks"]}


def failing(report):
    return sorted(c["check"] for c in report["checks"] if c["status"] == "fail")


def tunnel_yaml(port):
    return f"tunnel:\n  server: localhost\n  port: {port}\n"


def upstream_yaml(port):
    return f"upstream:\n  host: 127.0.0.1\n  port: {port}\n  username: {UP_USER}\n"


def test_healthy_paths_pass_and_name_the_issuer(env):
    rc, rep = diagnose(env, tunnel_yaml(env["good"].port) + upstream_yaml(env["ok_proxy"].port))
    checks = by_name(rep)
    assert failing(rep) == [], rep
    assert rc == 0 and rep["ok"] is True
    assert checks["tunnel.dns"]["status"] == "ok" and "127.0.0.1" in checks["tunnel.dns"]["detail"]
    assert checks["tunnel.tcp"]["status"] == "ok"
    tls = checks["tunnel.tls"]
    assert tls["status"] == "ok" and tls["interception"] is False
    assert "FPS Test CA" in tls["issuer"] and "localhost" in tls["subject"]
    assert checks["upstream.auth"]["status"] == "ok"
    # The upstream check CONNECTs to the tunnel server with the configured credentials.
    assert any(r[0] == f"CONNECT localhost:{env['good'].port} HTTP/1.1" for r in env["ok_proxy"].requests)
    assert checks["proxy.selftest"]["status"] == "ok", checks["proxy.selftest"]
    assert "FPS-Diagnose-" in checks["proxy.selftest"]["detail"]
    assert env["good"].handshakes >= 1


def test_rogue_ca_is_reported_as_interception_by_its_issuer(env):
    rc, rep = diagnose(env, tunnel_yaml(env["rogue"].port))
    assert rc == 1
    assert failing(rep) == ["tunnel.tls"], rep
    tls = by_name(rep)["tunnel.tls"]
    assert tls["interception"] is True
    assert "Rogue Firewall CA" in tls["issuer"]
    assert "interception" in tls["detail"] and "Rogue Firewall CA" in tls["detail"]
    assert "exempt" in tls["next_step"]
    # The human report says the same.
    rc, text = diagnose(env, tunnel_yaml(env["rogue"].port), json_out=False)
    assert rc == 1
    assert "likely TLS interception by CN=Rogue Firewall CA" in text
    assert "next step:" in text


def test_unreachable_tunnel_port_is_named(env):
    port = closed_port()
    rc, rep = diagnose(env, tunnel_yaml(port))
    assert rc == 1
    assert failing(rep) == ["tunnel.tcp"], rep
    tcp = by_name(rep)["tunnel.tcp"]
    assert f"127.0.0.1:{port}" in tcp["detail"] and "refused" in tcp["detail"].lower()
    assert "firewall" in tcp["next_step"]
    assert "tunnel.tls" not in by_name(rep)  # nothing to shake hands with


def test_upstream_refusing_credentials_is_named(env):
    rc, rep = diagnose(env, upstream_yaml(env["bad_proxy"].port))
    assert rc == 1
    assert failing(rep) == ["upstream.auth"], rep
    up = by_name(rep)["upstream.auth"]
    assert "407" in up["detail"] and "wrong credentials" in up["detail"] and f"'{UP_USER}'" in up["detail"]
    assert "upstream-password" in up["next_step"]
    # It did send credentials (the refusal is about their value, not their absence).
    assert any(l.lower().startswith("proxy-authorization: basic ") for l in env["bad_proxy"].requests[-1])
    # The password never appears in the report.
    assert UP_PASS not in json.dumps(rep)


def test_product_restriction_is_explained(env):
    rc, rep = diagnose(env, products=["ApexOne"])
    checks = by_name(rep)
    assert failing(rep) == [] and rc == 0, rep
    assert checks["proxy.selftest.auth"]["status"] == "warn"
    assert "auth.products" in checks["proxy.selftest.auth"]["next_step"]
    assert "FPS-Diagnose" in checks["proxy.selftest.auth"]["next_step"]
    # Without credentials, the proxy is still shown to answer and to demand them.
    assert checks["proxy.selftest"]["status"] == "warn" and "407" in checks["proxy.selftest"]["detail"]


def test_proxy_not_running_is_named(env):
    port = closed_port()
    base = env["base"].replace(f"port: {env['world'].port}\n", f"port: {port}\n", 1)
    rc, rep = diagnose(env, base=base)
    assert rc == 1 and failing(rep) == ["proxy.selftest"], rep
    assert f"127.0.0.1:{port}" in by_name(rep)["proxy.selftest"]["detail"]


def test_invalid_config_reports_file_and_line(env):
    rc, rep = diagnose(env, base="proxy:\n  port: eighty\n")
    assert rc == 1 and failing(rep) == ["config"]
    assert "fps.yaml:2" in by_name(rep)["config"]["detail"]
