"""Clock check (docs/operations.md): the system clock against the Date of a trusted
reference's answer. The reference here is an upstream proxy whose clock is a month ahead:
/status "clock", fps_clock_skew_seconds, the status page, the log and a diagnose problem
line; then the reference agrees with us and the check says ok."""
import email.utils
import http.server
import json
import subprocess
import threading
import time

import pytest

from fpsharness import BIN, SERVE_POLL, World, free_port, wait_for
from test_admin import metrics, request, status_json

MONTH = 30 * 86400


class FakeProxy(http.server.ThreadingHTTPServer):
    """Answers every request 407, with a Date offset seconds from ours."""
    daemon_threads = True

    def __init__(self):
        self.offset = MONTH
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def date_time_string(self, timestamp=None):
                return email.utils.formatdate(time.time() + outer.offset, usegmt=True)

            def answer(self):
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            do_GET = do_HEAD = do_CONNECT = answer

            def log_message(self, *a):
                pass
        super().__init__(("127.0.0.1", 0), H)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(SERVE_POLL,), daemon=True).start()


@pytest.fixture
def world():
    ref = FakeProxy()
    w = World("clock")
    w.ref = ref
    # diagnose's proxy self-test asks for a.allowed.test: named in the hosts file, it is answered
    # at once (no DNS server answers here: Squid would wait past the self-test's 15 s).
    w.set_hosts({"a.allowed.test": "127.0.0.1"})
    w.origin()
    w.extra = f"upstream:\n  host: 127.0.0.1\n  port: {ref.port}\n"
    w.write_config(w.yaml(extra=w.extra), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        yield w
    finally:
        w.close()
        ref.shutdown()
        ref.server_close()


def test_a_reference_a_month_ahead_is_reported_everywhere(world):
    wait_for(lambda: status_json(world.admin_port)["clock"]["checked"] is not None, 30, what="a clock check")
    c = status_json(world.admin_port)["clock"]
    assert c["reference"] == f"upstream 127.0.0.1:{world.ref.port}"
    assert abs(c["skew_seconds"] + MONTH) <= 2, c  # we are a month behind the reference
    assert c["ok"] is False and c["error"] is None and c["reference_date"].endswith("GMT")
    assert abs(metrics(world.admin_port)["fps_clock_skew_seconds"] + MONTH) <= 2
    assert "judged by this clock" in world.log()
    page = request(world.admin_port, "/")[2].decode()
    assert "WRONG" in page and "judged by this clock" in page
    p = subprocess.run([str(BIN / "fps-controller"), "diagnose", "--config-dir", str(world.config), "--json"],
                       capture_output=True, text=True, timeout=120)
    check = next(k for k in json.loads(p.stdout)["checks"] if k["check"] == "clock")
    assert p.returncode == 1 and check["status"] == "fail"
    assert "behind" in check["detail"] and "API keys and certificates are judged by this clock" in check["detail"]
    p = subprocess.run([str(BIN / "fps-controller"), "diagnose", "--config-dir", str(world.config)],
                       capture_output=True, text=True, timeout=120)
    assert any(l.startswith("[FAIL] clock") for l in p.stdout.splitlines()), p.stdout


def test_a_reference_that_agrees_says_ok(world):
    wait_for(lambda: status_json(world.admin_port)["clock"]["ok"] is False, 30, what="the first check")
    world.ref.offset = 0
    # A reload kicks the prober, which checks the clock again at once.
    world.write_config(world.yaml(extra=world.extra), {"version": 2, "domains": ["a.allowed.test"]})
    wait_for(lambda: status_json(world.admin_port)["clock"]["ok"] is True, 30, what="clock ok")
    assert "fps_clock_skew_seconds" in metrics(world.admin_port)


def test_without_a_reference_the_clock_is_unknown():
    w = World("clock-none")
    w.origin()
    w.write_config(w.yaml(), {"version": 1, "domains": ["a.allowed.test"]})
    w.admin_port = free_port()
    try:
        w.start(extra_args=["--admin", f"127.0.0.1:{w.admin_port}"])
        c = status_json(w.admin_port)["clock"]
        assert c["ok"] is None and c["skew_seconds"] is None
        assert "fps_clock_skew_seconds" not in metrics(w.admin_port)
    finally:
        w.close()
