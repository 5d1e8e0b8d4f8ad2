"""The update cache (fps.yaml `cache:`, docs/operations.md "The update cache"): one origin
fetch for a storm of agents, resumes served from the cache, a slow or departing agent that
holds nobody back, HTTP's shared-cache rules, policy before the cache, and the cache seen in
/status and /metrics. Real Squid, real origins, real clients (curl, wget, raw sockets)."""
import json
import subprocess
import uuid

import pytest

from cacheharness import CountingOrigin, package, proxy_auth, storm
from fpsharness import BIN, World, agent_credentials, free_port, wait_for
from test_admin import metrics, request, status_json

HOST = "updates.vendor.test"
OTHER = "files.vendor.test"
CACHE = "cache:\n  memory_mb: 128\n  disk_mb: 256\n  max_object_mb: 64\n"


def fresh(path="/pkg", **q):
    """A URL path no earlier test used, with the origin's query knobs."""
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    return f"{path}-{uuid.uuid4().hex[:10]}" + (f"?{qs}" if qs else "")


def make_world(name, apply="live", extra=CACHE, mode=None, workers=None):
    w = World(name)
    w.set_hosts({HOST: "127.0.0.1", OTHER: "127.0.0.1"})
    w.co = CountingOrigin()
    w.origins.append(w.co)
    w.write_keys()
    y = w.yaml(auth=True, apply=apply) + extra
    if mode:
        y = y.replace("whitelist:\n", f"whitelist:\n  mode: {mode}\n")
    if workers:
        y = y.replace("proxy:\n", f"proxy:\n  workers: {workers}\n")
    w.write_config(y, {"version": 1, "domains": [HOST, OTHER]})
    w.admin_port = free_port()
    return w


@pytest.fixture(scope="module")
def world():
    w = make_world("cache")
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()


def creds(w, product="ApexOne", guid="1b4e28ba-2fa1-11d2-883f-0016d3cca427"):
    return agent_credentials(w.API_KEY, product, guid)


def auth_header(w, **kw):
    return {"Proxy-Authorization": proxy_auth(*creds(w, **kw))}


def url(w, path):
    return f"http://{HOST}:{w.co.port}{path}"


def curl_get(w, path, extra=(), user=None):
    u, p = user or creds(w)
    r = subprocess.run(["curl", "-sS", "-o", "-", "-D", "/dev/stderr", "--max-time", "30", "-x", w.proxy,
                        "--proxy-user", f"{u}:{p}", *extra, url(w, path)], capture_output=True)
    status = int(r.stderr.split(b"\r\n")[0].split()[1]) if r.stderr.startswith(b"HTTP/") else 0
    headers = {}
    for line in r.stderr.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if v:
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status, headers, r.stdout


def access_log_tags(w, path):
    log = (w.state / "run" / "access.log").read_text(errors="replace")
    return [line.split()[3] for line in log.splitlines() if path.split("?")[0] in line]


# ---- item 1: one origin fetch for many agents -------------------------------------------------

def test_storm_of_200_agents_makes_one_origin_fetch(world):
    size = 3 << 20
    path = fresh(size=size, pace="0.004")  # the fetch lasts ~0.2 s: agents keep joining it
    _, sha = package(path.split("?")[0], size)
    results = storm(world.port, url(world, path), 200, headers=auth_header(world))
    bad = [r for r in results if isinstance(r, Exception) or r[0] != 200 or r[2] != sha]
    assert not bad, f"{len(bad)} agents failed, e.g. {bad[:3]}"
    copies = world.co.bytes_for(path.split("?")[0]) / size
    assert copies <= 1.05, f"origin sent {copies:.2f} copies; tags {sorted(set(access_log_tags(world, path)))}"
    # and the next agent, later, is a hit: the origin sends nothing more
    status, _, body = curl_get(world, path)
    assert status == 200 and len(body) == size
    assert world.co.bytes_for(path.split("?")[0]) / size <= 1.05


# ---- item 2: resume and partial requests ------------------------------------------------------

def test_resume_of_a_kept_object_is_served_from_the_cache(world, tmp_path):
    size = 1 << 20
    path = fresh(size=size)
    body, sha = package(path.split("?")[0], size)
    assert curl_get(world, path)[0] == 200
    assert world.co.hits(path.split("?")[0]) == 1
    u, p = creds(world)
    part = tmp_path / "curl.part"
    part.write_bytes(body[:300000])
    r = subprocess.run(["curl", "-sS", "-C", "-", "-o", str(part), "-x", world.proxy, "--proxy-user", f"{u}:{p}",
                        "-w", "%{http_code}", url(world, path)], capture_output=True, text=True)
    assert r.stdout == "206" and part.read_bytes() == body
    wpart = tmp_path / "wget.part"
    wpart.write_bytes(body[:123457])
    env = {"http_proxy": f"http://{u}:{p}@{world.proxy}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["wget", "-q", "-c", "-O", str(wpart), url(world, path)], env=env, capture_output=True)
    assert r.returncode == 0 and wpart.read_bytes() == body
    assert world.co.hits(path.split("?")[0]) == 1  # both resumes came from the cache
    assert any("HIT" in t for t in access_log_tags(world, path))


def test_range_miss_fetches_the_whole_object_once(world):
    size = 1 << 20
    path = fresh(size=size)
    body, _ = package(path.split("?")[0], size)
    status, headers, got = curl_get(world, path, extra=("-r", "500000-"))
    assert status == 206 and got == body[500000:]
    reqs = [h for p, h in world.co.requests if p == path.split("?")[0]]
    assert len(reqs) == 1 and "Range" not in reqs[0]  # Squid asked for the whole object
    wait_for(lambda: curl_get(world, path, extra=("-r", "0-99"))[2] == body[:100], 10, what="partial hit")
    assert curl_get(world, path)[2] == body
    assert world.co.hits(path.split("?")[0]) == 1


# ---- item 3: a slow agent holds nobody back, a departing one aborts nothing -------------------

def test_slow_agent_does_not_hold_back_the_others(world):
    size = 4 << 20
    path = fresh(size=size)
    _, sha = package(path.split("?")[0], size)
    # one agent reading 16 KiB every 0.06 s (about 256 KB/s), and one that gives up after 200 KB
    results = storm(world.port, url(world, path), 10, headers=auth_header(world),
                    extra=[(0.06, None), (0.0, 200000)])
    fast, slow, quitter = results[:10], results[10], results[11]
    assert all(not isinstance(r, Exception) and r[2] == sha for r in fast), fast
    assert not isinstance(slow, Exception) and slow[2] == sha
    assert not isinstance(quitter, Exception) and quitter[3] >= 200000
    assert max(r[4] for r in fast) < slow[4]  # every fast agent finished before the slow one
    assert world.co.bytes_for(path.split("?")[0]) / size <= 1.05


# ---- item 4: HTTP's rules for a shared cache --------------------------------------------------

def test_private_and_no_store_answers_are_never_kept(world):
    for cc in ("private", "no-store", "private,max-age=3600"):
        path = fresh(size=1000, cc=cc)
        for _ in range(2):
            assert curl_get(world, path)[0] == 200
        assert world.co.hits(path.split("?")[0]) == 2, cc


def test_a_cookie_is_never_handed_to_another_agent(world):
    path = fresh(size=2 << 20, cookie=1, pace="0.01")
    other = creds(world, guid="00000000-0000-0000-0000-000000000002")
    # At once, so the others join the first one's fetch if anything lets them. Squid 5.7 hands
    # the initiator's Set-Cookie to requests that joined its fetch (a race: about one storm in
    # four here), so FPS removes Set-Cookie from GET/HEAD answers while the cache is on.
    results = storm(world.port, url(world, path), 6, headers=auth_header(world))
    assert all(r[0] == 200 for r in results), [r[0] for r in results]
    cookies = [r[1].get("set-cookie") for r in results]
    assert cookies == [None] * 6, cookies
    before = world.co.hits(path.split("?")[0])
    assert 1 <= before <= 6
    # ... and such an answer is never kept: the next agent's request goes to the origin.
    status, headers, _ = curl_get(world, path, user=other)
    assert status == 200 and not headers.get("set-cookie")
    assert world.co.hits(path.split("?")[0]) == before + 1


def test_origin_authorization_is_reused_only_where_the_origin_allows(world):
    priv = fresh(size=1000, needauth=1)
    pub = fresh(size=1000, needauth=1, cc="public,max-age=3600")
    for path in (priv, pub):
        for _ in range(2):
            assert curl_get(world, path, extra=("-H", "Authorization: Basic b3JpZ2luOnNlY3JldA=="))[0] == 200
    assert world.co.hits(priv.split("?")[0]) == 2
    assert world.co.hits(pub.split("?")[0]) == 1
    # and without credentials of its own, an agent does not get the protected answer from the cache
    assert curl_get(world, priv)[0] == 401


def test_proxy_credentials_are_not_part_of_the_key(world):
    path = fresh(size=5000)
    a = creds(world, product="ApexOne", guid="00000000-0000-0000-0000-00000000000a")
    b = creds(world, product="DeepSec", guid="00000000-0000-0000-0000-00000000000b")
    assert curl_get(world, path, user=a)[0] == 200
    assert curl_get(world, path, user=b)[0] == 200
    assert world.co.hits(path.split("?")[0]) == 1
    # and the origin never sees them
    assert all("Proxy-Authorization" not in h for p, h in world.co.requests)


def test_vary_keeps_one_answer_per_header_value(world):
    path = fresh(size=3000, vary="Accept-Language")
    p0 = path.split("?")[0]
    en, de = package(p0 + "|en", 3000)[0], package(p0 + "|de", 3000)[0]
    assert curl_get(world, path, extra=("-H", "Accept-Language: en"))[2] == en
    assert curl_get(world, path, extra=("-H", "Accept-Language: de"))[2] == de
    assert curl_get(world, path, extra=("-H", "Accept-Language: en"))[2] == en
    assert curl_get(world, path, extra=("-H", "Accept-Language: de"))[2] == de
    # Squid 5.7 with collapsed_forwarding keeps no Vary answer (docs/squid-facts.md): every
    # agent still gets its own variant, never another's.
    assert world.co.hits(p0) <= 4


# ---- item 5: policy first, every time ---------------------------------------------------------

def check_policy_first(w):
    path = fresh(size=10000)
    assert curl_get(w, path)[0] == 200
    assert curl_get(w, path)[0] == 200
    assert w.co.hits(path.split("?")[0]) == 1  # kept
    # no credentials: 407, and not the kept object
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", w.proxy, url(w, path)],
                       capture_output=True, text=True)
    assert r.stdout == "407"
    # the host leaves the whitelist: the kept object is refused once the edit applies
    w.write_config((w.config / "fps.yaml").read_text(), {"version": 2, "domains": [OTHER]})
    wait_for(lambda: curl_get(w, path)[0] == 403, 15, what="403 for the kept object")
    assert curl_get(w, path)[0] == 403
    w.write_config((w.config / "fps.yaml").read_text(), {"version": 3, "domains": [HOST, OTHER]})
    wait_for(lambda: curl_get(w, path)[0] == 200, 15, what="200 again")
    assert w.co.hits(path.split("?")[0]) == 1


def test_policy_is_checked_before_the_cache_live(world):
    check_policy_first(world)


def test_policy_is_checked_before_the_cache_reconfigure_mode():
    w = make_world("cache-reconf", apply="reconfigure")
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        check_policy_first(w)
    finally:
        w.close()


def test_report_mode_still_checks_credentials_and_networks_on_kept_objects():
    w = make_world("cache-report", mode="report")
    try:
        w.set_hosts({HOST: "127.0.0.1", OTHER: "127.0.0.1", "inside.vendor.test": "127.0.0.99"})
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        path = fresh(size=10000)
        assert curl_get(w, path)[0] == 200 and curl_get(w, path)[0] == 200
        assert w.co.hits(path.split("?")[0]) == 1
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", w.proxy, url(w, path)],
                           capture_output=True, text=True)
        assert r.stdout == "407"
        # an unlisted host is allowed in report mode, a blocked network is not
        u, p = creds(w)
        blocked = f"http://inside.vendor.test:{w.co.port}{path}"
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", w.proxy, "--proxy-user",
                            f"{u}:{p}", blocked], capture_output=True, text=True)
        assert r.stdout == "403"
    finally:
        w.close()


# ---- item 9: seen -----------------------------------------------------------------------------

def test_status_and_metrics_show_the_cache(world):
    path = fresh(size=200000)
    for _ in range(3):
        assert curl_get(world, path)[0] == 200

    def seen():
        c = status_json(world.admin_port)["cache"]
        return c if c["requests"]["hit"] >= 1 and c["bytes"]["from_cache"] >= 190000 else None  # KiB resolution
    c = wait_for(seen, 15, what="cache counters in /status")
    assert c["enabled"] is True and c["memory_mb"] == 128 and c["disk_mb"] == 256
    assert c["requests"]["miss"] >= 1 and c["bytes"]["from_origin"] >= 190000 and c["objects"] >= 1
    assert c["used_bytes"] > 0
    m = metrics(world.admin_port)
    assert m['fps_cache_requests_total{result="hit"}'] >= 1
    assert m['fps_cache_bytes_total{source="cache"}'] >= 190000
    assert m["fps_cache_used_bytes"] > 0
    code, _, page = request(world.admin_port, "/")
    assert code == 200 and b'id="cache-saved"' in page and b'id="cache-hit-ratio"' in page


def test_no_cache_section_keeps_nothing():
    w = make_world("nocache", extra="")
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        assert "cache deny all" in w.active_conf() and "cache_dir" not in w.active_conf()
        path = fresh(size=1000)
        assert curl_get(w, path)[0] == 200 and curl_get(w, path)[0] == 200
        assert w.co.hits(path.split("?")[0]) == 2
        assert status_json(w.admin_port)["cache"]["enabled"] is False
        assert not (w.state / "cache").exists()
    finally:
        w.close()


# ---- item 10: purge ---------------------------------------------------------------------------

def test_purge_removes_a_kept_object(world):
    path = fresh(size=5000)
    assert curl_get(world, path)[0] == 200 and curl_get(world, path)[0] == 200
    assert world.co.hits(path.split("?")[0]) == 1
    p = subprocess.run([str(BIN / "fps-controller"), "purge", "--admin", f"127.0.0.1:{world.admin_port}",
                        url(world, path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "purged" in p.stdout
    assert curl_get(world, path)[0] == 200
    assert world.co.hits(path.split("?")[0]) == 2
    p = subprocess.run([str(BIN / "fps-controller"), "purge", "--admin", f"127.0.0.1:{world.admin_port}",
                        url(world, fresh())], capture_output=True, text=True)
    assert p.returncode == 1 and "not in the cache" in p.stdout
    assert "purge" in world.log() and metrics(world.admin_port)['fps_cache_purges_total{result="purged"}'] >= 1
    # the agents' port never accepts PURGE
    u, pw = creds(world)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PURGE", "-x", world.proxy,
                        "--proxy-user", f"{u}:{pw}", url(world, path)], capture_output=True, text=True)
    assert r.stdout == "403"
    assert world.co.hits(path.split("?")[0]) == 2


def test_explain_url_says_whether_it_is_kept(world):
    path = fresh(size=5000)
    admin = f"127.0.0.1:{world.admin_port}"

    def explain(u, *extra):
        return subprocess.run([str(BIN / "fps-controller"), "explain", "--admin", admin, *extra, u],
                              capture_output=True, text=True)
    p = explain(url(world, path), "--json")
    r = json.loads(p.stdout)
    assert p.returncode == 0 and r["verdict"] == "allowed" and r["cache"]["kept"] is False
    assert curl_get(world, path)[0] == 200
    r = json.loads(explain(url(world, path), "--json").stdout)
    assert r["cache"]["kept"] is True and r["url"] == url(world, path)
    assert "cache: kept" in explain(url(world, path)).stdout
    assert world.co.hits(path.split("?")[0]) == 1  # asking did not fetch
    # a URL whose host is not whitelisted: denied, and the lookup still never fetches
    p = explain(f"http://not-listed.vendor.test:{world.co.port}/x", "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["cache"]["kept"] is False
