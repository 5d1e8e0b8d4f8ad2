"""A large upload answered before its body was read (403: host not whitelisted; 407: no
credentials), sent by the HTTP clients Debian packages, without `Expect: 100-continue`.

Squid 5.7 answers such a request at once but, on a keep-alive connection, stops reading the
body and waits for the next request: the sender blocks until client_idle_pconn_timeout
(120 s). FPS renders `persistent_connection_after_error off`: Squid closes after the answer,
so each client reports the status, or, when the close reaches it while it is still sending,
a reset (docs/operations.md, "Under load"). Either comes at once; a hang is the failure.
"""
import base64
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fpsharness import World, agent_credentials

HERE = Path(__file__).resolve().parent
BODY = 5 << 20
HANG_GUARD = 60  # s: only so that a hanging client fails the test instead of blocking it
RESET = "reset"  # the connection was closed under the sender: a clear, immediate error


@pytest.fixture(scope="module")
def world():
    w = World("upload")
    try:
        w.set_hosts({"ok.upload.test": "127.0.0.1", "no.upload.test": "127.0.0.1"})
        w.http = w.origin(name="http")
        w.write_keys()
        w.write_config(w.yaml(auth=True), {"version": 1, "domains": ["ok.upload.test"]})
        w.start()
        w.user, w.password = agent_credentials(w.API_KEY)
        w.body = w.dir / "body"
        w.body.write_bytes(b"z" * BODY)
        yield w
    finally:
        w.close()


def run(argv):
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        return "hang", time.monotonic() - t0, ""
    return p.stdout.strip(), time.monotonic() - t0, p.stderr


def classify_exception(text):
    low = text.lower()
    if any(s in low for s in ("reset", "broken pipe", "brokenpipe", "header parser received no bytes",
                              "connection closed", "remotedisconnected", "aborted")):
        return RESET
    return text


PY_REQUESTS = """
import sys, requests
url, proxy = sys.argv[1], sys.argv[2]
try:
    r = requests.post(url, data=open(sys.argv[3], 'rb').read(), proxies={'http': proxy}, timeout=50)
    print(r.status_code)
except Exception as e:
    print(type(e).__name__, e)
"""

PY_URLLIB = """
import sys, base64, urllib.request, urllib.error
url, proxy, body = sys.argv[1], sys.argv[2], open(sys.argv[3], 'rb').read()
req = urllib.request.Request(url, data=body, method='POST')
if len(sys.argv) > 4:
    req.add_header('Proxy-Authorization', 'Basic ' + sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': proxy}))
try:
    print(opener.open(req, timeout=50).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(type(e).__name__, e)
"""


def client_requests(w, url, creds):
    proxy = f"http://{w.user}:{w.password}@{w.proxy}" if creds else f"http://{w.proxy}"
    out, took, err = run(["/usr/bin/python3", "-c", PY_REQUESTS, url, proxy, str(w.body)])
    return {"requests": out if out.isdigit() or out == "hang" else classify_exception(out)}, took


def client_urllib(w, url, creds):
    extra = [base64.b64encode(f"{w.user}:{w.password}".encode()).decode()] if creds else []
    out, took, err = run(["/usr/bin/python3", "-c", PY_URLLIB, url, f"http://{w.proxy}", str(w.body)] + extra)
    return {"urllib": out if out.isdigit() or out == "hang" else classify_exception(out)}, took


def client_wget(w, url, creds):
    creds_args = ["--proxy-user", w.user, "--proxy-password", w.password] if creds else []
    out, took, err = run(["wget", "-S", "-O", "/dev/null", "--tries=1", f"--timeout={HANG_GUARD - 10}",
                          "-e", "use_proxy=yes", "-e", f"http_proxy=http://{w.proxy}",
                          f"--post-file={w.body}"] + creds_args + [url])
    if out == "hang":
        return {"wget": "hang"}, took
    statuses = [line.split()[1] for line in err.splitlines() if line.strip().startswith("HTTP/1.")]
    # wget prints "Giving up." when the connection broke while it was sending
    return {"wget": statuses[-1] if statuses else (RESET if "Giving up" in err else err[-300:])}, took


def client_java(w, url, creds):
    if not shutil.which("java"):
        pytest.skip("java (openjdk-17-jdk-headless) not installed")
    extra = [w.user, w.password] if creds else []
    out, took, err = run(["java", str(HERE / "clients" / "Upload.java"), "127.0.0.1", str(w.port), url] + extra)
    if out == "hang":
        return {"java HttpClient": "hang", "java HttpURLConnection": "hang"}, took
    got = {}
    for line in out.splitlines():
        api, _, res = line.partition(" ")
        name = {"httpclient": "java HttpClient", "urlconnection": "java HttpURLConnection"}[api]
        got[name] = res if res.isdigit() else classify_exception(res)
    if len(got) != 2:
        got["java output"] = out + err[-500:]
    return got, took


CLIENTS = {"requests": client_requests, "urllib": client_urllib, "wget": client_wget, "java": client_java}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("case", ["403-not-whitelisted", "407-no-credentials"])
def test_upload_answered_early_is_seen_at_once(world, client, case):
    host, creds, expect = {"403-not-whitelisted": ("no.upload.test", True, "403"),
                           "407-no-credentials": ("ok.upload.test", False, "407")}[case]
    url = f"http://{host}:{world.http.port}/upload"
    got, took = CLIENTS[client](world, url, creds)
    print("OUTCOME", case, got, f"{took:.2f}s")
    for name, outcome in got.items():
        assert outcome in (expect, RESET), f"{name}: {outcome!r} after {took:.1f}s (expected {expect} or a reset)"
    # the origin never saw the upload
    assert not any("/upload" in str(h) for h in world.http.hits)
