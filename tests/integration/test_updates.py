"""Whitelist edits delivered the kubelet's way, in both apply modes (docs/configuration.md: entries, apply modes)."""
import json
import os
import time

import pytest

from fpsharness import Prober, World, wait_for

NAMES = {f"h{i}.test": "127.0.0.1" for i in range(25)}
NAMES.update({"a.allowed.test": "127.0.0.1", "b.other.test": "127.0.0.1", "evil.test": "127.0.0.1",
              "c.test": "127.0.0.1"})


def new_world(mode, domains=("a.allowed.test",)):
    w = World(f"upd-{mode}")
    w.mode = mode
    w.set_hosts(NAMES)
    w.origin()
    w.write_config(w.yaml(apply=mode), {"version": 1, "domains": list(domains)})
    w.start()
    return w


@pytest.fixture(params=["live", "reconfigure"])
def world(request):
    w = new_world(request.param)
    yield w
    w.close()


def update_whitelist(w, domains, version):
    w.write_config(w.yaml(apply=w.mode), {"version": version, "domains": domains})


def test_kubelet_update_applies_while_agents_connect_without_refusals(world):
    """Adding then removing a name; a background agent connects every few ms throughout."""
    assert world.get("b.other.test")[0] == 403
    prober = Prober(world.port, "a.allowed.test", world.origins[0].port)
    prober.start()
    wait_for(lambda: prober.results.get("200", 0) >= 20, what="prober warmed up")
    update_whitelist(world, ["a.allowed.test", "b.other.test"], 2)
    world.wait_status("b.other.test", 200)
    update_whitelist(world, ["a.allowed.test"], 3)
    world.wait_status("b.other.test", 403)
    wait_for(lambda: sum(prober.results.values()) >= 50, what="more probes")
    results = prober.finish()
    bad = {k: v for k, v in results.items() if k != "200"}
    if world.mode == "live":
        # Live apply never touches Squid: not one failed connection.
        assert bad == {}, results
    else:
        # reconfigure mode is allowed to cost connections (that is why live exists),
        # but the agent's requests that were answered must all be 200s.
        assert all(k in ("refused", "reset") for k in bad), results
    assert results.get("200", 0) >= 40


def test_twenty_updates_within_100ms_end_on_the_last(world):
    t0 = time.monotonic()
    for i in range(20):
        update_whitelist(world, ["a.allowed.test", f"h{i}.test"], 10 + i)
    assert time.monotonic() - t0 < 5  # the burst itself was written quickly (not a product timing)
    world.wait_status("h19.test", 200)
    assert world.get("h18.test")[0] == 403
    assert world.get("h0.test")[0] == 403
    snapshot = (world.state / "current" / "acl.snapshot").read_text()
    assert "W exact h19.test" in snapshot and "h18.test" not in snapshot


def test_malformed_update_keeps_old_policy_then_fix_applies(world):
    gen_before = (world.state / "current").resolve()
    world.write_config(world.yaml(apply=world.mode), raw_whitelist='{"version": 5, "domains": ["b.other.test",')
    wait_for(lambda: "not valid JSON" in world.log(), what="the error in the log")
    assert "whitelist.json:1:" in world.log()
    assert (world.state / "current").resolve() == gen_before
    assert world.get("a.allowed.test")[0] == 200
    assert world.get("b.other.test")[0] == 403
    # Wrong types and unknown routes reject the whole update too.
    world.write_config(world.yaml(apply=world.mode), {"version": 6, "domains": [{"domain": "b.other.test",
                                                                                  "via": "teleport"}]})
    wait_for(lambda: "unknown via 'teleport'" in world.log(), what="the unknown via error")
    assert world.get("b.other.test")[0] == 403
    update_whitelist(world, ["a.allowed.test", "b.other.test"], 7)
    world.wait_status("b.other.test", 200)


def test_broken_fps_yaml_is_reported_with_position_and_changes_nothing(world):
    bad = world.yaml(apply=world.mode).replace("proxy:\n", "proxy:\n  prot: 8080\n")
    world.write_config(bad, {"version": 2, "domains": ["a.allowed.test", "b.other.test"]})
    wait_for(lambda: "unknown key 'prot'" in world.log(), what="the unknown-key error")
    assert "fps.yaml:2:3: unknown key 'prot' in 'proxy'" in world.log()
    assert world.get("b.other.test")[0] == 403
    assert world.get("a.allowed.test")[0] == 200


def test_invalid_entries_are_reported_and_valid_ones_apply(world):
    update_whitelist(world, ["a.allowed.test", "bad entry", "b.other.test", "*.*.test", "x" * 64 + ".test",
                             "https://C.test:443/path"], 2)
    world.wait_status("b.other.test", 200)
    world.wait_status("c.test", 200)  # reduced from the pasted URL
    log = world.log()
    assert "entry 'bad entry': whitespace" in log
    assert "entry '*.*.test'" in log
    assert "label longer than 63 bytes" in log
    assert "URL reduced to its host: c.test" in log
    assert "whitelist.json:1:" in log  # line and column of each entry


INJECTIONS = ["evil.test\nhttp_access allow all", "evil.test # x", 'evil.test"', "evil.test allow", "evil.test\r",
              ".evil.test\nacl x src all", "evil.test%0a", "evil.test;"]


def test_entries_crafted_to_inject_change_nothing(world):
    conf_before = world.active_conf()
    update_whitelist(world, ["a.allowed.test"] + INJECTIONS, 2)
    wait_for(lambda: world.log().count("whitelist entry rejected") >= len(INJECTIONS), what="rejections")
    # Whatever happened, evil.test is not reachable and Squid's config is as it was.
    assert world.get("evil.test")[0] == 403
    assert world.get("b.other.test")[0] == 403
    assert world.active_conf() == conf_before
    for f in (world.state / "current").iterdir():
        if f.is_file():
            assert "evil" not in f.read_text(), f.name


def test_entry_with_a_nul_rejects_the_whole_update(world):
    """cJSON would cut "evil.test\\u0000..." to "evil.test": the file is refused instead."""
    update_whitelist(world, ["a.allowed.test", "b.other.test", "evil.test\x00.other"], 2)
    wait_for(lambda: "NUL character" in world.log(), what="the NUL error")
    assert world.get("evil.test")[0] == 403
    assert world.get("b.other.test")[0] == 403


def test_plain_edits_rename_over_and_truncate_write_are_seen(world):
    """Outside Kubernetes people edit files in place: both ways must apply."""
    cfg = world.config
    # Replace the kubelet symlinks by plain files first.
    for name in ("fps.yaml", "whitelist.json"):
        text = (cfg / name).read_text()
        (cfg / name).unlink()
        (cfg / name).write_text(text)
    tmp = cfg / ".whitelist.json.swp"
    tmp.write_text(json.dumps({"version": 20, "domains": ["a.allowed.test", "b.other.test"]}))
    os.rename(tmp, cfg / "whitelist.json")
    world.wait_status("b.other.test", 200)
    with open(cfg / "whitelist.json", "w") as f:  # truncate, then write
        f.write(json.dumps({"version": 21, "domains": ["a.allowed.test", "c.test"]}))
    world.wait_status("c.test", 200)
    world.wait_status("b.other.test", 403)
