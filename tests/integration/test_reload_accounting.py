"""Reload accounting (docs/operations.md, /status `reloads` and `last_reload`): every change of the
inputs that the controller processes counts once, also when its error reads like the last one;
reading unchanged inputs again counts nothing; `last_reload.whitelist_version` is the version that
was tried, as written (null when the file has none)."""
import os
import signal

import pytest

from fpsharness import World, free_port, wait_for
from test_admin import metrics, status_json


@pytest.fixture
def world():
    w = World("acct")
    w.set_hosts({"a.allowed.test": "127.0.0.1"})
    w.origin()
    w.write_config(w.yaml(), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()


def counts(w):
    r = status_json(w.admin_port)["reloads"]
    return r["ok"], r["failed"]


def push(w, expect, yaml_text=None, whitelist=None, raw=None):
    """Writes the ConfigMap and waits until the controller has counted it: expect is the
    (ok, failed) pair it must reach. Returns /status."""
    w.write_config(yaml_text or w.yaml(), whitelist, raw_whitelist=raw)
    wait_for(lambda: counts(w) == expect, 15, what=f"reloads {expect} (now {counts(w)})")
    return status_json(w.admin_port)


def test_each_broken_update_counts_even_with_the_same_error(world):
    w = world
    ok0, failed0 = counts(w)
    st = push(w, (ok0, failed0 + 1), whitelist={"version": "7", "domains": ["a.allowed.test"]})
    assert "'version' must be a non-negative integer" in st["last_reload"]["error"]
    assert st["last_reload"]["result"] == "failure"
    assert st["last_reload"]["whitelist_version"] == "7"
    t1 = st["last_reload"]["time"]
    # The second bad version fails with the very same message: still its own reload.
    st = push(w, (ok0, failed0 + 2), whitelist={"version": -1, "domains": ["a.allowed.test"]})
    assert st["last_reload"]["whitelist_version"] == -1
    assert st["last_reload"]["time"] >= t1
    assert st["whitelist_version"] == 1  # the list in force
    m = metrics(w.admin_port)
    assert m['fps_config_reloads_total{result="failure"}'] == failed0 + 2

    # Two different nesting bombs in a row: no version to show.
    push(w, (ok0, failed0 + 3), raw="[" * 5000 + "]" * 5000)
    st = push(w, (ok0, failed0 + 4), raw='{"version": 9, "domains": ' + "[" * 6000 + "]" * 6000 + "}")
    assert st["last_reload"]["whitelist_version"] is None
    # A realm typo twice (different bad realms, the same complaint).
    bad = w.yaml().replace("auth:\n", "auth:\n  realm: \"F\\\"PS\"\n")
    st = push(w, (ok0, failed0 + 5), yaml_text=bad, whitelist={"version": 10, "domains": ["a.allowed.test"]})
    assert st["last_reload"]["whitelist_version"] == 10
    bad2 = w.yaml().replace("auth:\n", "auth:\n  realm: \"F\\\"QS\"\n")
    st = push(w, (ok0, failed0 + 6), yaml_text=bad2, whitelist={"version": 10, "domains": ["a.allowed.test"]})
    assert st["last_reload"]["result"] == "failure", st["last_reload"]

    # A good one: counted once as ok, the error is gone; no version in the file: null.
    st = push(w, (ok0 + 1, failed0 + 6), whitelist={"domains": ["a.allowed.test"]})
    assert st["last_reload"]["result"] == "success"
    assert st["last_reload"]["error"] is None
    assert st["last_reload"]["whitelist_version"] is None
    assert st["whitelist_version"] is None


def reread(w):
    """Makes the controller read its inputs again and waits until it has: the second SIGHUP is
    only read after the reload the first one caused (one loop, in order)."""
    for _ in range(2):
        hups = w.log().count("SIGHUP: rereading")
        os.kill(w.proc.pid, signal.SIGHUP)
        wait_for(lambda: w.log().count("SIGHUP: rereading") > hups, 15, what="SIGHUP read")


def test_rereading_unchanged_inputs_counts_nothing(world):
    w = world
    ok0, failed0 = counts(w)
    push(w, (ok0, failed0 + 1), whitelist={"version": "x", "domains": ["a.allowed.test"]})
    t0 = status_json(w.admin_port)["last_reload"]["time"]
    # The same bytes again, as a kubelet update, then read again on SIGHUP: nothing counted.
    w.write_config(w.yaml(), {"version": "x", "domains": ["a.allowed.test"]})
    reread(w)
    assert counts(w) == (ok0, failed0 + 1)
    assert status_json(w.admin_port)["last_reload"]["time"] == t0
    st = push(w, (ok0 + 1, failed0 + 1), whitelist={"version": 5, "domains": ["a.allowed.test"]})
    assert st["last_reload"]["whitelist_version"] == 5
    # Unchanged good inputs, read again: nothing counted either.
    t1 = st["last_reload"]["time"]
    w.write_config(w.yaml(), {"version": 5, "domains": ["a.allowed.test"]})
    reread(w)
    assert counts(w) == (ok0 + 1, failed0 + 1)
    assert status_json(w.admin_port)["last_reload"]["time"] == t1


def test_each_broken_secret_counts_and_a_fix_counts_once(world):
    w = world
    w.write_keys()
    wait_for(lambda: status_json(w.admin_port)["last_reload"]["result"] == "success" and counts(w)[0] >= 2, 15,
             what="keys applied")
    ok0, failed0 = counts(w)
    for i, text in enumerate(('{"keys": [', '{"keys": [{')):  # two different files, the same complaint
        w.kubelet_update(w.secrets, {"apikeys.json": text})
        wait_for(lambda: counts(w) == (ok0, failed0 + 1 + i), 15, what=f"broken Secret {i + 1} counted")
        assert "apikeys.json" in status_json(w.admin_port)["last_reload"]["error"]
    # A good ConfigMap change while the Secret is broken: applied, but not all of the inputs are
    # in force: one failed reload, not an ok and a failed one.
    w.write_config(w.yaml(), {"version": 2, "domains": ["a.allowed.test"]})
    wait_for(lambda: status_json(w.admin_port)["whitelist_version"] == 2, 15, what="version 2 in force")
    assert counts(w) == (ok0, failed0 + 3)
    w.write_keys()
    wait_for(lambda: counts(w) == (ok0 + 1, failed0 + 3), 15, what="the fixed Secret counted once")
    assert status_json(w.admin_port)["last_reload"]["error"] is None
