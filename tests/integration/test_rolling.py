"""Two instances on one node, as a DaemonSet's rolling update runs them (deploy/README.md,
"Upgrade and roll back"; docs/operations.md, "Two instances on one node"): the second
instance's admin endpoints take the spare address while the first holds the primary one, and
`fps-controller get --state-dir D` (the pods' exec probes) reaches each instance's own
controller and no other; both instances' stunnel clients serve the tunnel's local port at once,
and the first drains with no failed request through the tunnel."""
import json
import os
import signal
import subprocess
from pathlib import Path

from fpsharness import BIN, ROOT, Prober, World, free_port, stop_group, wait_for

os.environ.setdefault("FPS_STUNNEL_TEMPLATES_DIR", str(ROOT / "stunnel-conf"))

HOST = "a.allowed.test"


def get(state_dir=None, path="/healthz", admin=None):
    """`fps-controller get`, as the pod's exec probes run it."""
    args = [str(BIN / "fps-controller"), "get"]
    args += ["--state-dir", str(state_dir)] if state_dir else []
    args += ["--admin", admin] if admin else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPS_")}
    return subprocess.run(args + [path], capture_output=True, text=True, timeout=30, env=env)


def world(name):
    w = World(name)
    w.set_hosts({HOST: "127.0.0.1"})
    w.origin()
    w.write_keys()
    w.write_config(w.yaml(), {"version": 1, "domains": [HOST]})
    return w


def beside(first, name):
    """Another instance on the same fps.yaml and Secret, with its own state directory."""
    w = World(name)
    w.config, w.secrets, w.port, w.proxy, w.origins = first.config, first.secrets, first.port, first.proxy, []
    return w


def test_second_instance_takes_the_spare_admin_address_and_probes_find_each_ones_own():
    """Both instances are given the same --admin and --admin-spare (one DaemonSet spec): the
    second one's admin endpoints go to the spare address, said in its log, and each state
    directory's admin.address names its own instance. `get --state-dir` answers from that
    instance only: once the first has stopped and a third instance holds its old address, the
    first one's file leads nowhere (exit 3), not to the third. A third instance while both
    addresses are taken exits 3 naming both; a second controller on a state directory in use
    still exits 3."""
    admin, spare = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    slots = ["--admin", admin, "--admin-spare", spare]
    a = world("roll-admin-a")
    b = beside(a, "roll-admin-b")
    c = beside(a, "roll-admin-c")
    d = beside(a, "roll-admin-d")
    try:
        a.start(extra_args=slots)
        assert (a.state / "admin.address").read_text().split()[0] == admin
        b.start(extra_args=slots, wait=False)
        wait_for(lambda: (b.state / "admin.address").exists(), 30, what="B's admin.address")
        assert (b.state / "admin.address").read_text().split()[0] == spare
        assert f"{admin}: address already in use" in b.log() and f"using the spare address {spare}" in b.log(), b.log()
        ids = {w.dir.name: (w.state / "admin.address").read_text().split()[1] for w in (a, b)}
        assert len(set(ids.values())) == 2, ids
        for w in (a, b):
            r = get(w.state, "/status")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["inputs"]["state_dir"] == str(w.state)
        wait_for(lambda: get(b.state, "/readyz").returncode == 0, 60, what="B ready through its own address")
        assert get(a.state, "/readyz").returncode == 0
        assert get(admin=admin, path="/nope").returncode == 1  # another status: 1 (a 404 here)

        # Both addresses taken: a third instance exits 3 before it starts anything.
        c.start(extra_args=slots, wait=False)
        assert c.proc.wait(timeout=60) == 3, c.log()
        assert "the spare address too" in c.log(), c.log()
        # One controller per state directory, with or without a spare.
        d.state = b.state
        d.start(extra_args=["--admin", f"127.0.0.1:{free_port()}"], wait=False)
        assert d.proc.wait(timeout=60) == 3, d.log()
        assert "state directory is in use by another fps-controller" in d.log()

        # A stops; a new instance takes A's old (primary) address. A's file is stale: it names
        # that address with A's id, and the answer there is not A's.
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=60) == 0, a.log()
        r = get(a.state)
        assert r.returncode == 3, (r.stdout, r.stderr)
        e = beside(a, "roll-admin-e")
        try:
            e.start(extra_args=slots, wait=False)
            wait_for(lambda: (e.state / "admin.address").exists(), 30, what="E's admin.address")
            assert (e.state / "admin.address").read_text().split()[0] == admin
            r = get(a.state)
            assert r.returncode == 3 and "another FPS instance" in r.stderr, (r.returncode, r.stderr)
            assert get(e.state).returncode == 0 and get(b.state).returncode == 0
        finally:
            e.close()
    finally:
        for w in (d, c, b, a):
            w.close()


# ---- the tunnel's local port, shared ---------------------------------------------------------

from test_routes import NAMES, T, Cloud, Customer, Setup  # noqa: E402


def test_second_instance_tunnel_is_ready_while_the_first_holds_the_port_and_the_first_drains_cleanly(tmp_path):
    """stunnel 5.68 has no SO_REUSEPORT socket option (`stunnel -sockets`), so the controller
    binds tunnel.local_port itself with SO_REUSEPORT and hands the socket to stunnel as a
    socket-activated listener (LISTEN_FDS). A second instance's stunnel client then joins the
    port while the first one's holds it: its /readyz (which needs the tunnel up) goes 200
    before the first stops. Under fresh connections through the tunnel route, the first
    instance's SIGTERM drains with no failed request: its stunnel takes no new connection
    before it stops (before that, about one run in six had a 502: a connection the second
    Squid had just opened to the first stunnel, reset by its exit)."""
    d = Path(f"/tmp/roll-tunnel-{os.getpid()}")
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o755)
    hosts = d / "hosts"
    hosts.write_text("".join(f"{ip} {n}\n" for n, ip in NAMES.items()))
    os.chmod(hosts, 0o644)
    cloud, customer = Cloud(d / "cloud", hosts), Customer(d / "customer", hosts)
    a = b = None
    fresh = None
    try:
        cloud.start()
        customer.start()
        a = Setup("live", cloud, customer).start()
        wait_for(lambda: a.readyz() == 200, 60, what="A ready (tunnel up)")
        b_admin = free_port()
        b = World("roll-tunnel-b")
        b.config, b.secrets, b.port, b.proxy = a.w.config, a.w.secrets, a.w.port, a.w.proxy
        fresh = Prober(a.w.port, T, a.http.port, interval=0.01)
        fresh.start()
        wait_for(lambda: sum(fresh.results.values()) > 20, 30, what="requests through the tunnel")
        b.start(extra_args=["--admin", f"127.0.0.1:{b_admin}"], wait=False)
        wait_for(lambda: get(admin=f"127.0.0.1:{b_admin}", path="/readyz").returncode == 0, 60,
                 what=f"B ready with its tunnel up\n{b.log()[-3000:]}")
        blog = b.log()
        assert f"tunnel client port 127.0.0.1:{a.local_port} is held by" in blog, blog[-3000:]
        assert "joining it (SO_REUSEPORT)" in blog
        assert a.w.proc.poll() is None  # A still holds the port: both serve it
        listeners = subprocess.run(["ss", "-Htlnp", f"sport = :{a.local_port}"], capture_output=True,
                                   text=True).stdout
        assert listeners.count("stunnel") >= 2, listeners
        a.w.proc.send_signal(signal.SIGTERM)
        assert a.w.proc.wait(timeout=60) == 0, a.w.log()
        # Its stunnel took no new connection before it stopped: none of B's was reset.
        assert f"takes no new connection on 127.0.0.1:{a.local_port}" in a.w.log(), a.w.log()[-3000:]
        n = sum(fresh.results.values())
        wait_for(lambda: sum(fresh.results.values()) > n + 20, 30, what="requests through B alone")
        results = fresh.finish()
        fresh = None
        print(f"TUNNEL HANDOVER: {results}")
        bad = [ln for w in (a.w, b) for f in ("access.log", "cache.log")
               for ln in ((w.state / "run" / f).read_text(errors="replace").splitlines()
                          if (w.state / "run" / f).exists() else [])
               if " 502 " in ln or "/502 " in ln or "ERROR" in ln or "WARNING" in ln]
        if set(results) != {"200"}:
            print("\n".join(bad[-30:]) + "\n--- A\n" + a.w.log()[-3000:] + "\n--- B\n" + b.log()[-3000:])
        assert set(results) == {"200"}, results
        status, body = b.get(T, port=a.http.port)
        assert status == 200, body
    finally:
        if fresh is not None:
            fresh.finish()
        for w in (b, a):
            if w is not None:
                w.close()
        for p in (cloud, customer):
            if p.proc is not None:
                stop_group(p.proc)
        subprocess.run(["rm", "-rf", str(d)])
