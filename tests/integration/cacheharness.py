"""Pieces for the update-cache tests: an origin that counts every byte it sends and serves
packages with the headers a test asks for, and a storm of agents that fetch at once and
hash what they got. Real sockets, real Squid, all on loopback."""
import asyncio
import base64
import hashlib
import http.server
import socketserver
import threading
import time
from urllib.parse import parse_qs, urlsplit

from fpsharness import SERVE_POLL


def package(name, size):
    """The deterministic body of package `name` (size bytes) and its SHA-256."""
    seed = hashlib.sha256(name.encode()).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))  # 64 KiB
    body = (block * (size // len(block) + 1))[:size]
    return body, hashlib.sha256(body).hexdigest()


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        size = int(q.get("size", "1024"))
        name = u.path
        vary = q.get("vary")
        if vary:  # the body depends on a request header
            name += "|" + (self.headers.get(vary) or "")
        body, _ = package(name, size)
        with srv.lock:
            srv.requests.append((u.path, dict(self.headers)))
        status, start, end = 200, 0, len(body)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and q.get("ranges", "yes") == "yes":
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else len(body) - int(b)
            end = int(b) + 1 if (a and b) else len(body)
            status = 206
        if q.get("needauth") and not self.headers.get("Authorization"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="origin"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Last-Modified", "Mon, 07 Dec 2026 00:00:00 GMT")
        self.send_header("ETag", '"' + hashlib.sha256(name.encode()).hexdigest()[:16] + '"')
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        self.send_header("Cache-Control", q.get("cc", "max-age=3600"))
        if vary:
            self.send_header("Vary", vary)
        if q.get("cookie"):
            with srv.lock:
                srv.cookies += 1
                n = srv.cookies
            self.send_header("Set-Cookie", f"session=agent{n}; Path=/")
        self.end_headers()
        pace = float(q.get("pace", "0"))  # seconds per 64 KiB: a slow origin keeps a fetch in progress
        view = memoryview(body)[start:end]
        for i in range(0, len(view), 65536):
            chunk = view[i:i + 65536]
            try:
                self.wfile.write(chunk)
            except OSError:
                return
            with srv.lock:
                srv.sent += len(chunk)
                srv.sent_by_path[u.path] = srv.sent_by_path.get(u.path, 0) + len(chunk)
            if pace:
                time.sleep(pace)

    def log_message(self, *args):
        pass


class CountingOrigin(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.lock = threading.Lock()
        self.requests = []
        self.sent = 0
        self.sent_by_path = {}
        self.cookies = 0
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(SERVE_POLL,), daemon=True)
        self.thread.start()

    def hits(self, path):
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def bytes_for(self, path):
        with self.lock:
            return self.sent_by_path.get(path, 0)

    def stop(self):
        self.shutdown()
        self.server_close()


def proxy_auth(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _fetch(proxy_port, url, headers, read_delay=0.0, give_up_after=None, timeout=120):
    """One agent: GET url through the proxy, stream the body into SHA-256. Returns
    (status, headers dict, sha256 hex, bytes, finished monotonic time)."""
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy_port), timeout)
    try:
        hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        host = urlsplit(url).netloc
        w.write(f"GET {url} HTTP/1.1\r\nHost: {host}\r\n{hdr}Connection: close\r\n\r\n".encode())
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hd = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                hd.setdefault(k.strip().lower(), v.strip())
        length = int(hd.get("content-length", "-1"))
        h = hashlib.sha256()
        got = 0
        while length < 0 or got < length:
            want = 16384 if read_delay else 262144
            chunk = await asyncio.wait_for(r.read(want if length < 0 else min(want, length - got)), timeout)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
            if give_up_after is not None and got >= give_up_after:
                return status, hd, None, got, time.monotonic()
            if read_delay:
                await asyncio.sleep(read_delay)
        return status, hd, h.hexdigest(), got, time.monotonic()
    finally:
        w.close()


def storm(proxy_port, url, n, headers=None, extra=()):
    """n agents request url at once (plus any (read_delay, give_up_after) agents in extra).
    Returns the list of results, agents first."""
    async def run():
        tasks = [_fetch(proxy_port, url, headers or {}) for _ in range(n)]
        tasks += [_fetch(proxy_port, url, headers or {}, read_delay=d, give_up_after=g) for d, g in extra]
        return await asyncio.gather(*tasks, return_exceptions=True)
    return asyncio.run(run())
