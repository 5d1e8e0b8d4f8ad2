"""The status page (GET / on the admin port, docs/operations.md) rendered by a real browser:
Debian's chromium, headless, loads it from a running stack after real denials and a rejected
configuration change; the test reads the rendered DOM and keeps a screenshot."""
import html.parser
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fpsharness import ROOT, World, agent_credentials, free_port, wait_for
from test_admin import request, status_json

CHROMIUM = shutil.which("chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium', "
                                                         "listed in the Makefile's DEB_PKGS)")


class Dom(html.parser.HTMLParser):
    """Text by element id, rows of the denied table, and every src/href seen."""

    def __init__(self):
        super().__init__()
        self.by_id, self.stack, self.refs, self.denied_rows, self.meta_refresh = {}, [], [], [], None
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.refs.append(a[k])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.meta_refresh = a.get("content")
        if tag == "tr" and a.get("class") == "denied-row":
            self._row = []
        if tag in ("br", "meta", "link", "img", "input"):
            return
        self.stack.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag in ("br", "meta", "link", "img", "input"):
            return
        if tag == "tr" and self._row is not None:
            self.denied_rows.append(self._row)
            self._row = None
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for i in self.stack:
            if i:
                self.by_id[i] = self.by_id.get(i, "") + data
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def chromium(url, *mode):
    profile = tempfile.mkdtemp(prefix="fps-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1280,1600", *mode, url],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def world():
    w = World("statuspage")
    w.set_hosts({"a.allowed.test": "127.0.0.1"})
    w.http = w.origin()
    w.write_keys()
    w.write_config(w.yaml(auth=True), {"version": 3, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()


def test_status_page_in_a_real_browser(world):
    user, pw = agent_credentials(world.API_KEY)
    for _ in range(2):
        assert world.get("needed.vendor.test", user=user, password=pw)[0] == 403
    assert world.get("other.vendor.test", user=user, password=pw)[0] == 403
    wait_for(lambda: status_json(world.admin_port)["denied"]["total"] == 3, 15, what="3 denials")
    # A broken whitelist.json: rejected, the previous generation stays, the page shows where.
    world.write_config(world.yaml(auth=True), raw_whitelist='{"version": 4,\n "domains": [1, }')
    wait_for(lambda: status_json(world.admin_port)["last_reload"]["result"] == "failure", 15,
             what="the failed reload")
    s = status_json(world.admin_port)

    code, headers, body = request(world.admin_port, "/")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]

    url = f"http://127.0.0.1:{world.admin_port}/"
    p = chromium(url, "--dump-dom")
    assert p.returncode == 0, p.stderr[-2000:]
    dom = Dom()
    dom.feed(p.stdout)
    assert "generation" in dom.by_id, f"not the status page: {p.stdout[:1500]!r}\nstderr: {p.stderr[-1500:]}"
    assert dom.by_id["generation"].strip() == str(s["generation"])
    assert dom.by_id["whitelist-version"].strip() == "3"
    assert dom.by_id["mode"].strip() == "enforce"
    assert "serving" in dom.by_id["ready"]
    assert "up" in dom.by_id["child-squid"] and str(s["children"]["squid"]["pid"]) in dom.by_id["child-squid"]
    assert "not configured" in dom.by_id["path-tunnel"] and "not configured" in dom.by_id["path-upstream"]
    assert "1 valid of 1" in dom.by_id["keys"]
    assert re.search(r"whitelist\.json:2:\d+", dom.by_id["last-error"]), dom.by_id["last-error"]
    assert "3 denied requests to 2 destinations" in dom.by_id["denied-summary"]
    assert dom.denied_rows[0][:3] == ["2", "needed.vendor.test", str(world.http.port)]
    assert dom.denied_rows[0][3] == "ApexOne"
    assert json.loads(dom.by_id["fragment"]) == {"domains": ["needed.vendor.test", "other.vendor.test"]}
    assert dom.meta_refresh == "5"  # it refreshes itself
    assert all(not re.match(r"^[a-z]+:", r) for r in dom.refs), dom.refs  # nothing from elsewhere

    shot = world.dir / "statuspage.png"
    p = chromium(url, f"--screenshot={shot}")
    assert p.returncode == 0 and shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the world dir goes with the world: keep a copy
    shutil.copy(shot, ARTIFACTS / "statuspage.png")


def test_page_escapes_what_it_shows(world):
    """A host is normalized before it is counted, but the page escapes everything anyway:
    a rejected entry full of markup is shown as text."""
    world.write_config(world.yaml(auth=True), {"version": 5, "domains": ["a.allowed.test", "<b>x</b>"]})
    wait_for(lambda: status_json(world.admin_port)["rejected"]["count"] == 1, 15, what="the rejected entry")
    world.write_config(world.yaml(auth=True), raw_whitelist='{"version": "<script>alert(1)</script>"}')
    wait_for(lambda: status_json(world.admin_port)["last_reload"]["result"] == "failure", 15, what="failure")
    body = request(world.admin_port, "/")[2].decode()
    assert "<script>alert" not in body
    assert body.count("<script>") == 1  # only the page's own copy button
