"""The products' credential scheme through real Squid (docs/agents.md): fps-auth as Squid's
basic-auth helper, keys rotated through a kubelet-style Secret swap with no reconfigure."""
import json
import ssl
import time
from datetime import datetime, timedelta, timezone

import pytest

from fpsharness import Prober, World, agent_credentials, curl, make_ca_and_cert, wait_for

NAMES = {"a.allowed.test": "127.0.0.1", "tls.allowed.test": "127.0.0.1"}


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def world():
    w = World("auth")
    w.set_hosts(NAMES)
    w.http = w.origin()
    ca, cert, key = make_ca_and_cert(w.dir / "pki", ["tls.allowed.test"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    w.ca = ca
    w.https = w.origin(name="https", ssl_ctx=ctx)
    now = datetime.now(timezone.utc)
    w.write_keys([{"id": "current", "key": w.API_KEY, "expires": iso(now + timedelta(days=30))},
                  {"id": "old", "key": "expired-key", "expires": iso(now - timedelta(days=1))}])
    yaml = w.yaml(auth=True, connect_ports=[w.https.port]).replace(
        "auth:\n  enabled: true\n", "auth:\n  enabled: true\n  credentials_ttl: 1\n  products: [ApexOne, DeepSec]\n")
    w.write_config(yaml, {"version": 1, "domains": ["a.allowed.test", "tls.allowed.test"]})
    w.start()
    yield w
    w.close()


def test_no_credentials_is_407(world):
    assert world.get("a.allowed.test")[0] == 407


def test_valid_credentials_get_and_connect_200(world):
    user, pw = agent_credentials(world.API_KEY)
    assert world.get("a.allowed.test", user=user, password=pw)[0] == 200
    assert world.get("a.allowed.test", user=user, password=pw.upper())[0] == 200  # uppercase hex accepted
    status, body = curl(f"https://tls.allowed.test:{world.https.port}/", world.proxy, user=user, password=pw,
                        cacert=world.ca)
    assert status == 200 and "origin https" in body


def test_wrong_password_expired_key_and_foreign_product_are_407(world):
    user, pw = agent_credentials(world.API_KEY)
    assert world.get("a.allowed.test", user=user, password="0" * 40)[0] == 407
    old_user, old_pw = agent_credentials("expired-key")
    assert world.get("a.allowed.test", user=old_user, password=old_pw)[0] == 407
    other, other_pw = agent_credentials(world.API_KEY, product="OtherProduct")
    assert world.get("a.allowed.test", user=other, password=other_pw)[0] == 407
    deep, deep_pw = agent_credentials(world.API_KEY, product="DeepSec")
    assert world.get("a.allowed.test", user=deep, password=deep_pw)[0] == 200


def test_no_secret_leaks_into_logs_or_world_readable_files(world):
    user, pw = agent_credentials(world.API_KEY)
    world.get("a.allowed.test", user=user, password=pw)
    texts = [world.log(), (world.state / "run" / "cache.log").read_text(errors="replace"),
             (world.state / "run" / "access.log").read_text(errors="replace")]
    for t in texts:
        assert world.API_KEY not in t and pw not in t
    keys = world.state / "secrets" / "apikeys.json"
    assert keys.stat().st_mode & 0o007 == 0  # not world-readable
    assert (world.state / "current" / "squid.conf").stat().st_mode & 0o007 == 0


def test_key_rotation_through_secret_swap_without_reconfigure(world):
    """A new key works within seconds, Squid is never reconfigured, no connection is refused,
    and the old key stops working once it expires."""
    squid_pid = world.squid_pid()
    cache_log = world.state / "run" / "cache.log"
    reconfigures_before = cache_log.read_text().count("Reconfiguring Squid Cache")
    user, pw = agent_credentials(world.API_KEY)
    prober = Prober(world.port, "a.allowed.test", world.http.port)
    prober.start()
    new_key = "k-2026-12-rotated"
    soon = datetime.now(timezone.utc) + timedelta(seconds=6)
    world.write_keys([{"id": "current", "key": world.API_KEY, "expires": iso(soon)},
                      {"id": "next", "key": new_key, "expires": iso(soon + timedelta(days=30))}])
    new_user, new_pw = agent_credentials(new_key)
    world.wait_status("a.allowed.test", 200, user=new_user, password=new_pw, timeout=15)
    # The old key keeps working until its expiry, then (after credentials_ttl) stops.
    assert world.get("a.allowed.test", user=user, password=pw)[0] == 200
    world.wait_status("a.allowed.test", 407, user=user, password=pw, timeout=30)
    assert world.get("a.allowed.test", user=new_user, password=new_pw)[0] == 200
    results = prober.finish()
    # The prober sends no credentials: every answer is a 407, never a refused or reset connection.
    assert set(results) == {"407"}, results
    assert world.squid_pid() == squid_pid
    assert cache_log.read_text().count("Reconfiguring Squid Cache") == reconfigures_before


def test_corrupt_keys_file_keeps_the_previous_keys(world):
    user, pw = agent_credentials(world.API_KEY)
    world.kubelet_update(world.secrets, {"apikeys.json": "{\"keys\": [ this is not json"})
    wait_for(lambda: "agents keep the last good keys" in world.log(), what="the keys error")
    assert world.get("a.allowed.test", user=user, password=pw)[0] == 200
