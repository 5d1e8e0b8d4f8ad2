# The update storm's own pieces (bench/README.md, "(14) update storm"): stormgen (the sanitizer
# build) against the real storm origin and raw-socket servers on loopback, the origin's counting,
# per-URL bodies and ranges, and the report's figures and target checks. Small and fast: a few
# dozen agents, bodies of a few hundred KiB, no timing thresholds.
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import storm_origin  # noqa: E402
from lib import stormreport  # noqa: E402

APIKEY = "storm-test-key-0123"
SIZE = 300 * 1024 + 17  # not a multiple of any chunk size


@pytest.fixture(scope="session")
def stormgen():
    path = os.environ.get("STORMGEN")
    if not path:
        subprocess.run(["make", "-s", "-C", str(BENCH), "asan"], check=True)
        path = str(ROOT / "build" / "bench" / "asan" / "stormgen")
    assert os.access(path, os.X_OK), path
    return path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def origin(tmp_path):
    """The storm origin in its own process, as the bench runs it; stopped on every path."""
    base = os.urandom(SIZE)
    f = tmp_path / "package.bin"
    f.write_bytes(base)
    port = free_port()
    p = subprocess.Popen([sys.executable, str(BENCH / "storm_origin.py"), "--port", str(port), "--file", str(f)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, "storm origin did not start"
                time.sleep(0.05)
        yield {"port": port, "base": base}
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def get(port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def stats(port):
    return json.loads(get(port, "/__stats")[2])


def run(stormgen, *args):
    p = subprocess.run([stormgen, "--deadline", "60", "--timeout", "20", "--json", "-", *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def sha(base, pkg_id):
    return hashlib.sha256(storm_origin.body_for(base, pkg_id)).hexdigest()


# ---- the origin ------------------------------------------------------------------------------------


def test_origin_gives_every_url_its_own_body_and_counts_what_it_sends(origin):
    port, base = origin["port"], origin["base"]
    s0 = stats(port)
    code, hdrs, a = get(port, "/pkg/one/package.bin")
    _, _, b = get(port, "/pkg/two/package.bin")
    assert code == 200 and len(a) == len(b) == SIZE
    assert a == storm_origin.body_for(base, "one") and b == storm_origin.body_for(base, "two") and a != b
    assert a[64:] == base[64:] and a.startswith(b"fps-storm-package id=one\n")
    assert "public" in hdrs["Cache-Control"] and hdrs["ETag"] and hdrs["Last-Modified"]
    s1 = stats(port)
    assert s1["requests"] - s0["requests"] == 2
    assert s1["body_bytes"] - s0["body_bytes"] == 2 * SIZE
    assert s1["paths"]["/pkg/one/package.bin"] == {"requests": 1, "body_bytes": SIZE}


def test_origin_answers_a_range_with_206_and_counts_only_the_range(origin):
    port, base = origin["port"], origin["base"]
    body = storm_origin.body_for(base, "r")
    s0 = stats(port)
    code, hdrs, part = get(port, "/pkg/r/package.bin", {"Range": "bytes=10-99"})  # across the id line
    assert code == 206 and part == body[10:100]
    assert hdrs["Content-Range"] == f"bytes 10-99/{SIZE}"
    code, _, tail = get(port, "/pkg/r/package.bin", {"Range": "bytes=-1000"})
    assert code == 206 and tail == body[-1000:]
    code, _, _ = get(port, "/pkg/r/package.bin", {"Range": f"bytes={SIZE}-"})
    assert code == 416
    assert stats(port)["body_bytes"] - s0["body_bytes"] == 90 + 1000


def test_origin_pacing_is_set_at_run_time_and_keeps_the_counts_exact(origin):
    port = origin["port"]
    assert get(port, "/__rate/50000000")[0] == 204
    assert stats(port)["rate"] == 50e6
    s0 = stats(port)
    code, _, body = get(port, "/pkg/paced/package.bin")
    assert code == 200 and body == storm_origin.body_for(origin["base"], "paced")
    assert stats(port)["body_bytes"] - s0["body_bytes"] == SIZE
    assert get(port, "/__rate/0")[0] == 204 and stats(port)["rate"] == 0


def test_parse_range_table():
    cases = [("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=90-500", (90, 99)),
             ("bytes=100-", "bad"), ("bytes=-0", "bad"), ("bytes=9-5", "bad"), ("bytes=0-1,5-6", None),
             ("items=0-1", None), ("", None)]
    for value, want in cases:
        assert storm_origin.parse_range(value, 100) == want, value


# ---- stormgen ------------------------------------------------------------------------------------


def test_every_agent_gets_the_whole_body_and_its_digest_is_checked(stormgen, origin):
    port, base = origin["port"], origin["base"]
    s0 = stats(port)
    r = run(stormgen, "--direct", "--agents", "25", "--url", f"http://127.0.0.1:{port}/pkg/d1/package.bin",
            "--sha256", sha(base, "d1"), "--size", str(SIZE))
    assert (r["ok"], r["failed"], r["body_bytes"]) == (25, 0, 25 * SIZE)
    assert r["agent"]["result"] == ["ok"] * 25 and r["agent"]["bytes"] == [SIZE] * 25
    assert all(0 < d <= r["last_done_s"] for d in r["agent"]["done_s"])
    assert stats(port)["body_bytes"] - s0["body_bytes"] == 25 * SIZE  # direct: one copy per agent


def test_a_wrong_body_is_a_failure_not_a_success(stormgen, origin):
    port, base = origin["port"], origin["base"]
    url = f"http://127.0.0.1:{port}/pkg/d2/package.bin"
    r = run(stormgen, "--direct", "--agents", "3", "--url", url, "--sha256", sha(base, "another-url"))
    assert r["results"] == {"sha256_mismatch": 3} and r["ok"] == 0
    r = run(stormgen, "--direct", "--agents", "2", "--url", url, "--size", str(SIZE + 1))
    assert r["results"] == {"size_mismatch": 2}
    r = run(stormgen, "--direct", "--agents", "2", "--url", f"http://127.0.0.1:{port}/nothing")
    assert r["results"] == {"status": 2} and r["status"] == {"404": 2}


def test_a_slow_reader_gets_every_byte_at_its_pace_and_is_marked(stormgen, origin):
    port, base = origin["port"], origin["base"]
    r = run(stormgen, "--direct", "--agents", "4", "--slow", "1", "--slow-rate", "1048576", "--url",
            f"http://127.0.0.1:{port}/pkg/s/package.bin", "--sha256", sha(base, "s"))
    assert r["ok"] == 4 and r["agent"]["slow"] == [1, 0, 0, 0]
    # 300 KiB at 1 MiB/s cannot take less than ~0.29 s (a lower bound, not a timing threshold)
    assert r["agent"]["done_s"][0] >= (SIZE - 4096) / 1048576 * 0.95


class OneShot:
    """A raw-socket server answering each connection with fixed bytes; keeps the request heads."""

    def __init__(self, answer):
        self.answer = answer
        self.heads = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
            self.heads.append(buf.decode("latin-1"))
            try:
                c.sendall(self.answer)
            finally:
                c.close()

    def close(self):
        self.sock.close()


def test_chunked_and_close_delimited_bodies_and_cut_ones(stormgen):
    body = b"abc" * 5000
    digest = hashlib.sha256(body).hexdigest()
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(body[i:i + 4000]), body[i:i + 4000]) for i in range(0, len(body), 4000)) + b"0\r\n\r\n"
    cases = [(chunked, {"ok": 2}), (b"HTTP/1.1 200 OK\r\n\r\n" + body, {"ok": 2}),
             (b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n" + body, {"eof": 2}),
             (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {"malformed": 2}),
             (b"garbage\r\n\r\n", {"malformed": 2})]
    for answer, want in cases:
        srv = OneShot(answer)
        try:
            r = run(stormgen, "--direct", "--agents", "2", "--url", f"http://127.0.0.1:{srv.port}/x", "--sha256", digest)
        finally:
            srv.close()
        assert r["results"] == want, answer[:60]


def test_through_a_proxy_each_agent_sends_its_own_credentials_once(stormgen):
    srv = OneShot(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    try:
        r = run(stormgen, "--proxy", f"127.0.0.1:{srv.port}", "--agents", "3", "--first-agent", "7", "--apikey", APIKEY,
                "--url", "http://pkg.example.test:8080/pkg/a/b.bin")
    finally:
        srv.close()
    assert r["ok"] == 3 and len(srv.heads) == 3
    users = set()
    for head in srv.heads:
        lines = head.split("\r\n")
        assert lines[0] == "GET http://pkg.example.test:8080/pkg/a/b.bin HTTP/1.1"
        hdr = dict(l.split(": ", 1) for l in lines[1:] if ": " in l)
        user, password = base64.b64decode(hdr["Proxy-Authorization"].split(" ", 1)[1]).decode().split(":", 1)
        assert password == hashlib.sha1((user + APIKEY).encode()).hexdigest()
        users.add(user)
    assert users == {f"ApexOne-{uuid.uuid5(uuid.NAMESPACE_URL, f'fps-loadgen:agent:{i}')}" for i in (7, 8, 9)}


def test_a_refused_connection_is_counted(stormgen):
    port = free_port()
    r = run(stormgen, "--direct", "--agents", "2", "--url", f"http://127.0.0.1:{port}/x")
    assert r["results"] == {"connect_refused": 2}


def test_bad_arguments_are_refused(stormgen):
    for args in (["--url", "https://x/"], ["--agents", "0", "--url", "http://x/"],
                 ["--agents", "2", "--slow", "3", "--url", "http://x/"], ["--url", "http://x/", "--sha256", "zz"]):
        p = subprocess.run([stormgen, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, args


# ---- the report --------------------------------------------------------------------------------------


def js(done, result=None, slow=None, size=1000, nbytes=None):
    n = len(done)
    result = result or ["ok"] * n
    counts = {}
    for x in result:
        counts[x] = counts.get(x, 0) + 1
    return {"agents": n, "slow": sum(slow or []), "slow_rate": 262144, "ok": counts.get("ok", 0),
            "failed": n - counts.get("ok", 0), "results": counts, "status": {"200": n},
            "agent": {"result": result, "done_s": done, "bytes": nbytes or [size] * n, "slow": slow or [0] * n,
                      "first_byte_s": [0.0] * n}}


def rec(target, phase, done, copies, size=10**7, **kw):
    r = stormreport.summarize(js(done, size=size, **kw), {"requests": 0, "body_bytes": 0},
                              {"requests": 1, "body_bytes": int(copies * size)}, size,
                              {"fps:squid": 2.0, "nginx": 1.0}, "fps:")
    r.update(target=target, phase=phase, label=f"storm-{target}-{phase}", origin_rate=0)
    return r


def test_summarize_figures():
    r = rec("fps-cache", "slow", [1.0, 2.0, 4.0, 3.0], 1.05, slow=[1, 0, 0, 0])
    assert r["origin_copies"] == 1.05 and r["time_to_all_s"] == 4.0 and r["mb_s"] == 10.0
    assert r["others_last_s"] == 4.0 and r["slow_done_s"] == 1.0 and r["p50_s"] == 2.0
    assert r["proxy_cpu_s"] == 2.0 and r["cpu_s_per_gb"] == 50.0  # 2 s for 0.04 GB
    lost = stormreport.summarize(js([1.0]), {"requests": 0, "body_bytes": 0}, {"requests": 1, "body_bytes": 1000},
                                 1000, {"fps:squid": 2.0, "fps:fps-acl": -0.3}, "fps:")
    assert lost["cpu_lost"] and lost["cpu_s_per_gb"] is None
    r = rec("x", "cold", [0.5, 1.0], 3, result=["ok", "timeout"])
    assert r["failed"] == 1 and r["results"] == {"timeout": 1} and r["time_to_all_s"] == 0.5


def test_checks_say_when_the_fps_cache_is_not_available():
    recs = [rec("nginx-direct", "direct", [0.1], 0),
            {"target": "fps-cache", "phase": "all", "available": False,
             "reason": stormreport.unsupported_reason("c/fps.yaml:3:1: unknown key 'cache' in 'top level'")},
            {"target": "fps-cache-auto", "phase": "all", "available": False, "reason": "no cache"},
            rec("fps-nocache", "cold", [1.0], 1)]
    checks = {name: (ok, how) for name, ok, how in stormreport.checks(recs)}
    copies = next(v for k, v in checks.items() if k.startswith("update storm: origin copies"))
    assert copies[0] is False and "unknown key 'cache'" in copies[1]
    hits = next(v for k, v in checks.items() if "cache hits" in k)
    assert hits[0] is False and "not measured" in hits[1]
    md = "\n".join(stormreport.tables(recs))
    assert "not available" in md and "FPS without `cache`" in md


def test_checks_measure_copies_failures_hits_and_the_slow_reader():
    recs = [rec("nginx-direct", "direct", [0.1], 0),
            rec("fps-cache", "cold", [1.0, 1.0], 1), rec("fps-cache-auto", "cold", [1.0, 1.0], 1.2),
            rec("fps-cache-auto", "warm", [0.15, 0.15], 0),
            rec("fps-cache", "slow-base", [1.0, 1.0, 1.0], 1),
            rec("fps-cache", "slow", [9.0, 1.6, 1.4], 1, slow=[1, 0, 0])]
    checks = {name: ok for name, ok, _ in stormreport.checks(recs)}
    assert checks[f"update storm: origin copies ≤ {stormreport.COPIES_GOAL} with the FPS cache (cold storm)"] is False
    assert checks["update storm: 0 failed agents through FPS, every storm"] is True
    hits = next(ok for name, ok in checks.items() if "cache hits" in name)
    assert hits is True  # 2000/0.15 vs 1000/0.1 bytes/s: 1.33x
    slow = next(ok for name, ok in checks.items() if name.startswith("slow reader") and "workers: 1" in name)
    assert slow is False  # 1.6 vs 1.0 s
    md = "\n".join(stormreport.tables(recs))
    assert "**1.20**" in md and "**1.60x**" in md


# ---- the targets' configurations, proven by the real programs ----------------------------------------


class _Env:
    """What hand_squid_conf needs of services.Env, in a test's directory."""

    def __init__(self, d):
        self.hosts = d / "hosts"
        self.hosts.write_text("127.0.0.1 origin.bench.test\n")

    def squid_base(self, d, port, name):
        from lib import services
        return services.Env.squid_base(self, d, port, name)


@pytest.mark.parametrize("rock", [False, True])
def test_hand_written_squid_configs_parse_and_order_the_object_limit_first(tmp_path, rock):
    from lib import storm
    d = tmp_path
    (d / "htpasswd").write_text("u:x\n")
    (d / "whitelist.txt").write_text("origin.bench.test\n")
    text = storm.hand_squid_conf(_Env(d), d, 3128, 8080, rock_mb=1024 if rock else None, max_object_mb=64)
    assert "cache deny all" not in text  # Squid's own cache defaults, or the update cache
    if rock:
        assert text.index("maximum_object_size 64 MB") < text.index("cache_dir rock")
        assert "collapsed_forwarding on" in text and "range_offset_limit none" in text
    else:
        assert "cache_dir" not in text and "collapsed_forwarding" not in text
    (d / "squid.conf").write_text(text)
    p = subprocess.run(["squid", "-k", "parse", "-f", str(d / "squid.conf")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "FATAL" not in p.stderr and "ERROR" not in p.stderr, p.stderr[-2000:]


# nginx is the benchmark's comparison (BENCH_PKGS, `make bench-deps`), not a test dependency: a fresh
# machine's `make test` has none (seen in tests/systemd/run.sh's Debian 12).
@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx not installed (make bench-deps installs it)")
def test_nginx_cache_config_is_accepted_by_nginx(tmp_path):
    from lib import storm
    (tmp_path / "www").mkdir()
    (tmp_path / "nginx.conf").write_text(storm.nginx_conf(tmp_path, tmp_path / "www", 18080, 18081, 18082, 1024))
    p = subprocess.run(["nginx", "-t", "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "proxy_cache_lock on" in (tmp_path / "nginx.conf").read_text()


def test_an_fps_build_that_refuses_the_cache_section_is_reported_not_run():
    """StormFps.unsupported() asks the build's own `fps-controller check`: a section or key the build
    does not know gives a reason (the table's "not available"), a config it accepts gives None."""
    if not os.access(ROOT / "build" / "fps-controller", os.X_OK):
        pytest.skip("build/fps-controller not built (make all)")
    from lib import services, storm
    env = services.Env(cloud_netns=False)
    try:
        f = storm.StormFps(env, "check", 8080, cache={"no_such_key_in_any_build": 1})
        why = f.unsupported()
        assert why and ("no_such_key_in_any_build" in why or "unknown key 'cache'" in why), why
        f.close()
        f = storm.StormFps(env, "check2", 8080, cache=None)
        assert f.unsupported() is None
        f.close()
    finally:
        env.close()


def test_squid_codes_name_each_storms_origin_fetches(tmp_path):
    from lib import storm
    log = tmp_path / "access.log"
    url = "http://origin.bench.test:1/pkg/{}/package.bin"
    lines = [f"1.0 5 127.0.0.1 TCP_MISS/200 100 GET {url.format('a-cold')} u HIER_DIRECT/127.0.0.1 -",
             f"1.0 5 127.0.0.1 TCP_MISS/200 100 GET {url.format('a-cold')} u HIER_NONE/- -",
             f"1.0 5 127.0.0.1 TCP_HIT/200 100 GET {url.format('a-cold')} u HIER_NONE/- -",
             f"1.0 5 127.0.0.1 TCP_HIT/200 100 GET {url.format('a-cold')} u HIER_NONE/- -",
             f"1.0 5 127.0.0.1 TCP_MISS/200 100 GET {url.format('b-cold')} u HIER_DIRECT/127.0.0.1 -",
             "1.0 0 127.0.0.1 TCP_DENIED/407 3441 GET http://x/ - HIER_NONE/- text/html"]
    log.write_text("\n".join(lines) + "\n")
    got = storm.squid_codes(log, "/pkg/a-cold/", 4)
    assert got == {"TCP_HIT/200 HIER_NONE": 2, "TCP_MISS/200 HIER_DIRECT": 1, "TCP_MISS/200 HIER_NONE": 1}
    assert list(got)[0] == "TCP_HIT/200 HIER_NONE"  # most first
    # Fewer lines than asked for (Squid's stdio buffer not flushed yet): what is there, after the wait.
    assert storm.squid_codes(log, "/pkg/b-cold/", 3, timeout=0.3) == {"TCP_MISS/200 HIER_DIRECT": 1}
    assert storm.squid_codes(tmp_path / "missing.log", "/pkg/a-cold/", 1) is None
    # A warm storm asks for the cold storm's URL again: only what came after its start counts.
    cold_end = log.stat().st_size
    with log.open("a") as f:
        f.write(f"1.0 5 127.0.0.1 TCP_MEM_HIT/200 100 GET {url.format('a-cold')} u HIER_NONE/- -\n")
    assert storm.squid_codes(log, "/pkg/a-cold/", 1, start=cold_end) == {"TCP_MEM_HIT/200 HIER_NONE": 1}
    r = rec("fps-cache", "cold", [1.0], 1)
    r["squid_codes"] = got
    md = "\n".join(stormreport.tables([r]))
    assert "- FPS with `cache`, `workers: 1`, cold: `TCP_HIT/200 HIER_NONE` 2, `TCP_MISS/200 HIER_DIRECT` 1" in md
