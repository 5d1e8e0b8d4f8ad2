"""What a newcomer types after `make run` is true: examples/run.sh (what `make run` runs) on the
shipped example config, in a network namespace of its own (the demo's ports are fixed: 8080, the
admin port 8079, 18081, 18443, 13128, 3129; its own namespace keeps it off this shared machine's
loopback). The curl commands it prints answer what they say, the support commands work without
flags, and the demo's clock is checked."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fpsharness import BIN, ROOT, register_dir, spawn, stop_group, wait_for


@pytest.fixture(scope="module")
def demo():
    d = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    register_dir(d)
    os.chmod(d, 0o755)
    env = dict(os.environ, FPS_RUN_DIR=str(d / "run"), FPS_BIN_DIR=str(BIN))
    log = open(d / "run.log", "w")
    proc = spawn(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0"', str(ROOT / "examples/run.sh")],
                 env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(d))

    def ns(*cmd, timeout=60):
        """cmd in the demo's network namespace."""
        return subprocess.run(["nsenter", f"--net=/proc/{proc.pid}/ns/net", *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def admin(path):
        r = ns("curl", "-s", "--max-time", "5", f"http://127.0.0.1:8079{path}")
        return r.stdout

    def serving():
        assert proc.poll() is None, (d / "run.log").read_text()
        try:
            return json.loads(admin("/status"))["squid_runs_active"]
        except ValueError:
            return False
    try:
        wait_for(serving, timeout=90, interval=0.2, what="make run's FPS serving on 127.0.0.1:8080, admin 127.0.0.1:8079")
        yield type("Demo", (), {"dir": d, "run": d / "run", "proc": proc, "ns": staticmethod(ns),
                                "admin": staticmethod(admin), "log": d / "run.log"})
    finally:
        stop_group(proc)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def test_printed_curl_commands_answer_what_they_say(demo):
    text = demo.log.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("curl -x")]
    assert len(lines) == 4, text
    for line in lines:
        cmd, _, comment = line.partition("#")
        expected = re.match(r"\s*(\d{3})", comment).group(1)
        r = demo.ns("sh", "-c", cmd + " -s -o /dev/null -w '%{http_code}' --max-time 10")
        assert r.stdout == expected, f"{line}: got {r.stdout} {r.stderr}"
    assert "curl -s 127.0.0.1:8079/status" in text


def test_support_commands_need_no_flags_after_make_run(demo):
    fps = str(BIN / "fps-controller")
    r = demo.ns(fps, "diagnose", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"fps-controller diagnose: {demo.run}/config" in r.stdout
    r = demo.ns(fps, "explain", "updates.example.test:18081")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ALLOWED" in r.stdout
    r = demo.ns(fps, "explain", "not-listed.example.test:18081")
    assert r.returncode == 1, r.stdout + r.stderr
    r = demo.ns(fps, "denied")
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads(demo.admin("/status"))
    assert status["inputs"] == {"config_dir": f"{demo.run}/config", "secrets_dir": f"{demo.run}/secrets",
                                "state_dir": f"{demo.run}/state"}


def test_without_a_controller_diagnose_says_what_it_needs(tmp_path):
    """No flags, no FPS_CONFIG_DIR and nothing on the default admin address (a fresh
    namespace): a usage error that says so, not a bare `--config-dir is required`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPS_")}
    r = subprocess.run(["unshare", "--net", str(BIN / "fps-controller"), "diagnose"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2
    assert "no --config-dir (or FPS_CONFIG_DIR), and the controller at 127.0.0.1:8079 cannot say" in r.stderr


def test_the_demo_clock_is_checked(demo):
    def checked():
        ck = json.loads(demo.admin("/status"))["clock"]
        return ck if ck["ok"] is True else None
    ck = wait_for(checked, timeout=90, interval=0.5, what="/status clock.ok true")
    assert ck["reference"].startswith("tunnel 127.0.0.1:3129") and ck["reference_date"]
    assert "not checked" not in demo.admin("/")
