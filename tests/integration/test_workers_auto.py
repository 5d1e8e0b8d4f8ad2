"""`proxy.workers: auto` counts the CPUs the controller may use (docs/configuration.md): under
`taskset -c 0` the rendered squid.conf has one worker whatever the machine's core count; with
two CPUs allowed, two workers. (The cgroup quota is covered by tests/unit/test_cpus.c with a
fake cgroup tree.)"""
import os
import subprocess

import pytest

from fpsharness import BIN, TEMPLATES, World


def render(w, cpus):
    out = w.dir / f"out-{cpus}"
    env = dict(os.environ, FPS_TEMPLATES_DIR=str(TEMPLATES))
    r = subprocess.run(["taskset", "-c", cpus, str(BIN / "fps-controller"), "render", "--config-dir",
                        str(w.config), "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return (out / "squid.conf").read_text()


def test_auto_workers_follow_the_affinity_mask():
    w = World("workers-auto")
    try:
        w.set_hosts({"a.allowed.test": "127.0.0.1"})
        w.write_config(w.yaml().replace("proxy:\n", "proxy:\n  workers: auto\n", 1),
                       {"version": 1, "domains": ["a.allowed.test"]})
        conf = render(w, "0")
        assert "# one worker" in conf and "\nworkers " not in conf, conf[:600]
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            pytest.skip("one CPU on this machine: the two-CPU half needs two")
        conf = render(w, f"{allowed[0]},{allowed[1]}")
        assert "\nworkers 2\n" in conf, conf[:600]
    finally:
        w.close()
