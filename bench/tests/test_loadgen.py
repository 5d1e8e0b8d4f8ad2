# Behaviour tests for bench/loadgen: each starts real servers on loopback (raw-socket HTTP origins,
# an asyncio CONNECT proxy, a TLS origin, Squid 5.7 with basic_ncsa_auth), runs the sanitizer build
# of the load generator for a bounded run and checks its JSON against what the servers saw.
import asyncio
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
APIKEY = "test-key-2026-11"
RUN_CAP = "20"  # --duration cap of every bounded run, so a broken build cannot hang the suite


@pytest.fixture(scope="session")
def loadgen():
    path = os.environ.get("LOADGEN")
    if not path:
        subprocess.run(["make", "-s", "-C", BENCH, "asan"], check=True)
        path = os.path.join(ROOT, "build", "bench", "asan", "loadgen")
    assert os.access(path, os.X_OK), path
    return path


def run_loadgen(binary, *args, timeout=60):
    proc = subprocess.run([binary, "--duration", RUN_CAP, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    result["_stderr"] = proc.stderr
    return result


def wait_for(pred, what, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def signal_taken(pid, sig):
    """True once no thread of pid has sig pending: the kernel has handed it to loadgen's
    handler. Signals are asynchronous; without this, an answer released right after
    send_signal can reach loadgen before its mark does (on a busy machine it did)."""
    bit = 1 << (sig - 1)
    files = [f"/proc/{pid}/status"] + [f"/proc/{pid}/task/{t}/status" for t in os.listdir(f"/proc/{pid}/task")]
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                return False
    return True


def expected_user(product, index):
    return "%s-%s" % (product, uuid.uuid5(uuid.NAMESPACE_URL, "fps-loadgen:agent:%d" % index))


def decode_basic(value):
    scheme, b64 = value.split(" ", 1)
    assert scheme == "Basic"
    user, password = base64.b64decode(b64).decode().split(":", 1)
    return user, password


# ---- a raw-socket server: one thread per connection, a handler decides what to do ------------


class RawServer:
    def __init__(self, handler):
        self.handler = handler
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []  # (request line, {header: value}) in arrival order
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_request(self, conn, buf):
        """Returns (request line, headers) or None at EOF; buf is the connection's bytearray."""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        del buf[: len(head) + 4]
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        with self.lock:
            self.requests.append((lines[0], headers))
        return lines[0], headers

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def keepalive_handler(respond):
    """Serves requests on a connection; respond() gives (list of byte pieces, close after)."""

    def handler(server, conn):
        buf = bytearray()
        while True:
            req = server.read_request(conn, buf)
            if req is None:
                return
            pieces, close = respond(*req)
            for p in pieces:  # separate sends exercise the parser's partial input paths
                conn.sendall(p)
            if close:
                conn.shutdown(socket.SHUT_WR)
                return

    return handler


def fixed(status, body=b"", extra=b""):
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)
    return lambda line, headers: ([head + body], False)


@pytest.fixture
def servers():
    started = []

    def start(handler):
        s = RawServer(handler)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def free_unlistened_port():
    """A bound but never listening socket: connects to it are refused, and nobody can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


# ---- (1) counts agree with the origin's own log ---------------------------------------------


def test_bounded_run_counts_agree_with_origin_log(loadgen, servers):
    body = os.urandom(1024)
    origin = servers(keepalive_handler(fixed(200, body)))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/1k" % origin.port, "--agents", "20",
                    "--requests", "500")
    assert origin.count() == 500
    assert r["requests"] == 500
    assert r["status"] == {"200": 500}
    assert r["body_bytes"] == 500 * 1024
    assert r["errors_total"] == 0
    assert r["latency_us"]["count"] == 500
    lat = r["latency_us"]
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert sum(c for _, c in lat["buckets"]) == 500
    assert all(line == "GET /1k HTTP/1.1" for line, _ in origin.requests)
    assert all(h["host"] == "127.0.0.1:%d" % origin.port for _, h in origin.requests)
    wait_for(lambda: origin.accepted == r["connections"]["opened"], "origin to accept every connection")
    assert r["connections"]["opened"] == 20  # keep-alive: one connection per agent
    av = r["availability"]
    # elapsed_s is printed to the millisecond and all_served_ms to a tenth: allow their rounding.
    assert av["agents_served"] == 20 and 0 < av["all_served_ms"] <= r["elapsed_s"] * 1000 + 0.55
    assert av["mark_s"] is None and av["agents_served_after_mark"] == 0


def test_sigusr1_mark_reports_when_every_agent_is_served_again(loadgen, servers):
    """A pause in the origin after the mark: every agent is served again, the gap shows it."""
    paused = threading.Event()
    lock, held = threading.Lock(), [0]  # requests that arrived during the pause

    def handler(server, conn):
        buf = bytearray()
        while server.read_request(conn, buf) is not None:
            if paused.is_set():
                with lock:
                    held[0] += 1
                while paused.is_set():
                    time.sleep(0.01)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    origin = servers(handler)
    proc = subprocess.Popen([loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "5",
                             "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: origin.count() >= 50, "first requests")
        paused.set()
        # The mark only once every agent's next request is held: an answer the origin had sent
        # before the pause could otherwise reach its agent after the mark (seen on a busy box:
        # all five "served again" within 0.7 ms). An agent sends its next request only after its
        # answer, so with five held there is none on the wire.
        wait_for(lambda: held[0] >= 5, "every agent's request held by the paused origin")
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: signal_taken(proc.pid, signal.SIGUSR1), "loadgen to take the mark")
        time.sleep(0.4)  # the gap to measure (not a synchronization)
        paused.clear()
        out, err = proc.communicate(timeout=30)
    finally:
        paused.clear()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    av = json.loads(out)["availability"]
    assert av["mark_s"] is not None and av["agents_served_after_mark"] == 5
    assert av["all_served_after_mark_ms"] >= 300
    assert av["gap_max_ms"] >= 300


def test_mark_reports_requests_in_flight_and_agents_failed(loadgen, servers):
    """5 agents each have a request on the wire when the mark comes (the origin holds them);
    then 2 get a 503 and 3 connections are closed unanswered: the requests in flight at the
    mark are counted by outcome, and agents_failed counts agents, not their reconnect attempts
    (the origin then refuses nothing: the agents are served again)."""
    held, release, lock = threading.Event(), threading.Event(), threading.Lock()
    waiting, fates = [], ["503", "503", "cut", "cut", "cut"]

    def handler(server, conn):
        buf = bytearray()
        while server.read_request(conn, buf) is not None:
            if held.is_set():
                with lock:
                    waiting.append(conn)
                release.wait(10)
                with lock:
                    fate = fates.pop(0) if fates else "ok"
                if fate == "503":
                    conn.sendall(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                if fate == "cut":
                    return  # closed unanswered
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    origin = servers(handler)
    proc = subprocess.Popen([loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "5",
                             "--duration", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: origin.count() >= 50, "first requests")
        held.set()
        wait_for(lambda: len(waiting) == 5, "5 requests held by the origin")
        # pending before the origin answers: loadgen runs its handler before it sees any event
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: signal_taken(proc.pid, signal.SIGUSR1), "loadgen to take the mark")
        held.clear()
        release.set()
        out, err = proc.communicate(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    r = json.loads(out)
    av = r["availability"]
    assert av["in_flight_at_mark"] == {"2xx": 0, "other_status": 2, "cut": 3}, av
    assert av["agents_failed"] == 5 and av["agent_failures_max"] == 1, av
    assert r["status"].get("503") == 2 and r["errors_total"] == 3, r
    assert av["agents_served_after_mark"] == 5


def test_proxy_mode_sends_absolute_uris_round_robin(loadgen, servers):
    proxy = servers(keepalive_handler(fixed(200, b"ok")))
    urls = ["http://a.example:8000/one", "http://b.example/two?x=1"]
    args = ["--proxy", "127.0.0.1:%d" % proxy.port, "--agents", "4", "--requests", "100", "--apikey", APIKEY]
    for u in urls:
        args += ["--url", u]
    r = run_loadgen(loadgen, *args)
    assert r["requests"] == 100 and proxy.count() == 100
    lines = [line for line, _ in proxy.requests]
    a = lines.count("GET http://a.example:8000/one HTTP/1.1")
    b = lines.count("GET http://b.example/two?x=1 HTTP/1.1")
    assert a + b == 100
    assert abs(a - b) <= 4  # each agent alternates; at most one extra per agent
    for line, h in proxy.requests:
        assert h["host"] == ("a.example:8000" if "a.example" in line else "b.example")


# ---- response framing ----------------------------------------------------------------------


def chunked_response(line, headers):
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3e8;ext=1\r\n", b"x" * 1000, b"\r\n",
              b"5\r\nhello\r\n", b"0\r\n", b"X-Trailer: yes\r\n\r\n"]
    return pieces, False


def close_delimited(line, headers):
    return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"y" * 777], True


def http10_response(line, headers):
    return [b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"], True


def interim_then_ok(line, headers):
    return [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"], False


@pytest.mark.parametrize(
    "respond,status,body_len,new_conn_each",
    [
        (fixed(200, b"z" * 4096), "200", 4096, False),
        (chunked_response, "200", 1005, False),
        (close_delimited, "200", 777, True),
        (http10_response, "200", 10, True),
        (fixed(204), "204", 0, False),
        (lambda line, headers: ([b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"], False), "304", 0,
         False),
        (interim_then_ok, "200", 3, False),
        (fixed(407, b"<html>auth</html>", b"Proxy-Authenticate: Basic realm=\"FPS\"\r\n"), "407", 17, False),
    ],
    ids=["content-length", "chunked", "close-delimited", "http10", "204", "304", "100-continue", "407"],
)
def test_response_framing_counts_bodies_exactly(loadgen, servers, respond, status, body_len, new_conn_each):
    origin = servers(keepalive_handler(respond))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/x" % origin.port, "--agents", "4",
                    "--requests", "40")
    assert r["requests"] == 40 and origin.count() == 40
    assert r["status"] == {status: 40}
    assert r["body_bytes"] == 40 * body_len
    assert r["errors_total"] == 0, r["errors"]
    if new_conn_each:
        assert 40 <= r["connections"]["opened"] <= 44
    else:
        assert r["connections"]["opened"] == 4


# ---- (2) error classification --------------------------------------------------------------


def test_nothing_listening_counts_connect_refused(loadgen):
    sock = free_unlistened_port()
    try:
        r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % sock.getsockname()[1], "--agents",
                        "5", "--duration", "0.3")
    finally:
        sock.close()
    assert r["errors"]["connect_refused"] > 0
    assert r["connect_errors_total"] == r["errors"]["connect_refused"] == r["errors_total"]
    assert r["requests"] == 0 and r["connections"]["opened"] == 0


def test_server_reset_counts_resets(loadgen, servers):
    def rst(server, conn):
        server.read_request(conn, bytearray())
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    origin = servers(rst)
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "5",
                    "--duration", "0.5")
    assert r["errors"]["reset"] > 0
    assert r["errors_total"] == r["errors"]["reset"]
    assert r["requests"] == 0
    assert r["errors"]["reset"] <= origin.count()


def test_silent_server_counts_timeouts_and_replaces_connections(loadgen, servers):
    def silent(server, conn):
        buf = bytearray()
        while server.read_request(conn, buf) is not None:
            pass

    origin = servers(silent)
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "3",
                    "--timeout", "100", "--duration", "0.7")
    opened = r["connections"]["opened"]
    assert r["requests"] == 0
    assert r["errors"]["timeout"] > 0
    assert r["errors_total"] == r["errors"]["timeout"]
    # every connection but the last of each agent ended in a timeout and was replaced
    assert opened - 3 <= r["errors"]["timeout"] <= opened
    wait_for(lambda: origin.accepted == opened, "origin to accept every connection")


@pytest.mark.parametrize(
    "reply,error",
    [
        ([b"HELLO WORLD\r\n\r\n"], "malformed"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"], "malformed"),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "malformed"),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"only ten.."], "eof"),
        ([b"HTTP/1.1 200 OK\r\nContent-Le"], "eof"),
    ],
    ids=["garbage", "bad-content-length", "bad-chunk-size", "eof-in-body", "eof-in-head"],
)
def test_broken_responses_are_classified(loadgen, servers, reply, error):
    origin = servers(keepalive_handler(lambda line, headers: (reply, True)))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "2",
                    "--requests", "10")
    assert r["errors"][error] == 10
    assert r["errors_total"] == 10
    assert r["requests"] == 0 and origin.count() == 10


def test_warmup_is_excluded_from_results(loadgen, servers):
    origin = servers(keepalive_handler(fixed(200, b"w")))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "2",
                    "--warmup", "0.3", "--duration", "0.6")
    assert r["requests"] > 0
    assert origin.count() > r["requests"]  # the origin also served the warm-up requests
    assert r["errors_total"] == 0


# ---- (2b) open loop: --rate --------------------------------------------------------------


def test_open_loop_sends_the_scheduled_arrivals_and_accounts_for_each(loadgen, servers):
    origin = servers(keepalive_handler(fixed(200, b"ok")))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "10",
                    "--threads", "2", "--rate", "400", "--duration", "1")
    ol = r["open_loop"]
    assert r["config"]["rate"] == 400 and ol["rate"] == 400
    assert abs(ol["arrivals"] - 400) <= 2  # 400/s for 1 s, on each thread's fixed schedule
    assert ol["arrivals"] == ol["dispatched"] + ol["unsent_at_end"]
    assert r["errors_total"] == 0
    assert ol["dispatched"] == ol["answered"] + ol["in_flight_at_end"]
    wait_for(lambda: origin.count() == ol["dispatched"], "origin to log every dispatched request")
    assert r["requests"] <= ol["answered"] <= r["requests"] + 10
    assert r["status"] == {"200": r["requests"]}
    lat, svc = r["latency_us"], ol["service_us"]
    assert lat["count"] == svc["count"] == r["requests"]
    # each request's latency counts from its scheduled time, so from before it was sent
    assert lat["p50"] >= svc["p50"] and lat["p99"] >= svc["p99"] and lat["max"] >= svc["max"]
    assert r["connections"]["opened"] <= 10


def test_open_loop_keeps_arrivals_coming_while_the_origin_is_slow(loadgen, servers):
    """One connection, an origin taking >= 50 ms per answer, 100 arrivals/s: arrivals queue up and
    their waiting is in the latency (a closed loop would have sent fewer and hidden it)."""

    def slow(server, conn):
        buf = bytearray()
        while server.read_request(conn, buf) is not None:
            time.sleep(0.05)  # the origin's service time (not a synchronization)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    origin = servers(slow)
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "1",
                    "--rate", "100", "--duration", "1")
    ol = r["open_loop"]
    assert abs(ol["arrivals"] - 100) <= 1
    assert ol["answered"] <= 21  # at most one answer per 50 ms
    assert ol["unsent_at_end"] > 0 and ol["backlog_max"] > 1 and ol["oldest_unsent_ms"] > 0
    assert ol["arrivals"] == ol["dispatched"] + ol["unsent_at_end"]
    assert r["latency_us"]["max"] > ol["service_us"]["max"]
    assert r["latency_us"]["p50"] > ol["service_us"]["p50"]
    wait_for(lambda: origin.count() == ol["dispatched"], "origin to log every dispatched request")


def test_closed_loop_reports_no_open_loop_section(loadgen, servers):
    origin = servers(keepalive_handler(fixed(200, b"ok")))
    r = run_loadgen(loadgen, "--direct", "--url", "http://127.0.0.1:%d/" % origin.port, "--agents", "2",
                    "--requests", "10")
    assert r["open_loop"] is None and r["config"]["rate"] == 0


# ---- (3) credentials per agent -------------------------------------------------------------


def test_every_agent_sends_its_own_credentials(loadgen, servers):
    proxy = servers(keepalive_handler(fixed(200, b"ok")))
    first, agents = 7, 50
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--url", "http://origin.example/x",
                    "--agents", str(agents), "--first-agent", str(first), "--product", "DeepSecurity",
                    "--apikey", APIKEY, "--requests", "250")
    assert r["requests"] == 250 and proxy.count() == 250
    seen = set()
    for _, h in proxy.requests:
        user, password = decode_basic(h["proxy-authorization"])
        assert password == hashlib.sha1((user + APIKEY).encode()).hexdigest()
        seen.add(user)
    assert seen == {expected_user("DeepSecurity", i) for i in range(first, first + agents)}


def test_no_auth_sends_no_credentials(loadgen, servers):
    proxy = servers(keepalive_handler(fixed(200, b"ok")))
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--url", "http://origin.example/x",
                    "--agents", "3", "--no-auth", "--requests", "9")
    assert r["requests"] == 9 and proxy.count() == 9
    assert all("proxy-authorization" not in h for _, h in proxy.requests)


def test_usage_errors_exit_2(loadgen):
    for args in (["--url", "ftp://x/"], ["--url", "http://x/"], ["--url", "http://x/", "--apikey", "k",
                                                                  "--mix", "get=60,connect=60"],
                 ["--url", "http://x/", "--direct", "--rate", "10", "--requests", "5"],
                 ["--url", "http://x/", "--direct", "--rate", "-1"]):
        proc = subprocess.run([loadgen, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, args
        assert "loadgen:" in proc.stderr


# ---- (4) CONNECT + TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="lg-certs-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", d + "/key.pem", "-out",
                    d + "/cert.pem"], check=True, capture_output=True)
    os.chmod(d, 0o755)
    for f in ("key.pem", "cert.pem"):
        os.chmod(os.path.join(d, f), 0o644)
    yield d
    shutil.rmtree(d)


class AioLoop:
    """One asyncio loop in a background thread for the CONNECT proxy and the TLS origin."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: None)  # refused handshakes are expected
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def aio():
    a = AioLoop()
    yield a
    a.close()


class TlsOrigin:
    def __init__(self, certdir, body):
        self.body = body
        self.handshakes = 0
        self.requests = 0
        self.sni = []
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certdir + "/cert.pem", certdir + "/key.pem")
        self.ctx.sni_callback = lambda obj, name, ctx: self.sni.append(name)

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        self.handshakes += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body) + self.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()


class ConnectProxy:
    """Answers CONNECT with 200 and relays bytes to 127.0.0.1:<port>, or refuses with a status."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.connects = []  # (target, {header: value})

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
                self.connects.append((target, headers))
                if method != "CONNECT" or self.refuse:
                    body = b"<html>denied</html>"
                    writer.write(b"HTTP/1.1 %d Denied\r\nContent-Length: %d\r\n\r\n" % (self.refuse or 405, len(body))
                                 + body)
                    await writer.drain()
                    continue
                r2, w2 = await asyncio.open_connection("127.0.0.1", int(target.rsplit(":", 1)[1]))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(self.pipe(reader, w2), self.pipe(r2, writer))
                return
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def test_connect_tls_requests_are_counted(loadgen, certs, aio):
    origin = TlsOrigin(certs, b"s" * 2048)
    proxy = ConnectProxy()
    aio.call(origin.start())
    aio.call(proxy.start())
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--mode", "connect", "--url",
                    "https://localhost:%d/obj" % origin.port, "--cafile", certs + "/cert.pem", "--agents", "10",
                    "--requests", "100", "--requests-per-tunnel", "5", "--apikey", APIKEY)
    assert r["errors_total"] == 0, r["errors"]
    assert r["requests"] == 100 and r["status"] == {"200": 100}
    assert r["body_bytes"] == 100 * 2048
    wait_for(lambda: origin.requests == 100, "origin to count 100 requests")
    tunnels = r["connections"]["tunnels"]
    assert tunnels >= 20  # at most 5 requests per tunnel
    assert tunnels == r["connections"]["connect_sent"] == len(proxy.connects)
    wait_for(lambda: origin.handshakes == tunnels, "origin to count every handshake")
    assert set(origin.sni) == {"localhost"} and len(origin.sni) == tunnels
    assert r["latency_by_kind_us"]["tunnel_setup"]["count"] == tunnels
    for target, h in proxy.connects:
        assert target == "localhost:%d" % origin.port
        user, password = decode_basic(h["proxy-authorization"])
        assert password == hashlib.sha1((user + APIKEY).encode()).hexdigest()


def test_tunnel_rate_recycles_tunnels(loadgen, certs, aio):
    origin = TlsOrigin(certs, b"r")
    proxy = ConnectProxy()
    aio.call(origin.start())
    aio.call(proxy.start())
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--url",
                    "https://127.0.0.1:%d/" % origin.port, "--cafile", certs + "/cert.pem", "--agents", "4",
                    "--tunnel-rate", "100", "--duration", "0.5", "--apikey", APIKEY)
    assert r["errors_total"] == 0, r["errors"]
    assert r["requests"] > 0
    assert r["connections"]["tunnels"] > 4  # agents reopened tunnels, they did not keep the first one
    assert set(origin.sni) == {None}  # no SNI for an address literal (RFC 6066)


def test_untrusted_origin_certificate_counts_tls_handshake_failures(loadgen, certs, aio):
    origin = TlsOrigin(certs, b"x")
    proxy = ConnectProxy()
    aio.call(origin.start())
    aio.call(proxy.start())
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--url",
                    "https://localhost:%d/" % origin.port, "--agents", "3", "--duration", "0.3", "--apikey", APIKEY)
    assert r["errors"]["tls_handshake"] > 0
    assert r["errors_total"] == r["errors"]["tls_handshake"]
    assert r["requests"] == 0 and origin.requests == 0
    assert "certificate" in r["_stderr"]


def test_proxy_refusing_connect_is_counted_by_status(loadgen, aio):
    proxy = ConnectProxy(refuse=403)
    aio.call(proxy.start())
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % proxy.port, "--url", "https://blocked.example/",
                    "--agents", "3", "--duration", "0.3", "--apikey", APIKEY, "--insecure")
    n = r["errors"]["proxy_connect_refused"]
    assert n > 0 and r["proxy_connect_status"] == {"403": n}
    assert r["errors_total"] == n and r["requests"] == 0
    assert n <= len(proxy.connects) <= n + 3  # the proxy may have answered a last one after the stop


# ---- through a real Squid 5.7 with basic_ncsa_auth -------------------------------------------

SQUID_CONF = """
http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log {d}/access.log
coredump_dir {d}
cache deny all
pinger_enable off
hosts_file {d}/hosts
dns_nameservers 127.0.0.1
max_filedescriptors 4096
shutdown_lifetime 0 seconds
auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd
auth_param basic children 2
auth_param basic realm FPS
# Squid lowercases Basic usernames unless told otherwise, and the credential scheme (docs/agents.md) hashes them as sent
auth_param basic casesensitive on
acl authed proxy_auth REQUIRED
http_access deny !authed
http_access allow authed
http_access deny all
"""


@pytest.fixture(scope="module")
def squid():
    if not shutil.which("squid") or not os.path.exists("/usr/lib/squid/basic_ncsa_auth"):
        pytest.skip("squid 5.7 with basic_ncsa_auth is not installed")
    d = tempfile.mkdtemp(prefix="lg-squid-")
    os.chmod(d, 0o777)
    users = [expected_user("ApexOne", i) for i in range(20)]
    passwords = [hashlib.sha1((u + APIKEY).encode()).hexdigest() for u in users]
    hashes = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input="\n".join(passwords) + "\n",
                            capture_output=True, text=True, check=True).stdout.split()
    with open(d + "/passwd", "w") as f:
        f.writelines("%s:%s\n" % (u, h) for u, h in zip(users, hashes))
    with open(d + "/hosts", "w") as f:
        f.write("127.0.0.1 localhost\n")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with open(d + "/squid.conf", "w") as f:
        f.write(SQUID_CONF.format(port=port, d=d))
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    proc = subprocess.Popen(["squid", "-N", "-f", d + "/squid.conf"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def accepting():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            assert proc.poll() is None, open(d + "/cache.log").read()
            return False

    try:
        wait_for(accepting, "squid to listen", 30)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_mix_through_squid_with_basic_auth(loadgen, squid, servers, certs, aio):
    http_origin = servers(keepalive_handler(fixed(200, b"h" * 1024)))
    tls_origin = TlsOrigin(certs, b"t" * 512)
    aio.call(tls_origin.start())
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % squid, "--mix", "get=50,connect=50", "--url",
                    "http://127.0.0.1:%d/1k" % http_origin.port, "--url", "https://127.0.0.1:%d/" % tls_origin.port,
                    "--cafile", certs + "/cert.pem", "--agents", "20", "--requests", "200", "--apikey", APIKEY)
    assert r["errors_total"] == 0, (r["errors"], r["_stderr"])
    assert r["requests"] == 200 and r["status"] == {"200": 200}
    get_n = r["latency_by_kind_us"]["get"]["count"]
    tun_n = r["latency_by_kind_us"]["tunnel"]["count"]
    assert get_n > 0 and tun_n > 0 and get_n + tun_n == 200
    assert http_origin.count() == get_n
    wait_for(lambda: tls_origin.requests == tun_n, "TLS origin to count its requests")
    assert r["body_bytes"] == get_n * 1024 + tun_n * 512
    assert r["connections"]["tunnels"] == 10  # the connect half of 20 agents, one tunnel each


def test_wrong_apikey_through_squid_counts_407(loadgen, squid, servers):
    origin = servers(keepalive_handler(fixed(200, b"never")))
    r = run_loadgen(loadgen, "--proxy", "127.0.0.1:%d" % squid, "--mix", "get=50,connect=50", "--url",
                    "http://127.0.0.1:%d/" % origin.port, "--url", "https://127.0.0.1:9/", "--agents", "4",
                    "--duration", "0.5", "--apikey", "not-the-key", "--insecure")
    assert origin.count() == 0
    assert r["requests"] > 0 and set(r["status"]) == {"407"}
    assert r["errors"]["proxy_connect_refused"] > 0
    assert r["proxy_connect_status"] == {"407": r["errors"]["proxy_connect_refused"]}
    assert r["errors_total"] == r["errors"]["proxy_connect_refused"]
