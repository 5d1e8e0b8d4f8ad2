"""Restarts and upgrades no agent notices (docs/operations.md, "Stopping", "Handing over to a
second instance", "The controller was killed"): a planned Squid restart is not a death, a
second instance joins the proxy port and the first drains, SIGTERM alone answers what is on
the wire, a killed controller's Squid is adopted, an edit during a handover reaches the
instance that serves after it."""
import json
import signal
import urllib.error
import urllib.request

from fpsharness import World, wait_for


def admin(w, path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.admin_port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def status(w):
    code, body = admin(w, "/status")
    return json.loads(body) if code == 200 else {}


def metric(w, name):
    _, body = admin(w, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


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
