"""Restarts and upgrades no agent notices (docs/operations.md, "Stopping", "Handing over to a
second instance", "The controller was killed"): a planned Squid restart is not a death, a
second instance joins the proxy port and the first drains, SIGTERM alone answers what is on
the wire, a killed controller's Squid is adopted, an edit during a handover reaches the
instance that serves after it."""
import json
import signal

import pytest

from fpsharness import World, wait_for
from fpsharness import admin_get as admin, admin_metric as metric, admin_status as status


def with_workers(w, n, extra=""):
    return w.yaml(extra=extra).replace("proxy:\n", f"proxy:\n  workers: {n}\n", 1)


def test_workers_change_is_a_planned_restart_not_a_death():
    """proxy.workers 1 -> 2 needs a new Squid process: the controller restarts it as planned,
    so /status and fps_squid_restarts_total count no death and the new Squid starts at once
    (no backoff), and the log never says "died"."""
    w = World("workers-planned")
    try:
        w.set_hosts({"a.allowed.test": "127.0.0.1"})
        w.origin()
        w.write_keys()
        w.write_config(with_workers(w, 1), {"version": 1, "domains": ["a.allowed.test"]})
        w.start()
        first = wait_for(w.squid_pid, what="squid pid file")
        w.write_config(with_workers(w, 2), {"version": 1, "domains": ["a.allowed.test"]})
        wait_for(lambda: w.squid_pid() not in (None, first) and "squid: started pid" in
                 w.log().split("restarting squid", 1)[-1], 30, what="the new Squid")
        w.wait_serving()
        w.wait_status("a.allowed.test", 200, timeout=30)
        st = wait_for(lambda: (s := status(w)) and s.get("children", {}).get("squid", {}).get("up") and s,
                      what="status with squid up")
        assert st["children"]["squid"]["restarts"] == 0, st["children"]["squid"]
        assert metric(w, "fps_squid_restarts_total") == 0
        log = w.log()
        assert "restarting pid" in log and "as planned" in log, log
        assert " died " not in log, log
    finally:
        w.close()


# ---- a second instance, a drain, SIGTERM alone ------------------------------------------------

import os
import subprocess
import threading
from pathlib import Path

from fpsharness import Origin, Prober, ROOT, spawn, stop_group

LOADGEN = Path(os.environ.get("LOADGEN", ROOT / "build" / "bench" / "asan" / "loadgen"))
AGENTS = 150  # keep-alive agents, closed loop: enough to keep requests on the wire at any instant
HOST = "a.allowed.test"


class BacklogOrigin(Origin):
    """The harness's origin with a real server's listen backlog (socketserver's default is 5):
    when a drain resumes its paused agents at once, Squid opens many origin connections in
    the same instant, and a SYN dropped by a full backlog costs seconds."""
    request_queue_size = 4096


def handover_world(name, workers=1):
    w = World(name)
    w.set_hosts({HOST: "127.0.0.1"})
    w.origins.append(BacklogOrigin())
    w.write_keys()
    w.write_config(with_workers(w, workers), {"version": 1, "domains": [HOST]})
    return w


def second_instance(first, name):
    """Another FPS on the same fps.yaml and Secret (so the same proxy port), with its own state
    directory and admin port: what an upgrade starts beside the running one."""
    w = World(name)
    w.config, w.secrets, w.port, w.proxy = first.config, first.secrets, first.port, first.proxy
    return w


def ready(w):
    return admin(w, "/readyz", timeout=2)[0] == 200


class Load:
    """loadgen's keep-alive agents and a prober opening a fresh connection every few ms,
    both counting every outcome, until stopped."""

    def __init__(self, w, seconds, agents=AGENTS):
        self.proc = spawn([str(LOADGEN), "--proxy", w.proxy, "--no-auth", "--agents", str(agents), "--duration",
                           str(seconds), "--timeout", "10000", "--url",
                           f"http://{HOST}:{w.origins[0].port}/", "--json", "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.fresh = Prober(w.port, HOST, w.origins[0].port, interval=0.01)
        self.fresh.start()

    def mark(self):
        self.proc.send_signal(signal.SIGUSR1)

    def finish(self, timeout=120, now=False):
        """Stops the prober and collects loadgen's report: at the end of its --duration, or at
        once with now=True (SIGINT: loadgen stops sending and reports as at the end)."""
        fresh = self.fresh.finish()
        if now:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            stop_group(self.proc, signal.SIGKILL)
        assert self.proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return json.loads(out), fresh

    def stop(self):
        self.fresh.finish()
        stop_group(self.proc, signal.SIGKILL)


def failed(result, fresh):
    """Every outcome that is not a 2xx, from both kinds of agents."""
    bad = {f"status {k}": v for k, v in result["status"].items() if not k.startswith("2") and v}
    bad.update({k: v for k, v in result["errors"].items() if v})
    bad.update({f"fresh {k}": v for k, v in fresh.items() if k != "200" and v})
    return bad


def running(proc):
    return proc.poll() is None


@pytest.mark.parametrize("workers", [1, 2])
def test_second_instance_joins_the_port_and_the_first_drains_with_no_failed_request(workers):
    """Keep-alive agents (loadgen) and fresh connections: 0 failed while a second instance
    joins the port and the first drains; with 2 SMP workers each, the two Squids need
    service names of their own."""
    a = handover_world("ho-a", workers)
    b = second_instance(a, "ho-b")
    load = None
    try:
        a.start()
        load = Load(a, 120)  # stopped once B serves alone (a bound for a slow box, not a wait)
        wait_for(lambda: a.squid_pid() and "squid: started" in a.log(), what="A serving")
        threading.Event().wait(2)  # load on A alone first (not a synchronization: the load runs on)
        b.start(wait=False)
        wait_for(lambda: ready(b), 60, what="B ready")
        assert "joining it (SO_REUSEPORT)" in b.log(), b.log()
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0, a.log()
        alog = a.log()
        assert "no longer accepts on port" in alog, alog
        assert "drained" in alog, alog
        served = sum(load.fresh.results.values())
        wait_for(lambda: sum(load.fresh.results.values()) >= served + 20, 30, what="B serving alone")
        result, fresh = load.finish(now=True)
        load = None
        assert result["requests"] > 1000, result
        assert sum(fresh.values()) > 20, fresh
        assert failed(result, fresh) == {}, (result["status"], result["errors"], fresh)
        # B serves on alone
        assert b.get(HOST, port=a.origins[0].port)[0] == 200
    finally:
        if load is not None:
            load.stop()
        b.close()
        a.close()


def test_sigterm_alone_answers_every_request_on_the_wire_and_refuses_only_new_connections():
    """No second instance: SIGTERM still drains. Every request on the wire at the signal
    (loadgen's mark) is answered 2xx, none is cut or answered 503; what the agents meet
    afterwards is refused connections only (their next connection, after "Connection: close")."""
    a = handover_world("ho-alone")
    load = None
    try:
        a.start()
        load = Load(a, 120)  # stopped once A has exited
        wait_for(lambda: sum(load.fresh.results.values()) > 20, 30, what="load under way")
        load.mark()
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0, a.log()
        assert "no longer accepts on port" in a.log(), a.log()
        result, fresh = load.finish(now=True)
        load = None
        at_mark = result["availability"]["in_flight_at_mark"]
        assert at_mark["2xx"] > 0, result["availability"]
        assert at_mark["other_status"] == 0 and at_mark["cut"] == 0, result["availability"]
        assert {k: v for k, v in result["status"].items() if not k.startswith("2")} == {}, result["status"]
        assert {k: v for k, v in result["errors"].items() if v and k != "connect_refused"} == {}, result["errors"]
        assert set(fresh) <= {"200", "refused"}, fresh
    finally:
        if load is not None:
            load.stop()
        a.close()


def test_an_edit_during_the_handover_reaches_the_instance_that_serves_after_it():
    """Both instances read the same ConfigMap: an edit made while both serve, and one made
    while the first drains, are in force in the second once it serves alone."""
    a = handover_world("ho-edit-a")
    a.set_hosts({"b.allowed.test": "127.0.0.1", "c.allowed.test": "127.0.0.1"})
    b = second_instance(a, "ho-edit-b")
    try:
        a.start()
        b.start(wait=False)
        wait_for(lambda: ready(b), 60, what="B ready")
        a.write_config(a.yaml(), {"version": 2, "domains": [HOST, "b.allowed.test"]})
        for w in (a, b):
            wait_for(lambda w=w: status(w).get("whitelist_version") == 2, 30,
                     what=f"{w.dir.name} on version 2")
        a.proc.send_signal(signal.SIGTERM)
        a.write_config(a.yaml(), {"version": 3, "domains": [HOST, "b.allowed.test", "c.allowed.test"]})
        assert a.proc.wait(timeout=30) == 0, a.log()
        wait_for(lambda: status(b).get("whitelist_version") == 3, 30, what="B on version 3")
        port = a.origins[0].port
        for host in (HOST, "b.allowed.test", "c.allowed.test"):
            b.wait_status(host, 200, port=port, timeout=30)
        assert b.get("d.allowed.test", port=port)[0] == 403
    finally:
        b.close()
        a.close()


def test_a_strangers_reuseport_listener_on_the_proxy_port_is_still_refused():
    """The handover exception is for FPS Squids only: a listener of another program, even one
    that set SO_REUSEPORT and runs as the same user (and would receive a share of the agents'
    connections if Squid joined its group), keeps Squid from starting, named in the log."""
    import socket as socketmod
    w = handover_world("ho-stranger")
    stranger = socketmod.socket()
    try:
        stranger.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_REUSEADDR, 1)
        stranger.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", w.port))
        stranger.listen(16)
        w.start(wait=False)
        wait_for(lambda: "squid not started: proxy port" in w.log(), 30, what="the preflight refusal")
        assert "already in use by pid" in w.log(), w.log()
        assert "joining it" not in w.log()
        assert w.squid_pid() is None
    finally:
        stranger.close()
        w.close()
