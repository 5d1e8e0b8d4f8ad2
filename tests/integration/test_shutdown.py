"""A controller's SIGTERM (every appliance restart, every pod replacement): Squid 5.7 always
waits shutdown_lifetime + 1 s before it exits, clients or not, and agents cannot connect
meanwhile. The controller lets it finish as soon as no client is connected to the proxy port,
and keeps the full grace for a download still in flight (docs/operations.md, "Stopping")."""
import signal
import socket
import subprocess
import threading

from fpsharness import World, wait_for

HURRY = "no client connected to port"


class HeldOrigin:
    """An origin that sends half of a response and the rest only when released."""

    BODY = b"x" * 20000

    def __init__(self):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.release = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            c, _ = self.srv.accept()
        except OSError:
            return
        self.conns.append(c)
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(4096)
                if not chunk:
                    return
                buf += chunk
            half = len(self.BODY) // 2
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.BODY) + self.BODY[:half])
            self.release.wait(60)
            c.sendall(self.BODY[half:])
        except OSError:
            pass

    def close(self):
        self.release.set()
        self.srv.close()
        for c in self.conns:
            c.close()


def listening(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return "LISTEN" in out


def open_get(proxy_port, host, timeout):
    """A keep-alive connection to the proxy with one GET for http://host/ sent on it."""
    conn = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    conn.sendall(f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return conn


def make_world(name, origin_port):
    w = World(name)
    w.set_hosts({"held.test": "127.0.0.1", "a.allowed.test": "127.0.0.1"})
    w.origin()
    w.write_keys()
    w.write_config(w.yaml(safe_ports=[80, 443, w.origins[0].port, origin_port]), {"version": 1, "domains": ["held.test", "a.allowed.test"]})
    return w


def test_sigterm_with_only_idle_agents_lets_squid_finish_without_the_grace_period():
    w = make_world("stop-idle", 1)
    agent = None
    try:
        w.start()
        # An agent's idle keep-alive connection, as every agent holds between requests.
        agent = open_get(w.port, f"a.allowed.test:{w.origins[0].port}", 10)
        assert agent.recv(12).startswith(b"HTTP/1.1 200")
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=30) == 0
        log = w.log()
        assert "squid: stopping pid" in log, log
        assert HURRY in log.split("squid: stopping pid", 1)[1], log
    finally:
        if agent is not None:
            agent.close()
        w.close()


def test_sigterm_keeps_the_grace_period_for_a_download_in_flight():
    origin = HeldOrigin()
    w = make_world("stop-busy", origin.port)
    client = None
    try:
        w.start()
        client = open_get(w.port, f"held.test:{origin.port}", 30)
        got = b""
        while len(got) < 200:  # the headers and part of the body have arrived
            chunk = client.recv(65536)
            assert chunk, got
            got += chunk
        w.proc.send_signal(signal.SIGTERM)
        # Squid has begun its shutdown (its listening sockets are closed) while the client
        # is still downloading: the controller must not cut the grace short now.
        wait_for(lambda: not listening(w.port), 20, what="Squid closing its listening sockets")
        assert w.proc.poll() is None
        assert HURRY not in w.log()
        origin.release.set()
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == HeldOrigin.BODY, len(body)
        assert w.proc.wait(timeout=30) == 0
        assert HURRY in w.log(), w.log()
    finally:
        if client is not None:
            client.close()
        origin.close()
        w.close()
