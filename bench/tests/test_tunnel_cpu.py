"""The tunnel route's appliance-side CPU target (report.py) and the cloud side's network
namespace (services.CloudNet): created, reachable over its veth pair, removed on every path."""
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import report, services  # noqa: E402


def summ(per):
    return {"cpu_us_per_req": per}


def test_ratio_counts_only_the_appliance_roles():
    tunnel = summ({"fps:squid": 150.0, "fps:stunnel": 80.0, "fps:fps-acl": 2.0, "cloud:stunnel": 90.0,
                   "cloud:squid": 120.0, "nginx": 15.0})
    direct = summ({"fps:squid": 125.0, "fps:fps-acl": 2.0, "nginx": 14.0})
    r, t, d, parts = report.tunnel_cpu_ratio(tunnel, direct)
    assert (t, d) == (232.0, 127.0)
    assert abs(r - 232 / 127) < 1e-9
    assert "squid 150" in parts and "stunnel 80" in parts and "cloud" not in parts
    assert report.tunnel_cpu_ratio(None, direct) is None
    assert report.tunnel_cpu_ratio(tunnel, summ({})) is None


def _summary(tunnel_us, direct_us):
    base = {"ok_rps": 1000.0, "failed_total": 0}
    return {"get1k": {"fps-tunnel": dict(base, cpu_us_per_req={"fps:squid": tunnel_us}),
                      "fps-direct": dict(base, cpu_us_per_req={"fps:squid": direct_us})}}


def test_target_row_met_and_missed():
    rows = {n: (ok, how) for n, ok, how in report.target_checks(_summary(160, 125), [], [])}
    name = "tunnel appliance-side CPU per request ≤ 1.3x direct (GET 1 KiB)"
    assert rows[name][0] is True and "1.28x" in rows[name][1]
    rows = {n: (ok, how) for n, ok, how in report.target_checks(_summary(250, 125), [], [])}
    assert rows[name][0] is False and "2.00x" in rows[name][1]
    table = "\n".join(report.tunnel_cpu_table(_summary(250, 125)))
    assert "**2.00x**" in table  # a missed goal is bold in the table too


def netns_names():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def link_exists(name):
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="ip netns needs root")
def test_cloudnet_is_reachable_over_veth_and_removed():
    net = services.CloudNet()
    try:
        net.create()
        assert net.name in netns_names() and link_exists(net.host_if)
        assert not net.name.endswith("-") and str(os.getpid()) in net.name
        # A listener inside the namespace on its veth address, reached from here (not loopback).
        srv = subprocess.Popen(net.exec_argv(["/usr/bin/python3", "-c",
                                              "import socket; s = socket.socket(); "
                                              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                              f"s.bind(('{net.ns_addr}', 0)); s.listen(); "
                                              "print(s.getsockname()[1], flush=True); c, a = s.accept(); "
                                              "c.sendall(a[0].encode())"]), stdout=subprocess.PIPE, text=True)
        try:
            port = int(srv.stdout.readline())
            with socket.create_connection((net.ns_addr, port), timeout=5) as c:
                assert c.recv(64).decode() == net.host_addr  # the peer saw our veth address
        finally:
            srv.kill()
            srv.wait()
        # The namespace's loopback is its own: the host's loopback ports are not there.
        box = {}
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        th = threading.Thread(target=lambda: box.update(c=ls.accept()), daemon=True)
        th.start()
        probe = subprocess.run(net.exec_argv(["/usr/bin/python3", "-c", "import socket; socket.create_connection("
                                              f"('127.0.0.1', {ls.getsockname()[1]}), timeout=2)"]),
                               capture_output=True)
        ls.close()
        assert probe.returncode != 0 and "c" not in box
    finally:
        net.close()
    assert net.name not in netns_names() and not link_exists(net.host_if)


@pytest.mark.skipif(os.geteuid() != 0, reason="ip netns needs root")
def test_cloudnet_half_created_is_removed():
    net = services.CloudNet()
    # Occupy the veth name: creation fails after the namespace exists.
    subprocess.run(["ip", "link", "add", net.host_if, "type", "veth", "peer", "name", f"fbx{os.getpid()}"[:15]],
                   check=True)
    try:
        with pytest.raises(subprocess.CalledProcessError):
            net.create()
        assert net.name in netns_names()
    finally:
        net.close()
        subprocess.run(["ip", "link", "del", net.host_if], capture_output=True)
    assert net.name not in netns_names()


@pytest.mark.skipif(os.geteuid() != 0, reason="ip netns needs root")
def test_env_close_removes_the_namespace():
    env = services.Env()
    try:
        env.cloudnet.create()
        name = env.cloudnet.name
        assert name in netns_names()
    finally:
        env.close()
    assert name not in netns_names()
