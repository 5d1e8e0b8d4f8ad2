"""`make deps` / `make test-deps` install Debian packages: installing must neither start nor enable a
server. Debian's maintainer scripts enable (and, where systemd runs, start) a package's services:
`prometheus` (0.0.0.0:9090, FPS's old admin port), `squid` (0.0.0.0:3128), avahi-daemon ... So
promtool is unpacked into build/ instead of installing `prometheus`, and the Makefile's installer
stops the starts (a policy-rc.d answering 101) and disables what the install enabled."""
import os
import re
import subprocess

import pytest

from fpsharness import PROMTOOL, ROOT


def make_vars():
    """{name: value} of the Makefile's variables, as make itself expands them."""
    out = subprocess.run(["make", "-C", str(ROOT), "-pnq", "deps"], capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\w+) :?= (.*)$", out, re.M)}


def test_no_package_list_installs_a_prometheus_server():
    v = make_vars()
    for name in ("DEB_PKGS", "TEST_PKGS", "BENCH_PKGS", "IMAGE_PKGS"):
        assert name in v, name
        pkgs = v[name].split()
        assert not [p for p in pkgs if p.startswith("prometheus")], f"{name}: {pkgs}"
    assert v["PROMTOOL_DEB"] == "build/prometheus/usr/bin/promtool"


def test_promtool_is_the_unpacked_one():
    assert PROMTOOL.is_file(), "make build/prometheus/usr/bin/promtool"
    r = subprocess.run([str(PROMTOOL), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "promtool" in (r.stdout + r.stderr)


def ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def listeners():
    """Listening TCP and bound UDP sockets below port 10000 (where the daemons of Debian packages
    listen: 9090 prometheus, 9100 node exporter, 3128 squid, 5353 avahi, 80 nginx ...) whose
    process is a daemon (its parent is init, or it is not ours to see). The tests' own servers
    use ports from 10000 up and are children of their tests: other tests running at the same
    time on this shared machine do not count."""
    out = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        port = cols[4].rsplit(":", 1)[-1]
        pids = [int(p) for p in re.findall(r"pid=(\d+)", line)]
        if port.isdigit() and int(port) < 10000 and (not pids or any(ppid(p) in (0, 1, None) for p in pids)):
            found.add(f"{cols[0]} {cols[4]} {' '.join(cols[6:])}")
    return found


def test_make_deps_leaves_no_new_listening_socket():
    """`make deps` on this machine (everything already installed: it installs nothing) opens no
    socket. What an install does is the next test's."""
    v = make_vars()
    pkgs = v["DEB_PKGS"].split()
    missing = [p for p in pkgs if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                 text=True).stdout != "install ok installed"]
    if missing:
        pytest.skip(f"not installed here: {missing} (make deps would install them)")
    before = listeners()
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "deps"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "installing" not in r.stdout
    assert listeners() - before == set()


FAKE_APT = """#!/bin/sh
# apt-get for the test: `install` runs what a maintainer script runs, policy-rc.d then enable.
case "$*" in *update*) exit 0;; esac
if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" fake-server start; echo "policy $?" >> "$LOG"; else echo "policy none" >> "$LOG"; fi
mkdir -p "$SYSTEMD_DIR/multi-user.target.wants" "$SYSTEMD_DIR/sockets.target.wants"
ln -sf /lib/systemd/system/fake-server.service "$SYSTEMD_DIR/multi-user.target.wants/fake-server.service"
ln -sf /lib/systemd/system/fake-server.socket "$SYSTEMD_DIR/sockets.target.wants/fake-server.socket"
mkdir -p "$SYSTEMD_DIR/timers.target.wants"
ln -sf /lib/systemd/system/fake-rotate.timer "$SYSTEMD_DIR/timers.target.wants/fake-rotate.timer"
echo "install $*" >> "$LOG"
"""


@pytest.mark.parametrize("had_policy", [False, True])
def test_an_install_starts_nothing_and_leaves_nothing_enabled(tmp_path, had_policy):
    """The Makefile's installer against a fake apt-get whose package enables two units, as
    deb-systemd-helper does: a start asked during the install is refused (101), the units are
    disabled afterwards (a timer serves nothing and stays), a unit enabled before is left alone,
    and an existing policy-rc.d stays."""
    fake, systemd, log = tmp_path / "bin", tmp_path / "systemd", tmp_path / "log"
    fake.mkdir()
    (fake / "apt-get").write_text(FAKE_APT)
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # nothing is installed
    (fake / "systemctl").write_text("#!/bin/sh\necho \"systemctl $*\" >> \"$LOG\"\nexit 1\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    (systemd / "multi-user.target.wants").mkdir(parents=True)
    (systemd / "multi-user.target.wants" / "mine.service").symlink_to("/lib/systemd/system/mine.service")
    policy = tmp_path / "policy-rc.d"
    if had_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", LOG=str(log), SYSTEMD_DIR=str(systemd),
               POLICY_RC_D=str(policy))
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "deps", "DEB_PKGS=fake-server", f"SYSTEMD_DIR={systemd}",
                        f"POLICY_RC_D={policy}"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = log.read_text().splitlines()
    assert "policy 101" in lines, lines
    assert any(line.startswith("install ") and "fake-server" in line for line in lines)
    assert "systemctl disable fake-server.service" in lines and "systemctl disable fake-server.socket" in lines
    left = sorted(p.name for p in systemd.rglob("*") if p.is_symlink())
    assert left == ["fake-rotate.timer", "mine.service"]
    assert policy.exists() == had_policy
    assert "disabling" in r.stdout
