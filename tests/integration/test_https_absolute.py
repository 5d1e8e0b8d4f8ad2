"""Absolute-form https:// requests (`GET https://host/` sent to the proxy instead of CONNECT) are
refused with 400 and a page that says to use CONNECT, in both apply modes and in report mode,
after credentials and before anything reaches the origin (docs/security.md, "https:// only
through CONNECT"); so are other schemes than http:// (ftp://, gopher://, whois://). Debian's Squid would otherwise open TLS to the origin itself without
verifying its certificate: the origin here has a certificate from a CA nobody trusts, and counts
every TCP connection it accepts."""
import socket
import ssl
import threading

import pytest

from fpsharness import World, agent_credentials, curl, make_ca_and_cert, wait_for


class CountingTLSOrigin:
    """An HTTPS origin that counts the TCP connections it accepts, before any TLS."""

    def __init__(self, pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki[1], pki[2])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(10)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with self.lock:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                body = b"origin tls secret\n"
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


def ask(proxy_port, request, timeout=10):
    """Sends one raw request on a new connection; returns (status, headers+body text)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as s:
        s.sendall(request.encode())
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass  # what arrived is the answer; the caller judges it
    text = data.decode(errors="replace")
    return (text[9:12] if text.startswith("HTTP/1.") else ""), text


@pytest.fixture(scope="module", params=["live", "reconfigure", "live-report"])
def world(request):
    apply, _, mode = request.param.partition("-")
    w = World(f"https-abs-{request.param}")
    try:
        w.pki = make_ca_and_cert(w.dir / "pki", ["secure.test"], ca_name="Untrusted Test CA")
        w.tls = CountingTLSOrigin(w.pki)
        w.http = w.origin(name="http")
        w.set_hosts({"secure.test": "127.0.0.1", "other.test": "127.0.0.1", "plain.test": "127.0.0.1"})
        w.write_keys()
        # The origin's port is a safe (plain) port and a CONNECT port: only the request's form
        # can refuse it.
        ports = [80, 443, w.tls.port, w.http.port]
        y = w.yaml(apply=apply, auth=True, safe_ports=ports, connect_ports=ports)
        if mode:  # whitelist.mode: report allows unlisted hosts, never this form
            y = y.replace("whitelist:\n", f"whitelist:\n  mode: {mode}\n")
        w.write_config(y, {"version": 1, "domains": ["secure.test", "plain.test"]})
        w.start()
        w.user, w.password = agent_credentials(w.API_KEY)
        import base64
        w.basic = base64.b64encode(f"{w.user}:{w.password}".encode()).decode()
        yield w
    finally:
        w.close()
        if hasattr(w, "tls"):
            w.tls.stop()


def absolute(w, url, creds=True, method="GET"):
    host = url.split("/")[2]
    auth = f"Proxy-Authorization: Basic {w.basic}\r\n" if creds else ""
    return ask(w.port, f"{method} {url} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")


@pytest.mark.parametrize("scheme", ["https", "HTTPS", "Https"])
def test_absolute_https_is_refused_with_400_saying_use_connect_and_the_origin_sees_nothing(world, scheme):
    w = world
    before = w.tls.accepted
    url = f"{scheme}://secure.test:{w.tls.port}/secret?q=1"
    answers = {m: absolute(w, url, method=m) for m in ("GET", "POST", "HEAD")}
    # Not whitelisted: the same 400 (the form is checked before the whitelist).
    answers["other"] = absolute(w, f"{scheme}://other.test:{w.tls.port}/")
    assert w.tls.accepted == before, f"the untrusted origin accepted {w.tls.accepted - before} connection(s): {w.tls.requests}"
    for what, (status, text) in answers.items():
        assert status == "400", f"{what}: {text[:600]}"
        if what != "HEAD":
            assert "CONNECT" in text and "https://" in text, text
    assert f"CONNECT secure.test:{w.tls.port}" in answers["GET"][1], answers["GET"][1]


@pytest.mark.parametrize("scheme", ["ftp", "FTP", "gopher", "whois"])
def test_other_schemes_are_refused_with_400_and_the_origin_sees_nothing(world, scheme):
    """Squid would speak FTP to the origin for the agent (on a port the port rules allow):
    deny by default, only http:// and CONNECT pass the form check. Debian's Squid answers
    gopher:// and whois:// itself with 501 (ERR_UNSUP_REQ) before http_access."""
    w = world
    before = w.tls.accepted
    answers = {m: absolute(w, f"{scheme}://secure.test:{w.tls.port}/file", method=m) for m in ("GET", "PUT")}
    assert w.tls.accepted == before, f"the origin accepted {w.tls.accepted - before} connection(s)"
    for what, (status, text) in answers.items():
        if scheme.lower() == "ftp":
            assert status == "400", f"{what}: {text[:600]}"
            assert "neither http:// nor a CONNECT" in text, text
        else:
            assert status in ("400", "501"), f"{what}: {text[:600]}"


def test_absolute_https_without_credentials_gets_407_first(world):
    w = world
    before = w.tls.accepted
    status, text = absolute(w, f"https://secure.test:{w.tls.port}/secret", creds=False)
    assert status == "407", text[:600]
    assert "CONNECT" not in text.split("\r\n\r\n", 1)[1]  # nothing about the form before credentials
    assert w.tls.accepted == before, w.tls.requests


def test_the_refusal_is_marked_in_access_log_as_tcp_denied_400(world):
    w = world
    before = w.tls.accepted
    absolute(w, f"https://secure.test:{w.tls.port}/marked")
    log = w.state / "run" / "access.log"
    want = " TCP_DENIED/400 "
    wait_for(lambda: any(want in l and f" GET https://secure.test:{w.tls.port}/marked " in l
                         for l in log.read_text().splitlines()), 10, what="the access.log line")
    line = [l for l in log.read_text().splitlines() if "/marked " in l][-1]
    assert f" {w.user} " in line and " HIER_NONE/" in line, line
    assert w.tls.accepted == before


def test_connect_and_plain_http_are_unaffected(world):
    w = world
    ca = w.pki[0]
    before = w.tls.accepted
    code, body = curl(f"https://secure.test:{w.tls.port}/", f"http://{w.proxy}", w.user, w.password, cacert=ca)
    assert code == 200 and "origin tls secret" in body, body
    assert w.tls.accepted > before  # the origin counts what reaches it: CONNECT does
    assert any(r.startswith("GET / ") for r in w.tls.requests)  # origin-form, inside the agent's TLS
    code, body = curl(f"http://plain.test:{w.http.port}/x", f"http://{w.proxy}", w.user, w.password)
    assert code == 200 and "origin http plain.test" in body, body
