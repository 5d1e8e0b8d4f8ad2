"""Behaviour under load that agents must never see: a whitelisted host denied because the
helpers are busy (docs/operations.md, "Under load")."""
import base64
import http.client
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import time

import pytest

from fpsharness import World, agent_credentials, free_port, wait_for

# More requests waiting at once than the helper could hold before: 4 children x 256 in
# flight plus a queue of 8192. Squid 5.7 answered the rest DUNNO ("queue full"), i.e. 403.
BURST = 10000


def helper_pids(world, name):
    """PIDs of this instance's helper processes called name (found by the state dir in
    their command line: other Squids run on this machine)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # Squid starts its helpers as "(name)".
        if argv and os.path.basename(argv[0].strip(b"()")).decode(errors="replace") == name and \
                str(world.state).encode() in b" ".join(argv):
            pids.append(int(d))
    return pids


def mgr(world, page):
    """A cache manager page, from the controller-only manager port (run/mgr.port)."""
    port = (world.state / "run" / "mgr.port").read_text().strip()
    out = subprocess.run(["curl", "-s", "-m", "5", "--noproxy", "*",
                          f"http://127.0.0.1:{port}/squid-internal-mgr/{page}"],
                         capture_output=True, text=True)
    return out.stdout


def fds_in_use(world):
    """Descriptors Squid has open (its `info` page)."""
    m = re.search(r"Number of file desc currently in use:\s*(\d+)", mgr(world, "info"))
    return int(m.group(1)) if m else 0


class Burst:
    """BURST connections, each sending one GET as soon as it is connected; collects the
    status of every response (Connection: close, so a response ends with EOF)."""

    def __init__(self, port, request):
        self.sel = selectors.DefaultSelector()
        self.request = request
        self.status = {}
        self.open = 0
        for _ in range(BURST):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.sel.register(s, selectors.EVENT_WRITE, [b"", False])
            self.open += 1

    def count(self, key):
        self.status[key] = self.status.get(key, 0) + 1

    def pump(self, timeout):
        for key, ev in self.sel.select(timeout):
            s, st = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE and not st[1]:
                    s.send(self.request)  # a few dozen bytes: one send
                    st[1] = True
                    self.sel.modify(s, selectors.EVENT_READ, st)
                    continue
                chunk = s.recv(65536)
            except OSError as e:
                chunk, err = b"", e.__class__.__name__
            else:
                err = None
            if chunk:
                st[0] += chunk[:64 - len(st[0])] if len(st[0]) < 64 else b""
                continue
            self.count(err or (st[0][9:12].decode() if st[0].startswith(b"HTTP/1.") else "garbage"))
            self.sel.unregister(s)
            s.close()
            self.open -= 1

    def close(self):
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


@pytest.fixture
def world():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < BURST + 2000:
        pytest.skip(f"needs {BURST + 2000} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    w = World("load-burst")
    w.set_hosts({"burst.allowed.test": "127.0.0.1"})
    w.http = w.origin(name="http")
    w.dead_port = free_port()  # nothing listens: Squid answers 503 once the request was allowed
    w.write_config(w.yaml(safe_ports=[80, w.http.port, w.dead_port]),
                   {"version": 1, "domains": ["burst.allowed.test"]})
    w.stopped = []
    try:
        w.start()
        yield w
    finally:
        for pid in w.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        w.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_burst_larger_than_the_helper_queue_gets_no_403(world):
    assert world.get("burst.allowed.test")[0] == 200
    # Every fps-acl child starts with Squid (none is forked during the burst): all four are
    # there once Squid has started them (on a busy machine the last may still be exec'ing) ...
    wait_for(lambda: len(helper_pids(world, "fps-acl")) >= 4, 30, what="Squid's 4 fps-acl helpers")
    acl = helper_pids(world, "fps-acl")
    assert len(acl) == 4, acl
    # ... and none answers while the burst arrives: every lookup has to wait in the queue.
    for pid in acl:
        os.kill(pid, signal.SIGSTOP)
        world.stopped.append(pid)
    req = (f"GET http://burst.allowed.test:{world.dead_port}/ HTTP/1.1\r\nHost: burst.allowed.test:"
           f"{world.dead_port}\r\nConnection: close\r\n\r\n").encode()
    base = fds_in_use(world)
    b = Burst(world.port, req)
    progress = {}
    try:
        # Squid reads a connection's request in the loop pass after accepting it (the request
        # is already there), and checks it as far as the helper at once: fps-acl's queue, or
        # an answer. So: wait until every connection is accepted (or answered), then two more
        # manager round trips, i.e. more loop passes, before looking at what was answered.
        def all_accepted():
            b.pump(0.05)
            n = fds_in_use(world) - base
            progress.update(accepted=n, answered=dict(b.status), open=b.open)
            return n + sum(b.status.values()) >= BURST
        try:
            wait_for(all_accepted, timeout=25, interval=0.2, what=f"{BURST} connections accepted by Squid")
        except AssertionError as e:
            raise AssertionError(f"{e}: {progress}") from None
        for _ in range(2):
            mgr(world, "info")
            b.pump(0.05)
        early = dict(b.status)
        for pid in world.stopped:
            os.kill(pid, signal.SIGCONT)
        world.stopped = []
        deadline = time.monotonic() + 120
        while b.open and time.monotonic() < deadline:
            b.pump(0.2)
    finally:
        b.close()
    assert early.get("403", 0) == 0, f"answered while the helpers were stopped: {early}"
    assert b.status == {"503": BURST}, b.status
    assert "queue full" not in (world.state / "run" / "cache.log").read_text(errors="replace")


@pytest.fixture
def smp_world():
    w = World("load-smp")
    try:
        w.set_hosts({"a.smp.test": "127.0.0.1", "b.smp.test": "127.0.0.1"})
        w.http = w.origin(name="http")
        w.write_keys()
        w.write_config(smp_yaml(w), {"version": 1, "domains": ["a.smp.test", "b.smp.test"]})
        w.start()
        yield w
    finally:
        w.close()


def smp_yaml(w):
    # auth on: fps-auth runs (and must answer) in every worker too, not only fps-acl
    return w.yaml(auth=True).replace("proxy:\n", "proxy:\n  workers: 2\n", 1)


def squid_kids(world):
    """The SMP worker processes ("(squid-1)", "(squid-2)") of this instance."""
    return sorted(helper_pids(world, "squid-1") + helper_pids(world, "squid-2"))


def conn_holders(port):
    """{client port: pid of the Squid process holding the accepted end} for port's connections."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    held = {}
    for line in out.splitlines():
        m = re.search(r":(\d+)\s+users:\(\(.*?pid=(\d+)", line)
        if m:
            held[int(m.group(1))] = int(m.group(2))
    return held


def test_live_edit_reaches_every_smp_worker(smp_world):
    """64 authenticated keep-alive connections spread over both workers (each worker listens on
    its own sockets, the kernel spreads connections over them) are allowed to b.smp.test; the
    edit removes it; every connection must then get 403 on the same TCP connection, i.e. from
    the worker that held it, so each worker is seen answering with the new verdict."""
    w = smp_world
    kids = wait_for(lambda: len(squid_kids(w)) == 2 and squid_kids(w), what="2 Squid workers")
    ppid = lambda pid: int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    user, pw = agent_credentials(w.API_KEY)
    auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    url = f"http://b.smp.test:{w.http.port}/"

    def ask(c):
        c.request("GET", url, headers={"Host": f"b.smp.test:{w.http.port}", "Proxy-Authorization": auth})
        r = c.getresponse()
        r.read()
        return r.status

    conns = [http.client.HTTPConnection("127.0.0.1", w.port, timeout=10) for _ in range(64)]
    try:
        assert [ask(c) for c in conns] == [200] * 64
        # every worker runs its own fps-auth and fps-acl children, and only the workers: the
        # coordinator, which never asks a helper, starts none (it started 4 of each before)
        coord = helper_pids(w, "squid-coord-3")
        assert len(coord) == 1, coord
        for helper in ("fps-auth", "fps-acl"):
            parents = [ppid(p) for p in helper_pids(w, helper)]
            assert set(kids) <= set(parents), f"{helper} not under each worker"
            assert coord[0] not in parents, f"{helper} started by the coordinator"
        held = conn_holders(w.port)
        kid_of = [held.get(c.sock.getsockname()[1]) for c in conns]
        assert set(kid_of) == set(kids), f"connections held by {set(kid_of)}, workers {kids}"
        socks = [c.sock for c in conns]
        t_edit = time.monotonic()
        w.write_config(smp_yaml(w), {"version": 2, "domains": ["a.smp.test"]})
        pending, last, denied_by = set(range(64)), None, set()
        deadline = t_edit + 15
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                st = ask(conns[i])
                assert st in (200, 403), st
                # http.client reconnects silently when the server closed the connection: an
                # answer on another connection could come from the other worker
                assert conns[i].sock is socks[i] or st == 403 and conns[i].sock is None, \
                    f"connection {i} was replaced before the new verdict"
                if st == 403:  # the new verdict (Squid closes after an error answer)
                    pending.discard(i)
                    denied_by.add(kid_of[i])
                    last = time.monotonic()
        assert not pending, f"{len(pending)} connections still allowed after 15 s"
        assert denied_by == set(kids), f"new verdict from {denied_by}, workers {kids}"
    finally:
        for c in conns:
            c.close()
    # Measured, not asserted (timing belongs to the bench): 202-205 ms on the 2-core CI kind,
    # inside live apply's 1 s promise (each fps-acl rechecks its snapshot every 100 ms at most).
    took = last - t_edit
    print(f"edit reached every SMP worker after {took * 1000:.0f} ms")
