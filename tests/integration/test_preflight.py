"""What must hold before Squid starts, and what the controller says when it does not
(docs/operations.md, "Before Squid starts"): a checkout in a private directory (mode 0700,
like /root or `mktemp -d`), a state directory Squid's user cannot enter, a proxy port or an
admin port another program holds, and Squid exiting at start."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from fpsharness import BIN, TEMPLATES, World, agent_credentials, free_port, spawn, stop_group, wait_for

NAMES = {"a.allowed.test": "127.0.0.1", "b.denied.test": "127.0.0.1"}


def status(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/status", timeout=5) as r:
        return json.loads(r.read())


def squid_problem(admin_port):
    try:
        return status(admin_port)["children"]["squid"].get("problem") or ""
    except OSError:
        return ""


@pytest.fixture
def private_dir():
    """A directory only root can enter, as /root or `mktemp -d` are."""
    d = Path(tempfile.mkdtemp(prefix="fps-private-"))
    assert os.stat(d).st_mode & 0o777 == 0o700
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_world(name, auth=False):
    w = World(name)
    w.set_hosts(NAMES)
    w.origin()
    w.write_keys()
    w.write_config(w.yaml(auth=auth), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    return w


def test_stack_runs_from_a_checkout_in_a_private_directory(private_dir):
    # The binaries and templates as a clone under /root would have them.
    tree = private_dir / "fps"
    (tree / "build").mkdir(parents=True)
    for b in ("fps-controller", "fps-auth", "fps-acl"):
        shutil.copy2(BIN / b, tree / "build" / b)
    shutil.copytree(TEMPLATES, tree / "squid-templates")
    shutil.copytree(TEMPLATES.parent / "stunnel-conf", tree / "stunnel-conf")
    w = make_world("private", auth=True)
    try:
        w.logf = open(w.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k != "FPS_TEMPLATES_DIR"}
        w.proc = subprocess.Popen(
            [str(tree / "build" / "fps-controller"), "run", "--config-dir", str(w.config), "--secrets-dir",
             str(w.secrets), "--state-dir", str(w.state), "--admin", f"127.0.0.1:{w.admin_port}"],
            stdout=w.logf, stderr=subprocess.STDOUT, env=env)
        w.wait_serving()
        user, password = agent_credentials(World.API_KEY)
        w.wait_status("a.allowed.test", 200, user=user, password=password)  # fps-auth and fps-acl ran
        assert w.get("b.denied.test", user=user, password=password)[0] == 403
        assert w.get("a.allowed.test")[0] == 407
        # Squid runs the helpers from the state directory, where its user can reach them.
        assert (w.state / "bin" / "fps-auth").exists() and (w.state / "bin" / "fps-acl").exists()
        assert f"{w.state}/bin/fps-auth" in w.active_conf()
        assert "Squid runs copies from" in w.log()
    finally:
        w.close()


def test_state_dir_squid_cannot_enter_is_reported_in_one_line(private_dir):
    w = make_world("unreachable")
    w.state = private_dir / "state"
    try:
        w.start(wait=False, extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        want = f"user proxy cannot enter {private_dir} (mode 0700, owner root:root)"
        wait_for(lambda: want in squid_problem(w.admin_port), 20, what="the reason in /status")
        lines = [l for l in w.log().splitlines() if "squid not started" in l]
        assert len(lines) == 1 and want in lines[0], w.log()
        readyz = subprocess.run(["curl", "-s", f"http://127.0.0.1:{w.admin_port}/readyz"], capture_output=True,
                                text=True).stdout
        assert want in readyz
        # Squid was never started against it: no crash loop, no restarts counted.
        s = status(w.admin_port)["children"]["squid"]
        assert s["restarts"] == 0 and s["pid"] is None
        # The same line from `check` and `diagnose`.
        for cmd in ("check", "diagnose"):
            r = subprocess.run([str(BIN / "fps-controller"), cmd, "--config-dir", str(w.config), "--secrets-dir",
                                str(w.secrets), "--state-dir", str(w.state)], capture_output=True, text=True)
            assert r.returncode == 1 and want in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)
        # Fixing the permission is picked up without a restart of the controller.
        os.chmod(private_dir, 0o755)
        w.wait_serving()
        wait_for(lambda: squid_problem(w.admin_port) == "", 20, what="the problem cleared")
        assert "squid: cleared" in w.log()
    finally:
        w.close()


def test_proxy_port_taken_by_another_program_is_reported_and_picked_up_when_freed():
    w = make_world("porttaken")
    holder = socket.socket()
    holder.bind(("127.0.0.1", w.port))
    holder.listen(1)
    try:
        w.start(wait=False, extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        want = f"proxy port 127.0.0.1:{w.port} is already in use by pid {os.getpid()}"
        wait_for(lambda: want in squid_problem(w.admin_port), 20, what="the taken port in /status")
        assert sum("squid not started" in l for l in w.log().splitlines()) == 1, w.log()
        assert status(w.admin_port)["children"]["squid"]["restarts"] == 0
        holder.close()
        w.wait_serving()
        assert w.get("a.allowed.test")[0] == 200
    finally:
        holder.close()
        w.close()


def test_second_controller_on_the_same_admin_port_exits_3():
    first = make_world("admin1")
    second = make_world("admin2")
    second.admin_port = first.admin_port
    try:
        first.start(extra_args=["--admin", f"127.0.0.1:{first.admin_port}"])
        second.start(wait=False, extra_args=["--admin", f"127.0.0.1:{second.admin_port}"])
        assert second.proc.wait(timeout=60) == 3
        assert f"127.0.0.1:{second.admin_port}: address already in use" in second.log()
        assert "squid: started" not in second.log()  # it gave up before starting Squid
        # Only the first listens: every probe is answered by it.
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{first.admin_port}"], capture_output=True,
                             text=True).stdout
        assert out.count("LISTEN") == 1, out
    finally:
        second.close()
        first.close()


def test_second_controller_on_the_same_state_dir_exits_3_and_writes_nothing(tmp_path):
    """Before the state-directory lock, a second controller on the same volume (its own admin
    port) rendered a new generation and could pick a new mgr.port under the first one's
    Squid before giving up."""
    w = make_world("samestate")
    second = None
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        gens = sorted(p.name for p in (w.state / "gen").iterdir())
        mgr = (w.state / "run" / "mgr.port").read_text()
        current = os.readlink(w.state / "current")
        log2 = tmp_path / "second.log"
        with open(log2, "wb") as out:
            second = spawn([str(BIN / "fps-controller"), "run", "--config-dir", str(w.config), "--secrets-dir",
                            str(w.secrets), "--state-dir", str(w.state), "--admin", f"127.0.0.1:{free_port()}"],
                           stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, FPS_TEMPLATES_DIR=str(TEMPLATES)))
            assert second.wait(timeout=60) == 3
        text = log2.read_text()
        assert f"{w.state}: state directory is in use by another fps-controller (pid {w.proc.pid})" in text, text
        assert "squid: started" not in text
        assert sorted(p.name for p in (w.state / "gen").iterdir()) == gens
        assert (w.state / "run" / "mgr.port").read_text() == mgr
        assert os.readlink(w.state / "current") == current
        assert w.get("a.allowed.test")[0] == 200
        assert w.proc.poll() is None
    finally:
        if second is not None:
            stop_group(second)
        w.close()


def test_squid_exiting_at_start_is_reported_with_its_fatal_line():
    w = make_world("fatal")
    # Squid cannot write its pid file: it exits at start with a FATAL line on stderr
    # (written before cache.log is open), relayed by the controller and kept in /status.
    (w.state / "run" / "squid.pid").mkdir(parents=True)
    try:
        w.start(wait=False, extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        wait_for(lambda: "FATAL" in squid_problem(w.admin_port), 30, what="Squid's FATAL line in /status")
        problem = squid_problem(w.admin_port)
        assert problem.startswith("exited: FATAL: failed to open ") and "squid.pid" in problem, problem
        assert any(l.startswith("FATAL") or "| FATAL: failed to open" in l for l in w.log().splitlines()), w.log()
        assert any("squid: exited: FATAL: failed to open" in l for l in w.log().splitlines()), w.log()
        readyz = subprocess.run(["curl", "-s", f"http://127.0.0.1:{w.admin_port}/readyz"], capture_output=True,
                                text=True).stdout
        assert "FATAL: failed to open" in readyz, readyz
    finally:
        w.close()


def test_stale_squid_pid_file_naming_another_process_is_removed():
    """The state volume outlives a container restart; the pid in squid.pid now belongs to
    another process. Squid alone would refuse to start ("Squid is already running")."""
    w = make_world("stalepid")
    (w.state / "run").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "300"])
    try:
        (w.state / "run" / "squid.pid").write_text(f"{other.pid}\n")
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        assert w.get("a.allowed.test")[0] == 200
        assert other.poll() is None  # not ours: left alone
        assert "removing the stale pid file" in w.log()
        assert "Squid is already running" not in w.log()
    finally:
        other.kill()
        other.wait()
        w.close()
