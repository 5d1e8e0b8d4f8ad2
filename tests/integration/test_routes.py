"""Routes (docs/configuration.md: routes, tunnel, secrets; docs/agents.md): direct, the customer's proxy (`upstream`) and the
TLS tunnel, with real Squid, stunnel, curl and origins on loopback.

  agent curl -> FPS Squid -> stunnel client -> stunnel server -> cloud Squid -> origin   (tunnel)
                          -> customer Squid (basic_ncsa_auth) ------------------> origin   (upstream)
                          -------------------------------------------------------> origin   (direct)

Each hop's own record proves the path: FPS's access log (route and peer), the cloud Squid's
and the customer Squid's access logs, the origins' hit lists. The cloud side is
examples/cloud/run-cloud.sh, the same script `make run` uses.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from fpsharness import ROOT, World, curl, free_port, make_ca_and_cert, register_dir, spawn, stop_group, wait_for

RUN_CLOUD = ROOT / "examples" / "cloud" / "run-cloud.sh"
os.environ.setdefault("FPS_STUNNEL_TEMPLATES_DIR", str(ROOT / "stunnel-conf"))

SERVER = "tunnel.fps.test"
T, D, U, NW = "t.routes.test", "d.routes.test", "u.routes.test", "nw.routes.test"
NAMES = {n: "127.0.0.1" for n in (T, D, U, NW, SERVER, "other.fps.test")}
UP_USER, UP_PASS = "fps", "corp-s3cret"
BAD = (502, 503)  # Squid's answers for a peer that cannot carry the request (docs/agents.md)


def openssl(*args, cwd=None):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Cloud:
    """The cloud side: stunnel server + cloud Squid, via examples/cloud/run-cloud.sh."""

    def __init__(self, d, hosts, name=SERVER, env=None):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        register_dir(self.dir)
        os.chmod(self.dir, 0o755)
        self.name, self.hosts, self.env = name, hosts, env or {}
        self.tls_port, self.squid_port = free_port(), free_port()
        self.proc = None

    def start(self):
        env = dict(os.environ, FPS_CLOUD_HOSTS_FILE=str(self.hosts), **self.env)
        self.log = open(self.dir / "run-cloud.out", "ab")
        self.proc = spawn([str(RUN_CLOUD), str(self.dir), str(self.tls_port), str(self.squid_port), self.name],
                          stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"run-cloud.sh exited {self.proc.returncode}: {self.output()}")
            return listening(self.squid_port) and listening(self.tls_port)
        try:
            wait_for(up, 30, what="cloud side listening")
        except BaseException:
            stop_group(self.proc)
            raise
        return self

    def stop(self):
        stop_group(self.proc)
        wait_for(lambda: not listening(self.tls_port), 10, what="cloud stunnel closed")

    @property
    def ca(self):
        return self.dir / "ca.pem"

    def access(self):
        p = self.dir / "cloud-access.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def output(self):
        p = self.dir / "run-cloud.out"
        return p.read_text(errors="replace") if p.exists() else ""


class Customer:
    """The customer's proxy: a Squid that requires Basic credentials (basic_ncsa_auth)."""

    def __init__(self, d, hosts):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        register_dir(self.dir)
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        hashed = subprocess.run(["openssl", "passwd", "-apr1", UP_PASS], check=True, capture_output=True,
                                text=True).stdout.strip()
        (self.dir / "htpasswd").write_text(f"{UP_USER}:{hashed}\n")
        os.chmod(self.dir / "htpasswd", 0o644)
        (self.dir / "squid.conf").write_text(f"""
http_port 127.0.0.1:{self.port}
pid_filename {self.dir}/squid.pid
cache_log {self.dir}/cache.log
coredump_dir {self.dir}
logformat cust %ts.%03tu %>a %Ss/%03>Hs %rm %ru user=%un %Sh/%<a:%<p
access_log stdio:{self.dir}/access.log logformat=cust
cache deny all
pinger_enable off
max_filedescriptors 4096
visible_hostname customer-proxy
hosts_file {hosts}
dns_nameservers 127.0.0.1
shutdown_lifetime 1 seconds
auth_param basic program /usr/lib/squid/basic_ncsa_auth {self.dir}/htpasswd
auth_param basic children 2
auth_param basic realm corp
acl users proxy_auth REQUIRED
http_access deny !users
http_access allow localhost
http_access deny all
""")
        self.proc = None

    def start(self):
        self.log = open(self.dir / "squid.out", "ab")
        self.proc = spawn(["squid", "-N", "-f", str(self.dir / "squid.conf")], stdout=self.log,
                          stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: listening(self.port), 30, what="customer squid listening")
        except BaseException:
            stop_group(self.proc)
            raise
        return self

    def stop(self):
        stop_group(self.proc)
        wait_for(lambda: not listening(self.port), 10, what="customer squid closed")

    def access(self):
        p = self.dir / "access.log"
        return p.read_text(errors="replace") if p.exists() else ""


class Setup:
    """One FPS (World) with a TLS origin and its routes to a cloud and a customer proxy."""

    def __init__(self, mode, cloud, customer, tunnel_port=None, tunnel_ca=None, password=UP_PASS, client=None):
        self.w = World(f"routes-{mode}")
        w = self.w
        w.set_hosts(NAMES)
        self.http = w.origin(name="http")
        self.pki = make_ca_and_cert(w.dir / "origin-pki", [T, D, U, NW], ca_name="Origin CA")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki[1], self.pki[2])
        self.tls = w.origin(name="tls", ssl_ctx=ctx)
        self.cloud, self.customer = cloud, customer
        self.local_port = free_port()
        self.admin_port = free_port()
        extra = (f"upstream:\n  host: 127.0.0.1\n  port: {customer.port}\n  username: {UP_USER}\n"
                 f"tunnel:\n  server: {SERVER}\n  address: 127.0.0.1\n"
                 f"  port: {tunnel_port or cloud.tls_port}\n  local_port: {self.local_port}\n"
                 f"routes:\n  - {{ via: tunnel, domains: [\"{T}\", \"{NW}\"] }}\n"
                 f"  - {{ via: upstream, domains: [\"{U}\"] }}\n"
                 f"default_route: direct\n"
                 f"admin:\n  bind: 127.0.0.1\n  port: {self.admin_port}\n")
        self.secret_files = {"upstream-password": password + "\n",
                             "tunnel-ca.pem": Path(tunnel_ca or cloud.ca).read_text()}
        if client is None and (cloud.dir / "appliance.pem").exists():
            # The cloud side requires a client certificate from its appliance CA (mTLS, the
            # shipped default): run-cloud.sh issued one.
            client = (cloud.dir / "appliance.pem", cloud.dir / "appliance.key")
        if client:
            self.secret_files["tunnel-client.pem"] = Path(client[0]).read_text()
            self.secret_files["tunnel-client.key"] = Path(client[1]).read_text()
        w.kubelet_update(w.secrets, self.secret_files)
        w.write_config(w.yaml(apply=mode, whitelist_preset=[T, D, U], extra=extra))

    def start(self):
        try:
            self.w.start()
        except BaseException:
            self.w.close()
            raise
        return self

    def close(self):
        self.w.close()

    def readyz(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    # ---- agents ---------------------------------------------------------------------------
    def get(self, host, path):
        return curl(f"http://{host}:{self.http.port}{path}", self.w.proxy, timeout=15)

    def https(self, host, path):
        return curl(f"https://{host}:{self.tls.port}{path}", self.w.proxy, cacert=self.pki[0], timeout=15)

    def fps_access(self):
        p = self.w.state / "run" / "access.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=5) as r:
            return json.loads(r.read())

    def tunnel_status(self):
        try:
            return self.status().get("tunnel") or {}
        except OSError:
            return {}


def hits_for(s, host, path):
    """Requests the origins saw for host and path (the Host header carries host:port)."""
    return [h for h in s.http.hits + s.tls.hits if h[1] == path and (h[0] or "").split(":")[0] == host]


def lines_with(text, *needles):
    return [ln for ln in text.splitlines() if all(n in ln for n in needles)]


def logged(read, *needles, what="a log line"):
    """Squid writes a transaction's access log line when the transaction ends (for CONNECT,
    when the tunnel closes), which can be just after the agent has its answer: poll."""
    return wait_for(lambda: lines_with(read(), *needles), 10, what=what)


def uniq(tag):
    return f"/{tag}-{uuid.uuid4().hex[:12]}"


# ---- shared surroundings -------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = Path(f"/tmp/routes-base-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    os.chmod(d, 0o755)
    hosts = d / "hosts"
    hosts.write_text("".join(f"{ip} {n}\n" for n, ip in NAMES.items()))
    os.chmod(hosts, 0o644)
    register_dir(d)
    cloud, customer = Cloud(d / "cloud", hosts), Customer(d / "customer", hosts)
    try:
        cloud.start()
        customer.start()
        yield d, hosts, cloud, customer
    finally:
        stop_group(cloud.proc)
        stop_group(customer.proc)
        subprocess.run(["rm", "-rf", str(d)])


@pytest.fixture(scope="module", params=["live", "reconfigure"])
def fps(request, base):
    _, _, cloud, customer = base
    s = Setup(request.param, cloud, customer).start()
    s.mode = request.param
    # Squid answering is not enough for the tunnel route: the stunnel client must be up
    # and its server verified, which is what /readyz says when a route uses the tunnel.
    wait_for(lambda: s.readyz() == 200, 60, what="/readyz 200 (tunnel up)")
    yield s
    s.close()


# ---- routing, both apply modes ---------------------------------------------------------------

def test_tunnel_route_carries_get_through_every_hop(fps):
    path = uniq("tget")
    status, body = fps.get(T, path)
    assert status == 200, body
    assert f"origin http {T}:{fps.http.port} {path}" in body
    fps_line = logged(fps.fps_access, f"GET http://{T}:{fps.http.port}{path}", what="FPS logging the GET")
    assert "FIRSTUP_PARENT/127.0.0.1" in fps_line[0], fps_line
    wait_for(lambda: lines_with(fps.cloud.access(), f"GET http://{T}:{fps.http.port}{path}"), 10,
             what="the cloud Squid logging the request")
    assert (T + ":" + str(fps.http.port), path) in fps.http.hits


def peer_connections(port):
    """Squid's established connections to the stunnel client's accept port (its `tunnel` peer),
    by local address; the controller's own checks through the tunnel are not Squid's."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"dport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return {ln.split()[2] for ln in out.splitlines() if '"squid"' in ln}


def test_tunnel_peer_connection_is_reused_across_requests(fps):
    """Squid keeps its connection to the stunnel client and reuses it: sequential GETs from
    separate agent connections ride one peer connection (one stunnel thread, one TLS session),
    not a new connection and handshake per request (the tunnel's per-request cost, bench
    "tunnel appliance-side CPU")."""
    first = None
    for i in range(5):
        status, body = fps.get(T, uniq(f"reuse{i}"))
        assert status == 200, body
        conns = wait_for(lambda: peer_connections(fps.local_port) or None, 10, what="a peer connection")
        if first is None:
            first = conns
        assert conns == first, f"request {i}: peer connections {sorted(conns)}, first {sorted(first)}"
    assert len(first) == 1, first


def test_tunnel_route_carries_connect_through_every_hop(fps):
    path = uniq("tconnect")
    status, body = fps.https(T, path)
    assert status == 200, body
    assert f"origin tls {T}:{fps.tls.port} {path}" in body
    fps_line = logged(fps.fps_access, f"CONNECT {T}:{fps.tls.port}", "FIRSTUP_PARENT/127.0.0.1",
                      what="FPS logging the CONNECT via a parent (the cloud log below proves which)")
    assert fps_line
    wait_for(lambda: lines_with(fps.cloud.access(), f"CONNECT {T}:{fps.tls.port}"), 10,
             what="the cloud Squid logging the CONNECT")


def test_direct_route_never_reaches_the_cloud(fps):
    path = uniq("direct")
    assert fps.get(D, path)[0] == 200
    assert fps.https(D, path + "s")[0] == 200
    assert (f"{D}:{fps.http.port}", path) in fps.http.hits
    line = logged(fps.fps_access, f"GET http://{D}:{fps.http.port}{path}", what="FPS logging the GET")
    assert "HIER_DIRECT" in line[0]
    # The cloud and the customer proxy saw neither request (they log synchronously; the
    # tunnel tests above show the same logs do record what passes through them).
    assert path not in fps.cloud.access()
    assert f"CONNECT {D}:" not in fps.cloud.access()
    assert path not in fps.customer.access()


def test_upstream_route_sends_credentials_for_get_and_connect(fps):
    path = uniq("up")
    status, body = fps.get(U, path)
    assert status == 200, body
    assert fps.https(U, path + "s")[0] == 200
    get = logged(fps.customer.access, f"GET http://{U}:{fps.http.port}{path}", what="the customer proxy's GET")
    assert f"user={UP_USER}" in get[0], get
    con = logged(fps.customer.access, f"CONNECT {U}:{fps.tls.port}", what="the customer proxy's CONNECT")
    assert all(f"user={UP_USER}" in ln for ln in con), con
    assert path not in fps.cloud.access()


def test_routed_name_not_whitelisted_is_still_denied(fps):
    path = uniq("nw")
    status, body = fps.get(NW, path)
    assert status == 403
    assert NW in body
    assert fps.https(NW, path)[0] == 403
    assert path not in fps.cloud.access()
    assert f"CONNECT {NW}" not in fps.cloud.access()
    assert not hits_for(fps, NW, path)


# ---- failures: every one is an error for the agent, never a direct path --------------------

def test_wrong_upstream_password_is_an_error_not_a_direct_path(base):
    _, _, cloud, customer = base
    s = None
    try:
        s = Setup("live", cloud, customer, password="not-the-password").start()
        path = uniq("badpw")
        status, _ = s.get(U, path)
        assert status != 200
        assert s.https(U, path)[0] != 200
        assert not hits_for(s, U, path)
        logged(customer.access, f"GET http://{U}:{s.http.port}{path}", what="the request reaching the customer")
        assert s.get(D, path)[0] == 200  # the direct route is unaffected
    finally:
        if s:
            s.close()


def rogue_cloud(base, tag, name=SERVER, ca_from=None, ca_name="Corp Firewall CA"):
    d, hosts, _, _ = base
    rd = d / f"rogue-{tag}"
    rd.mkdir()
    if ca_from is None:
        make_ca_and_cert(rd, [name], ca_name=ca_name)  # its own CA, the name we expect
    else:
        for f in ("ca.pem", "ca.key"):
            (rd / f).write_bytes((ca_from / f).read_bytes())  # our CA; run-cloud.sh issues `name`
    # An interceptor asks for no client certificate: the appliance's own check must refuse it.
    return Cloud(rd, hosts, name=name, env={"FPS_CLOUD_CLIENT_CA": "none"}).start()


def assert_tunnel_refused(s, rogue):
    # What matters is an error and no other path; under load Squid has once answered 500
    # instead of 502/503 for the refused peer connection, so any 5xx counts here.
    path = uniq("rogue")
    assert wait_for(lambda: 500 <= s.get(T, path)[0] <= 599, 20, what="the agent getting a 5xx")
    assert 500 <= s.https(T, path)[0] <= 599
    assert not hits_for(s, T, path)  # no direct path
    # stunnel refused the server before any request left (its Squid may log bare
    # connections from its own stunnel, "transaction-end-before-headers", never a request).
    assert path not in rogue.access()
    assert not [ln for ln in rogue.access().splitlines() if " GET " in ln or " CONNECT " in ln], rogue.access()
    assert s.get(D, path)[0] == 200


def test_tunnel_server_from_another_ca_is_reported_as_interception(base):
    _, _, cloud, customer = base
    rogue = rogue_cloud(base, "ca")
    s = None
    try:
        s = Setup("live", cloud, customer, tunnel_port=rogue.tls_port, tunnel_ca=cloud.ca).start()
        assert_tunnel_refused(s, rogue)
        st = wait_for(lambda: (t := s.tunnel_status()).get("interception") and t, 30,
                      what="/status reporting interception")
        assert st["up"] is False
        assert "Corp Firewall CA" in st["issuer"]
        assert "likely TLS interception" in st["error"]
        assert "Corp Firewall CA" in s.w.log() and "likely TLS interception" in s.w.log()
    finally:
        if s:
            s.close()
        rogue.stop()


def test_tunnel_server_with_our_ca_but_wrong_name_is_refused(base):
    _, _, cloud, customer = base
    rogue = rogue_cloud(base, "name", name="other.fps.test", ca_from=cloud.dir)
    s = None
    try:
        s = Setup("live", cloud, customer, tunnel_port=rogue.tls_port, tunnel_ca=cloud.ca).start()
        assert_tunnel_refused(s, rogue)
        st = wait_for(lambda: (t := s.tunnel_status()).get("error") and t, 30, what="/status tunnel error")
        assert st["up"] is False
        assert st["interception"] is False
        assert "other.fps.test" in st["error"] and SERVER in st["error"]
    finally:
        if s:
            s.close()
        rogue.stop()


def test_tunnel_down_gives_502_direct_works_and_recovery_is_automatic(base):
    d, hosts, _, customer = base
    cloud = Cloud(d / "cloud-down", hosts).start()
    s = None
    try:
        s = Setup("live", cloud, customer).start()
        assert s.get(T, uniq("before"))[0] == 200
        wait_for(lambda: s.tunnel_status().get("up") is True, 30, what="/status tunnel up")
        cloud.stop()
        path = uniq("down")
        assert wait_for(lambda: s.get(T, path)[0] in BAD, 20, what="502/503 while the tunnel is down")
        assert s.https(T, path)[0] in BAD
        assert s.get(D, path)[0] == 200
        assert not hits_for(s, T, path)
        wait_for(lambda: s.tunnel_status().get("up") is False, 30, what="/status tunnel down")
        cloud.start()  # same ports, same PKI
        wait_for(lambda: s.get(T, uniq("back"))[0] == 200, 30, what="the tunnel route recovering")
        assert s.https(T, uniq("backs"))[0] == 200
        wait_for(lambda: s.tunnel_status().get("up") is True, 30, what="/status tunnel up again")
    finally:
        if s:
            s.close()
        cloud.stop()


def test_upstream_down_gives_502_direct_works_and_recovery_is_automatic(base):
    d, hosts, cloud, _ = base
    customer = Customer(d / "customer-down", hosts).start()
    s = None
    try:
        s = Setup("live", cloud, customer).start()
        assert s.get(U, uniq("before"))[0] == 200
        customer.stop()
        path = uniq("down")
        assert wait_for(lambda: s.get(U, path)[0] in BAD, 20, what="502/503 while the upstream is down")
        assert s.https(U, path)[0] in BAD
        assert s.get(D, path)[0] == 200
        assert not hits_for(s, U, path)
        customer.start()
        wait_for(lambda: s.get(U, uniq("back"))[0] == 200, 60, what="the upstream route recovering")
    finally:
        if s:
            s.close()
        customer.stop()


# ---- certificate rotation --------------------------------------------------------------------

def client_pki(d):
    """A CA the cloud trusts for appliance certificates, and two appliance certificates."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=Appliance CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for n in ("appliance-1", "appliance-2"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={n}",
                "-keyout", f"{n}.key", "-out", f"{n}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{n}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days",
                "2", "-out", f"{n}.pem", cwd=d)
    return d


class RawTunnel:
    """An agent's CONNECT kept open: TLS to the origin inside, requests sent on demand."""

    def __init__(self, s, host, port):
        raw = socket.create_connection(("127.0.0.1", s.w.port), timeout=15)
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            assert chunk, f"proxy closed the CONNECT: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        ctx = ssl.create_default_context(cafile=str(s.pki[0]))
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.host = host

    def get(self, path):
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "tunnel closed"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
        while len(body) < length:
            chunk = self.sock.recv(4096)
            assert chunk, "tunnel closed mid-body"
            body += chunk
        return head.split(b" ")[1].decode(), body.decode()

    def close(self):
        self.sock.close()


def test_client_certificate_rotation_reloads_stunnel_and_keeps_open_tunnels(base):
    d, hosts, _, customer = base
    pki = client_pki(d / "client-pki")
    # The cloud requires appliance certificates and logs each one it accepts (debug 5).
    cloud = Cloud(d / "cloud-mtls", hosts, env={"FPS_CLOUD_CLIENT_CA": str(pki / "ca.pem"),
                                                "FPS_CLOUD_DEBUG": "5"}).start()
    s = Setup("live", cloud, customer, client=(pki / "appliance-1.pem", pki / "appliance-1.key")).start()
    tunnel = None
    try:
        tunnel = RawTunnel(s, T, s.tls.port)
        assert tunnel.get("/before-rotation") == ("200", f"origin tls {T} /before-rotation\n")
        assert "CN=appliance-1" in cloud.output()
        assert "CN=appliance-2" not in cloud.output()
        stunnel_pid = s.status()["children"]["stunnel"]["pid"]

        files = dict(s.secret_files)
        files["tunnel-client.pem"] = (pki / "appliance-2.pem").read_text()
        files["tunnel-client.key"] = (pki / "appliance-2.key").read_text()
        s.w.kubelet_update(s.w.secrets, files)
        wait_for(lambda: "reloading stunnel" in s.w.log(), 30, what="the controller reloading stunnel")

        # New tunnel connections present the new certificate (each CONNECT takes a fresh
        # peer connection once the idle ones are used up).
        def new_cert_used():
            assert s.https(T, uniq("after"))[0] == 200
            return "CN=appliance-2" in cloud.output()
        wait_for(new_cert_used, 30, interval=0.2, what="the cloud seeing appliance-2's certificate")
        # stunnel was reloaded, not restarted, and the open tunnel still passes bytes.
        assert s.status()["children"]["stunnel"]["pid"] == stunnel_pid
        assert tunnel.get("/after-rotation") == ("200", f"origin tls {T} /after-rotation\n")
    finally:
        if tunnel:
            tunnel.close()
        if s:
            s.close()
        cloud.stop()
