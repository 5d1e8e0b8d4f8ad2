#!/usr/bin/python3
"""The update storm's origin (bench/README.md, "update storm"): serves one package under any number
of URLs, counts every body byte it hands to the kernel, and can be paced, in this server itself, to
a rate shared by all its connections (the customer's link: 125 MB/s is 1 Gbps).

  GET /pkg/<id>/<name>   the package, its first 64 bytes replaced by a line naming <id>: every URL is
                         its own object with its own sha256 (body_for()), so a proxy that hands one
                         URL's object to another is caught. Cacheable: Cache-Control public, max-age,
                         Last-Modified, ETag; a single `Range: bytes=...` gets a 206.
  GET /__stats           {"requests", "body_bytes", "paths": {path: {"requests", "body_bytes"}}, "rate"}
                         since the start (callers take differences: a run's own figures).
  GET /__rate/<B>        pace to B bytes/s from now on (0: unpaced).

  bench/storm_origin.py --port P --file PACKAGE [--rate B] [--bind 127.0.0.1]

asyncio, sendfile(2) in chunks (so the counts stay exact when a client goes away mid-body).
"""
import argparse
import asyncio
import collections
import email.utils
import json
import os
import re
import socket
import sys
import time

TAG = 64  # bytes of the package replaced by the URL's id line
CHUNK = 1 << 20  # unpaced: sendfile per call
PACED_CHUNK = 64 << 10  # paced: the granularity of the shared rate
BURST = 4 * PACED_CHUNK  # paced: what the link may send at once after an idle moment
LAST_MODIFIED = "Mon, 30 Nov 2026 00:00:00 GMT"


def tag_for(pkg_id):
    """The first TAG bytes of /pkg/<pkg_id>/...: printable, so a hexdump of a wrong body says whose it is."""
    line = f"fps-storm-package id={pkg_id}\n".encode()[:TAG]
    return line + b"#" * (TAG - len(line))


def body_for(base, pkg_id):
    """The whole body of /pkg/<pkg_id>/... given the package's bytes (for the tests and the bench's sha256)."""
    return tag_for(pkg_id) + base[TAG:] if len(base) >= TAG else tag_for(pkg_id)[:len(base)]


def parse_range(value, size):
    """(start, end inclusive) of a single `bytes=` range, None for none/unsupported, "bad" when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value or "")
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        if start >= size or end < start:
            return "bad"
        return start, min(end, size - 1)
    n = int(m.group(2))
    if n == 0:
        return "bad"
    return max(0, size - n), size - 1


class Origin:
    def __init__(self, path, rate):
        self.path = path
        self.size = os.path.getsize(path)
        self.rate = float(rate)
        self.tokens, self.last = 0.0, 0.0  # the shared link (paced mode): a token bucket
        self.waiting = collections.deque()  # (bytes, future) of the senders waiting for the link
        self.wake = asyncio.Event()
        self.link = None
        self.requests = 0
        self.body_bytes = 0
        self.paths = {}

    def count(self, path, n, request=False):
        p = self.paths.setdefault(path, {"requests": 0, "body_bytes": 0})
        if request:
            self.requests += 1
            p["requests"] += 1
        self.body_bytes += n
        p["body_bytes"] += n

    async def pace(self, n):
        """Waits until the link has room for n bytes. The link is one task granting a FIFO of senders
        from a token bucket (a burst of BURST bytes after an idle moment): it never idles while a
        sender waits, and one sleeper instead of a herd keeps the pace exact with 1000 connections."""
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting.append((n, fut))
        if self.link is None or self.link.done():
            self.link = asyncio.ensure_future(self.run_link())
        self.wake.set()
        await fut

    async def run_link(self):
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self.wake.clear()
                await self.wake.wait()
                continue
            n, fut = self.waiting[0]
            if fut.done():  # its sender went away
                self.waiting.popleft()
                continue
            now = loop.time()
            self.tokens = min(BURST, self.tokens + (now - self.last) * self.rate) if self.rate > 0 else n
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                self.waiting.popleft()
                fut.set_result(None)
                continue
            await asyncio.sleep((n - self.tokens) / self.rate)

    async def send_body(self, sock, f, path, tag, start, end):
        loop = asyncio.get_running_loop()
        off = start
        while off <= end:
            n = min(end + 1 - off, PACED_CHUNK if self.rate > 0 else CHUNK)
            if off < TAG:
                n = min(n, TAG - off)
                await self.pace(n)
                await loop.sock_sendall(sock, tag[off:off + n])
                sent = n
            else:
                await self.pace(n)
                sent = await loop.sock_sendfile(sock, f, off, n, fallback=True)
            self.count(path, sent)
            if sent <= 0:
                raise ConnectionError("short sendfile")
            off += sent

    async def handle(self, sock):
        loop = asyncio.get_running_loop()
        buf = b""
        f = open(self.path, "rb")
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await loop.sock_recv(sock, 65536)
                    if not data:
                        return
                    buf += data
                    if len(buf) > 65536:
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    return
                method, target, version = parts
                hdrs = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                path = re.sub(r"^https?://[^/]*", "", target) or "/"
                close = hdrs.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                if not await self.answer(sock, f, method, path, hdrs, close):
                    return
                if close:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            f.close()
            sock.close()

    async def answer(self, sock, f, method, path, hdrs, close):
        loop = asyncio.get_running_loop()
        common = (f"Date: {email.utils.formatdate(usegmt=True)}\r\nServer: fps-storm-origin\r\n"
                  f"{'Connection: close' + chr(13) + chr(10) if close else ''}")
        if path == "/__stats":
            body = json.dumps({"requests": self.requests, "body_bytes": self.body_bytes, "paths": self.paths,
                               "rate": self.rate, "size": self.size}).encode()
            await loop.sock_sendall(sock, (f"HTTP/1.1 200 OK\r\n{common}Content-Type: application/json\r\n"
                                           f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                                    + body)
            return True
        m = re.fullmatch(r"/__rate/(\d+)", path)
        if m:
            self.rate = float(m.group(1))
            self.tokens, self.last = 0.0, loop.time()
            await loop.sock_sendall(sock, f"HTTP/1.1 204 No Content\r\n{common}Cache-Control: no-store\r\n\r\n".encode())
            return True
        m = re.fullmatch(r"/pkg/([A-Za-z0-9._-]{1,40})/[A-Za-z0-9._-]{1,100}", path.split("?")[0])
        if not m or method not in ("GET", "HEAD"):
            await loop.sock_sendall(sock, f"HTTP/1.1 404 Not Found\r\n{common}Content-Length: 0\r\n\r\n".encode())
            return True
        pkg_id = m.group(1)
        tag = tag_for(pkg_id)
        meta = (f"Content-Type: application/octet-stream\r\nCache-Control: public, max-age=86400\r\n"
                f"Last-Modified: {LAST_MODIFIED}\r\nETag: \"{pkg_id}-{self.size}\"\r\nAccept-Ranges: bytes\r\n")
        rng = parse_range(hdrs.get("range"), self.size) if "range" in hdrs else None
        if rng == "bad":
            await loop.sock_sendall(sock, (f"HTTP/1.1 416 Range Not Satisfiable\r\n{common}{meta}"
                                           f"Content-Range: bytes */{self.size}\r\nContent-Length: 0\r\n\r\n").encode())
            self.count(path, 0, request=True)
            return True
        start, end = rng if rng else (0, self.size - 1)
        status = "206 Partial Content" if rng else "200 OK"
        cr = f"Content-Range: bytes {start}-{end}/{self.size}\r\n" if rng else ""
        await loop.sock_sendall(sock, (f"HTTP/1.1 {status}\r\n{common}{meta}{cr}"
                                       f"Content-Length: {end + 1 - start}\r\n\r\n").encode())
        self.count(path, 0, request=True)
        if method == "GET" and self.size:
            await self.send_body(sock, f, path, tag, start, end)
        return True


async def serve(a):
    origin = Origin(a.file, a.rate)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((a.bind, a.port))
    lsock.listen(4096)
    lsock.setblocking(False)
    loop = asyncio.get_running_loop()
    tasks = set()
    print(f"storm origin on {a.bind}:{a.port}, {origin.size} bytes, rate {a.rate:g} B/s", flush=True)
    while True:
        sock, _ = await loop.sock_accept(lsock)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = asyncio.ensure_future(origin.handle(sock))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--file", required=True)
    ap.add_argument("--rate", type=float, default=0, help="bytes per second shared by all connections [0: unpaced]")
    a = ap.parse_args()
    try:
        asyncio.run(serve(a))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
