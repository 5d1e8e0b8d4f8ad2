"""Supervision and last-known-good (docs/configuration.md): Squid dies, the controller restarts,
the ConfigMap is broken at start-up."""
import os
import signal
import subprocess

from fpsharness import BIN, TEMPLATES, World, free_port, wait_for

NAMES = {"a.allowed.test": "127.0.0.1", "b.other.test": "127.0.0.1"}


def make(mode="live"):
    w = World("life")
    w.set_hosts(NAMES)
    w.origin()
    w.write_config(w.yaml(apply=mode), {"version": 1, "domains": ["a.allowed.test"]})
    return w


def test_squid_killed_is_restarted_with_the_same_policy():
    w = make()
    try:
        w.start()
        pid = w.squid_pid()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: w.squid_pid() not in (None, pid), timeout=30, what="a new squid pid")
        w.wait_serving()
        assert w.get("a.allowed.test")[0] == 200
        assert w.get("b.other.test")[0] == 403
        assert "died (signal 9" in w.log()
    finally:
        w.close()


def test_controller_restarted_on_broken_configmap_serves_last_good():
    w = make()
    try:
        w.start()
        assert w.stop() == 0
        w.write_config("proxy: [this is not a mapping\n", {"version": 2, "domains": ["b.other.test"]})
        w.start()
        assert w.get("a.allowed.test")[0] == 200
        assert w.get("b.other.test")[0] == 403
        assert "IS INVALID: starting on the last good generation" in w.log()
        # Fixing the ConfigMap applies it.
        w.write_config(w.yaml(), {"version": 3, "domains": ["b.other.test"]})
        w.wait_status("b.other.test", 200)
        w.wait_status("a.allowed.test", 403)
    finally:
        w.close()


def test_start_with_invalid_config_and_no_last_good_exits_1():
    w = make()
    try:
        w.write_config("proxy:\n  port: eighty\n")
        p = subprocess.run([str(BIN / "fps-controller"), "run", "--config-dir", str(w.config), "--secrets-dir",
                            str(w.secrets), "--state-dir", str(w.state), "--admin", f"127.0.0.1:{free_port()}"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, FPS_TEMPLATES_DIR=str(TEMPLATES)))
        assert p.returncode == 1
        assert "fps.yaml:2:9: 'port' must be an integer" in p.stderr
    finally:
        w.close()


def test_sigterm_stops_squid_and_exits_0():
    w = make()
    try:
        w.start()
        pid = w.squid_pid()
        assert w.stop() == 0
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        w.close()


def test_check_and_render_commands():
    w = make()
    try:
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(TEMPLATES))
        ok = subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(w.config)],
                            capture_output=True, text=True, env=env)
        assert ok.returncode == 0, ok.stderr
        out = w.dir / "rendered"
        r = subprocess.run([str(BIN / "fps-controller"), "render", "--config-dir", str(w.config), "--out", str(out)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert (out / "squid.conf").exists() and (out / "acl.snapshot").exists()
        w.write_config("auth: {enabled: maybe}\n")
        bad = subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(w.config)],
                             capture_output=True, text=True, env=env)
        assert bad.returncode == 1
        assert "fps.yaml:1:17: 'enabled' must be true or false" in bad.stderr
        usage = subprocess.run([str(BIN / "fps-controller"), "frobnicate"], capture_output=True, text=True)
        assert usage.returncode == 2
    finally:
        w.close()


def test_squid_logs_are_rotated_before_they_fill_the_state_volume():
    w = make()
    try:
        w.start(env_extra={"FPS_LOG_ROTATE_BYTES": "4000"})
        run = w.state / "run"
        wait_for(lambda: w.get("a.allowed.test")[0] == 200 and (run / "access.log.1").exists(), timeout=30,
                 what="access.log rotated")
        # Squid reopened the log: new requests land in a fresh access.log.
        wait_for(lambda: w.get("b.other.test")[0] == 403 and (run / "access.log").exists()
                 and "b.other.test" in (run / "access.log").read_text(), what="requests logged after rotation")
        assert "rotated, squid pid" in w.log()
    finally:
        w.close()
