"""Faults an appliance meets (docs/operations.md "Faults"): a full state volume, a hung or
orphaned Squid, a lost Secret mount, keys expiring with time, a tunnel outage, and tests
that must not leave processes behind. Real Squid, real faults (a small tmpfs, SIGSTOP,
SIGKILL, a removed directory)."""
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fpsharness import Prober, World, free_port, leaked_processes, register_dir, stop_group, wait_for
from fpsharness import admin_get as admin, admin_metric as metric, admin_status as status

NAMES = {"a.allowed.test": "127.0.0.1", "b.other.test": "127.0.0.1"}
# How long a test waits for the state it expects. The tests print what they measured; with
# FAULTS_DEADLINE=60 and FPS_BIN_DIR pointing at an older build they measure the "before".
DEADLINE = float(os.environ.get("FAULTS_DEADLINE", "6"))


def make(name="faults", auth=False, extra=""):
    w = World(name)
    w.set_hosts(NAMES)
    w.origin()
    w.admin_port = free_port()
    w.write_config(w.yaml(auth=auth, extra=extra + f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                   {"version": 1, "domains": ["a.allowed.test"]})
    return w


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- 7. tests leave nothing running ----------------------------------------------------------

def test_world_close_stops_an_orphaned_squid_of_a_killed_controller():
    w = make("leak")
    try:
        w.start()
        squid = w.squid_pid()
        assert squid and os.path.exists(f"/proc/{squid}")
        w.proc.send_signal(signal.SIGKILL)  # the controller dies; its Squid keeps running
        w.proc.wait()
        assert os.path.exists(f"/proc/{squid}")
    finally:
        w.close()
    assert leaked_processes([str(w.dir)]) == []


# ---- 2. a hung Squid ---------------------------------------------------------------------------

def readyz(w):
    return admin(w, "/readyz", timeout=3)[0]


def test_stopped_squid_is_not_ready_and_ready_again_when_it_answers():
    w = make("hung")
    squid = None
    try:
        w.start()
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200")
        squid = w.squid_pid()
        os.kill(squid, signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: readyz(w) == 503, DEADLINE, what="/readyz 503 for a stopped Squid")
        print(f"\n/readyz 503 {time.monotonic() - t0:.2f} s after SIGSTOP")
        assert "does not answer HTTP" in admin(w, "/readyz")[1]
        assert metric(w, "fps_squid_answering") == 0
        assert status(w)["children"]["squid"]["answering"] is False
        os.kill(squid, signal.SIGCONT)
        t0 = time.monotonic()
        wait_for(lambda: readyz(w) == 200, DEADLINE, what="/readyz 200 after SIGCONT")
        print(f"/readyz 200 {time.monotonic() - t0:.2f} s after SIGCONT")
        assert w.squid_pid() == squid  # not killed: it answered within the bound
        assert w.get("a.allowed.test")[0] == 200
    finally:
        if squid:
            try:
                os.kill(squid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        w.close()


def test_squid_silent_past_the_bound_is_killed_and_restarted():
    w = make("hungkill")
    squid = None
    try:
        w.start(env_extra={"FPS_SQUID_HANG_MS": "3000"})
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200")
        squid = w.squid_pid()
        os.kill(squid, signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: w.squid_pid() not in (None, squid), 30, what="a new Squid after the hung one was killed")
        w.wait_serving()
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200 with the new Squid")
        print(f"\nnew Squid ready {time.monotonic() - t0:.2f} s after SIGSTOP (bound 3 s)")
        assert w.get("a.allowed.test")[0] == 200
        assert f"squid: pid {squid} answered no HTTP" in w.log()
        assert metric(w, "fps_squid_hung_kills_total") == 1
        assert metric(w, "fps_squid_restarts_total") == 1
        assert status(w)["children"]["squid"]["hung_kills"] == 1
    finally:
        if squid:
            try:
                os.kill(squid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        w.close()


def _squid_wrapper(w, body):
    """An FPS_SQUID_BIN that runs `body` before Squid's serving run (`-k` calls stay plain)."""
    p = w.dir / "squid-wrapper.sh"
    p.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -k ] && exec /usr/sbin/squid \"$@\"; done\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def test_a_slow_starting_squid_is_not_killed_as_hung():
    # Squid answers nothing until it has started its helpers; on a loaded box that took 17 s. The
    # silence bound (here 1 s) counts from the last answer; before the first one the start bound
    # (FPS_SQUID_START_MS, 120 s by default) does. Before: the 4 s start was killed as a hang.
    w = make("slowstart")
    try:
        w.start(env_extra={"FPS_SQUID_HANG_MS": "1000",
                           "FPS_SQUID_BIN": _squid_wrapper(w, 'sleep 4\nexec /usr/sbin/squid "$@"')})
        squid = w.squid_pid()
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200")
        assert w.get("a.allowed.test")[0] == 200
        assert "answered no HTTP" not in w.log()
        assert metric(w, "fps_squid_hung_kills_total") == 0
        assert metric(w, "fps_squid_restarts_total") == 0
        assert w.squid_pid() == squid
    finally:
        w.close()


def test_a_squid_that_never_answers_after_its_start_is_killed_at_the_start_bound():
    w = make("neverstarts")
    try:
        w.start(wait=False, env_extra={"FPS_SQUID_HANG_MS": "1000", "FPS_SQUID_START_MS": "3000",
                                       "FPS_SQUID_BIN": _squid_wrapper(w, "while :; do sleep 1; done")})
        wait_for(lambda: "none since it started" in w.log(), 30, what="the start bound's kill in the log")
        line = next(x for x in w.log().splitlines() if "none since it started" in x)
        assert "(bound 3000 ms, none since it started)" in line, line
        wait_for(lambda: metric(w, "fps_squid_hung_kills_total") >= 1, 10, what="hung_kills counted")
    finally:
        w.close()


# ---- 6. route state follows a tunnel outage within seconds ---------------------------------------

def test_tunnel_outage_and_recovery_reach_status_and_metrics_quickly():
    from test_routes import NAMES as ROUTE_NAMES, Cloud, Customer, Setup, listening
    d = Path(tempfile.mkdtemp(prefix="faults-tunnel-", dir="/tmp"))
    register_dir(d)
    os.chmod(d, 0o755)
    hosts = d / "hosts"
    hosts.write_text("".join(f"{ip} {n}\n" for n, ip in ROUTE_NAMES.items()))
    os.chmod(hosts, 0o644)
    cloud, customer, s = Cloud(d / "cloud", hosts), Customer(d / "customer", hosts), None
    try:
        cloud.start()
        customer.start()
        s = Setup("live", cloud, customer).start()
        wait_for(lambda: s.tunnel_status().get("up") is True, 30, what="/status tunnel up")
        # Stopping the cloud side takes a while (its Squid shuts down too): time from the moment
        # its TLS port is closed. The deadline is below the full check's 10 s period.
        stopper = threading.Thread(target=cloud.stop)
        stopper.start()
        try:
            closed = wait_for(lambda: not listening(cloud.tls_port) and time.monotonic(), 30, interval=0.01,
                              what="the cloud TLS port closed")
            down = wait_for(lambda: s.tunnel_status().get("up") is False and time.monotonic(), DEADLINE,
                            interval=0.05, what="/status tunnel down") - closed
        finally:
            stopper.join()
        assert "fps_tunnel_up 0" in urllib.request.urlopen(
            f"http://127.0.0.1:{s.admin_port}/metrics", timeout=5).read().decode()
        t0 = time.monotonic()
        cloud.start()
        wait_for(lambda: s.tunnel_status().get("up") is True, DEADLINE, interval=0.05, what="/status tunnel up again")
        up = time.monotonic() - t0
        print(f"\n/status tunnel down {down:.2f} s after the cloud stunnel stopped, up {up:.2f} s after it "
              "listened again")
    finally:
        if s:
            s.close()
        stop_group(cloud.proc)
        stop_group(customer.proc)
        shutil.rmtree(d, ignore_errors=True)


# ---- 5. key warnings follow the clock ----------------------------------------------------------

def test_key_thresholds_crossed_with_time_are_logged_once():
    w = make("keyclock", auth=True)
    try:
        now = datetime.now(timezone.utc)
        w.write_keys([{"id": "soon", "key": "k-soon", "expires": iso(now + timedelta(seconds=3))},
                      {"id": "long", "key": w.API_KEY, "expires": iso(now + timedelta(days=10, seconds=6))}])
        w.start()
        wait_for(lambda: "API key 'soon'" in w.log(), 30, what="the expiry of key 'soon' logged")
        wait_for(lambda: "the newest API key" in w.log(), 30, what="the 10-day warning logged")
        assert metric(w, "fps_auth_keys_valid") == 1
        # The last key goes: one error when no key is valid any more.
        now = datetime.now(timezone.utc)
        w.write_keys([{"id": "last", "key": w.API_KEY, "expires": iso(now + timedelta(seconds=3))}])
        wait_for(lambda: "API key 'last'" in w.log(), 30, what="the expiry of key 'last' logged")
        wait_for(lambda: "NO VALID API KEY" in w.log(), 30, what="no valid key logged")
        assert metric(w, "fps_auth_keys_valid") == 0
        w.write_keys([{"id": "next", "key": w.API_KEY, "expires": iso(now + timedelta(days=30))}])
        wait_for(lambda: metric(w, "fps_auth_keys_valid") == 1, 30, what="the new key counted")
        log = w.log()
        assert log.count("API key 'soon' in") == 1, log
        assert log.count("API key 'last' in") == 1, log
        assert log.count("NO VALID API KEY") == 1, log
        # once when 'long' crossed 10 days, once when 'last' (3 s left) was published
        assert log.count("the newest API key") == 2, log
    finally:
        w.close()


# ---- 3. a controller restart meets its own orphan -----------------------------------------------

class GapProber(Prober):
    """A Prober that also keeps when each failure happened: the gap is first to last."""

    def count(self, key):
        super().count(key)
        if key != "200":
            self.fail_times = getattr(self, "fail_times", []) + [time.monotonic()]

    def gap(self):
        t = getattr(self, "fail_times", [])
        return t[-1] - t[0] if t else 0.0


def test_new_controller_adopts_the_orphaned_squid_of_a_killed_one():
    """kill -9 of the controller outside a container: its Squid keeps serving, and the next
    controller adopts it (pidfd) instead of replacing it, so agents meet no refused
    connection at all; a squid.conf change then reaches the adopted Squid, and a stop
    stops it (docs/operations.md, "The controller was killed and restarted")."""
    w = make("orphan")
    prober = None
    try:
        w.start()
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200")
        orphan = w.squid_pid()
        prober = GapProber(w.port, "a.allowed.test", w.origins[0].port, interval=0.01)
        prober.start()
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
        assert w.get("a.allowed.test")[0] == 200  # the orphan keeps serving
        mark = len(w.log())
        w.start()
        wait_for(lambda: readyz(w) == 200, 30, what="/readyz 200 under the new controller")
        wait_for(lambda: sum(prober.results.values()) > 100, 30, what="agents served after the adoption")
        results = prober.finish()
        prober = None
        assert w.squid_pid() == orphan
        log = w.log()[mark:]
        assert f"squid: pid {orphan} from" in log and "adopting it" in log, log
        assert "died" not in log, log
        st = status(w)["children"]["squid"]
        assert st["restarts"] == 0 and st["pid"] == orphan, st
        assert set(results) == {"200"}, results
        print(f"\norphan adopted: {sum(results.values())} agent requests, all 200: {results}")
        # A squid.conf change reaches the adopted Squid: the origin's port leaves safe_ports.
        w.write_config(w.yaml(safe_ports=[80, 443], extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                       {"version": 2, "domains": ["a.allowed.test"]})
        w.wait_status("a.allowed.test", 403, timeout=30)
        assert w.squid_pid() == orphan
        # and a stop stops it, through its pidfd
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=30) == 0
        wait_for(lambda: not os.path.exists(f"/proc/{orphan}/cmdline") or
                 open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 30,
                 what="the adopted Squid gone")
    finally:
        if prober:
            prober.finish()
        w.close()


# ---- 1. a full state volume ----------------------------------------------------------------------

def fill(path):
    """Writes path until the volume has no space left (already full: creating it fails)."""
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC, e


def test_full_state_volume_keeps_agents_served_and_an_edit_applies_after_space_returns():
    from fpsharness import fresh_request
    w = make("full")
    w.state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(w.state)], check=True)
    try:
        w.start()
        squid = w.squid_pid()
        assert w.get("a.allowed.test")[0] == 200
        fill(w.state / "filler")
        wait_for(lambda: status(w).get("state_volume", {}).get("full") is True, 30, what="/status volume full")
        assert metric(w, "fps_state_volume_full") == 1
        results = {}
        # Enough access log lines to make Squid write (and fail) many times; four agents at once.
        with ThreadPoolExecutor(4) as pool:
            for r in pool.map(lambda _: fresh_request(w.port, "a.allowed.test", w.origins[0].port), range(600)):
                results[r] = results.get(r, 0) + 1
        print(f"\nagent requests with the state volume full: {results}")
        assert results == {"200": 600}
        assert w.squid_pid() == squid
        # An edit cannot be written: the active generation stays, the error says why.
        w.write_config(w.yaml(extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n"),
                       {"version": 2, "domains": ["a.allowed.test", "b.other.test"]})
        wait_for(lambda: "No space left" in ((status(w).get("last_reload") or {}).get("error") or ""), 30,
                 what="the failed update in /status")
        assert w.get("b.other.test")[0] == 403
        assert w.get("a.allowed.test")[0] == 200
        (w.state / "filler").unlink()
        w.wait_status("b.other.test", 200, timeout=30)
        assert metric(w, "fps_state_volume_full") == 0
        assert status(w)["state_volume"]["free_bytes"] > 1 << 20
        assert "is full" in w.log() and "has room again" in w.log()
        assert w.squid_pid() == squid
    finally:
        w.stop()
        subprocess.run(["umount", "-l", str(w.state)])
        w.close()


# ---- 4. the Secret mount goes away -------------------------------------------------------------

def agent(w, key, host="a.allowed.test"):
    from fpsharness import agent_credentials
    user, password = agent_credentials(key)
    return w.get(host, user=user, password=password)[0]


def last_error(w):
    return (status(w).get("last_reload") or {}).get("error") or ""


# Root reads any file whatever its mode: the controller runs as an unprivileged user, as in
# the pod, so that chmod 000 makes a Secret file unreadable to it.
POD_UID = 13  # the manifests' runAsUser (Debian's proxy)


def unprivileged(w):
    """The command prefix that runs w's controller as POD_UID, and the directories it needs."""
    w.state.mkdir(exist_ok=True)
    os.chown(w.state, POD_UID, POD_UID)
    os.chmod(w.secrets, 0o755)
    return ("setpriv", f"--reuid={POD_UID}", f"--regid={POD_UID}", "--clear-groups")


def test_secret_mount_removed_keeps_last_good_keys_and_errors_clear_with_their_cause():
    w = make("secretgone", auth=True)
    try:
        w.write_keys([{"id": "k1", "key": "key-one", "expires": "2099-01-01T00:00:00Z"}])
        w.start(prefix=unprivileged(w))
        gen = status(w)["generation"]
        assert agent(w, "key-one") == 200
        shutil.rmtree(w.secrets)
        wait_for(lambda: "Secret mount is gone" in last_error(w), DEADLINE * 3, what="/status naming the lost mount")
        assert metric(w, "fps_config_last_reload_success") == 0
        assert "the Secret mount is gone" in w.log()
        assert status(w)["generation"] == gen  # no new generation without the keys
        assert status(w)["auth"]["keys_valid"] == 1
        assert agent(w, "key-one") == 200  # agents keep the last good keys
        # The mount comes back with a rotated key: watched again, applied, the error gone.
        w.secrets.mkdir()
        os.chmod(w.secrets, 0o755)
        w.write_keys([{"id": "k1", "key": "key-one", "expires": "2099-01-01T00:00:00Z"},
                      {"id": "k2", "key": "key-two", "expires": "2099-01-01T00:00:00Z"}])
        wait_for(lambda: agent(w, "key-two") == 200, DEADLINE, what="the rotated key accepted")
        assert "watching %s again" % w.secrets in w.log()
        wait_for(lambda: last_error(w) == "", DEADLINE, what="the error cleared")
        assert metric(w, "fps_config_last_reload_success") == 1
        # An unreadable file is an error; readable again (same content) clears it.
        keys = (w.secrets / "apikeys.json").resolve()
        os.chmod(keys, 0)
        wait_for(lambda: "apikeys.json" in last_error(w), 30, what="/status naming the unreadable file")
        assert agent(w, "key-two") == 200
        os.chmod(keys, 0o644)
        wait_for(lambda: last_error(w) == "", 30, what="the error cleared with identical content")
        assert metric(w, "fps_config_last_reload_success") == 1
    finally:
        w.close()


def test_secret_and_configmap_updates_apply_while_the_other_is_broken():
    w = make("independent", auth=True)
    try:
        w.write_keys([{"id": "k1", "key": "key-one", "expires": "2099-01-01T00:00:00Z"}])
        w.start()
        yaml = w.yaml(auth=True, extra=f"admin:\n  bind: 127.0.0.1\n  port: {w.admin_port}\n")
        # A truncated whitelist.json in the ConfigMap ...
        w.write_config(yaml, raw_whitelist='{"version": 2, "domains": ["a.allowed.test", "b.oth')
        wait_for(lambda: "whitelist.json" in last_error(w), DEADLINE, what="the broken ConfigMap in /status")
        # ... does not hold back a rotated key.
        w.write_keys([{"id": "k1", "key": "key-one", "expires": "2099-01-01T00:00:00Z"},
                      {"id": "k2", "key": "key-two", "expires": "2099-01-01T00:00:00Z"}])
        wait_for(lambda: agent(w, "key-two") == 200, DEADLINE, what="the new key accepted")
        assert agent(w, "key-one", host="b.other.test") == 403  # still the old whitelist
        assert "whitelist.json" in last_error(w)
        # The other way round: a corrupt apikeys.json does not hold back a whitelist edit.
        w.kubelet_update(w.secrets, {"apikeys.json": '{"keys": [ {"id": '})
        wait_for(lambda: "secrets: " in last_error(w), DEADLINE, what="the broken Secret in /status")
        w.write_config(yaml, {"version": 3, "domains": ["a.allowed.test", "b.other.test"]})
        wait_for(lambda: agent(w, "key-two", host="b.other.test") == 200, DEADLINE, what="the whitelist edit")
        assert agent(w, "key-one") == 200  # the last good keys
        # /status is published just after the new generation is active: poll.
        wait_for(lambda: "apikeys.json" in last_error(w) and "whitelist.json" not in last_error(w), DEADLINE,
                 what="only the Secret's error left")
        assert "apikeys.json" in (status(w)["auth"]["error"] or "")
        w.write_keys([{"id": "k2", "key": "key-two", "expires": "2099-01-01T00:00:00Z"}])
        wait_for(lambda: last_error(w) == "", DEADLINE, what="no error once both are valid")
        wait_for(lambda: status(w)["auth"]["keys_total"] == 1, DEADLINE, what="the keys of the fixed Secret")
    finally:
        w.close()
