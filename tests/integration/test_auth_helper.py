"""fps-auth driven over pipes exactly as Squid drives it: channel IDs, hostile lines (64 KiB,
NUL bytes, no final newline), and API keys rotated in a Kubernetes-style Secret mount.

The binary comes from $FPS_BIN_DIR (the Makefile passes build/asan), default <repo>/build.
"""

import hashlib
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FPS_AUTH = Path(os.environ.get("FPS_BIN_DIR", ROOT / "build")) / "fps-auth"

USER = "ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
KEY1 = "k2026-11-first-secret"
KEY2 = "k2026-12-second-secret"
FUTURE = "2099-01-01T00:00:00Z"
PAST = "2001-01-01T00:00:00Z"
DEADLINE = 15.0  # seconds; the helper checks the keys file about once a second


def password(user, key):
    return hashlib.sha1((user + key).encode()).hexdigest()


def keys_json(*keys):
    """keys: (id, key, expires) tuples."""
    items = ",".join('{"id":"%s","key":"%s","expires":"%s"}' % k for k in keys)
    return '{"keys":[%s]}\n' % items


class SecretMount:
    """A directory updated the way the kubelet updates a Secret volume: the files live in a
    timestamped directory, `..data` points at it, and the visible names are symlinks through
    `..data`. An update writes a new directory, points `..data_tmp` at it and renames that over
    `..data` (atomic), then removes the old directory."""

    def __init__(self, path):
        self.path = path
        self.gen = 0
        self.current = None

    def publish(self, files):
        self.gen += 1
        new = self.path / ("..2026_11_24_01_00_%02d.%d" % (self.gen, os.getpid()))
        new.mkdir()
        for name, text in files.items():
            (new / name).write_text(text)
        tmp = self.path / "..data_tmp"
        os.symlink(new.name, tmp)
        os.rename(tmp, self.path / "..data")
        for name in files:
            visible = self.path / name
            if not visible.is_symlink():
                os.symlink("..data/" + name, visible)
        if self.current is not None:
            for f in self.current.iterdir():
                f.unlink()
            self.current.rmdir()
        self.current = new

    def keys_path(self):
        return self.path / "apikeys.json"


class Helper:
    """One fps-auth process; stderr (Squid's cache.log) goes to a file the test reads."""

    def __init__(self, keys, *args, log):
        self.log = log
        self.proc = subprocess.Popen(
            [str(FPS_AUTH), "--keys", str(keys), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),
        )
        self.buf = b""

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout=10.0):
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail("no reply from fps-auth within %.0fs (have %r)" % (timeout, self.buf))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail("fps-auth closed stdout (rc %s), have %r" % (self.proc.poll(), self.buf))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def ask(self, line):
        self.send(line.encode() + b"\n")
        return self.readline()

    def stderr(self):
        return self.log.read_text(errors="replace")

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=10)
        rest = self.proc.stdout.read()
        self.proc.stdout.close()
        return rc, self.buf + rest


def poll_until(what, check, deadline=DEADLINE):
    """Repeats check() until it returns true or the deadline passes. The short pause between
    attempts only paces the loop; the outcome is decided by check() alone."""
    end = time.monotonic() + deadline
    while True:
        if check():
            return
        if time.monotonic() > end:
            pytest.fail("timed out after %.0fs waiting for %s" % (deadline, what))
        time.sleep(0.02)


@pytest.fixture
def mount(tmp_path):
    m = SecretMount(tmp_path / "secrets")
    m.path.mkdir()
    m.publish({"apikeys.json": keys_json(("2026-11", KEY1, FUTURE))})
    return m


@pytest.fixture
def helper(mount, tmp_path):
    h = Helper(mount.keys_path(), log=tmp_path / "cache.log")
    yield h
    if h.proc.poll() is None:
        h.close()


def assert_no_secrets(text):
    for secret in (KEY1, KEY2, password(USER, KEY1), password(USER, KEY2)):
        assert secret not in text


def test_fps_auth_binary_exists():
    assert FPS_AUTH.is_file() and os.access(FPS_AUTH, os.X_OK), "build it first: make %s" % FPS_AUTH


def test_concurrency_ids_are_echoed_in_order(helper):
    good, bad = password(USER, KEY1), "0" * 40
    # Pipelined, as Squid does with concurrency=N: all lines first, then all replies.
    helper.send(
        ("0 %s %s\n7 %s %s\n4294967295 %s %s\n3 %s %s\n" % (USER, good, USER, bad, USER, good.upper(), USER, good))
        .encode()
    )
    assert [helper.readline() for _ in range(4)] == [
        "0 OK",
        '7 ERR message="wrong password"',
        "4294967295 OK",
        "3 OK",
    ]


def test_lines_without_channel_id(mount, tmp_path):
    for args in ([], ["--concurrency", "off"]):
        h = Helper(mount.keys_path(), *args, log=tmp_path / "cache.log")
        assert h.ask("%s %s" % (USER, password(USER, KEY1))) == "OK"
        assert h.ask("%s %s" % (USER, password(USER, KEY2))) == 'ERR message="wrong password"'
        assert h.close()[0] == 0


def test_forced_concurrency_rejects_lines_without_id(mount, tmp_path):
    h = Helper(mount.keys_path(), "--concurrency", "on", log=tmp_path / "cache.log")
    assert h.ask("%s %s" % (USER, password(USER, KEY1))).startswith("BH message=")
    assert h.ask("5 %s %s" % (USER, password(USER, KEY1))) == "5 OK"
    assert h.close()[0] == 0


def test_line_over_64k_then_valid_line_both_answered_in_order(helper):
    good = password(USER, KEY1)
    helper.send(b"5 " + USER.encode() + b" " + b"x" * 70000 + b"\n")
    helper.send(("6 %s %s\n" % (USER, good)).encode())
    # 1 MiB without a newline for a while: the helper must skip it, not buffer it.
    helper.send(b"7 " + b"y" * (1 << 20))
    helper.send(b"\n8 %s %s\n" % (USER.encode(), good.encode()))
    assert helper.readline() == '5 BH message="line too long"'
    assert helper.readline() == "6 OK"
    assert helper.readline() == '7 BH message="line too long"'
    assert helper.readline() == "8 OK"


def test_nul_bytes_are_answered_bh(helper):
    good = password(USER, KEY1).encode()
    helper.send(b"1 Apex\0One " + good + b"\n")
    helper.send(b"2 " + USER.encode() + b" " + good + b"\0\n")
    helper.send(b"\0\0\0\n")
    helper.send(b"3 " + USER.encode() + b" " + good + b"\n")
    assert helper.readline() == '1 BH message="NUL byte in line"'
    assert helper.readline() == '2 BH message="NUL byte in line"'
    assert helper.readline().startswith("BH message=")
    assert helper.readline() == "3 OK"


def test_missing_newline_at_eof_is_answered(helper):
    helper.send(("9 %s %s" % (USER, password(USER, KEY1))).encode())
    rc, rest = helper.close()
    assert rc == 0
    assert rest == b"9 OK\n"


def test_escaped_fields(helper):
    good = password(USER, KEY1)
    escaped = "".join("%%%02X" % ord(c) for c in good)  # every byte as %XX
    assert helper.ask("1 %s %s" % (USER, escaped)) == "1 OK"
    assert helper.ask("2 Apex%%20One %s" % good) == '2 ERR message="invalid username"'
    assert helper.ask("3 %s %s%%25" % (USER, good)) == '3 ERR message="wrong password"'
    assert helper.ask("4 %s %s+" % (USER, good[:39])) == '4 ERR message="wrong password"'
    assert helper.ask("5 %s p@ss:word" % USER) == '5 ERR message="wrong password"'
    assert helper.ask("6 %s %%zz" % USER) == '6 BH message="malformed %XX escape"'
    assert helper.ask("7  %s" % good) == '7 ERR message="invalid username"'
    assert helper.ask("8 %s " % USER) == '8 ERR message="wrong password"'


def test_products_restriction(mount, tmp_path):
    deep = "DeepSec-00000000-0000-0000-0000-000000000001"
    h = Helper(mount.keys_path(), "--products", "DeepSec,Other", log=tmp_path / "cache.log")
    assert h.ask("1 %s %s" % (USER, password(USER, KEY1))) == '1 ERR message="product not allowed"'
    assert h.ask("2 %s %s" % (deep, password(deep, KEY1))) == "2 OK"
    assert h.close()[0] == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--keys"],
        ["--keys", "x", "--bogus"],
        ["--keys", "x", "--concurrency", "maybe"],
        ["--keys", "x", "--products", "A,,B"],
        ["--keys", "x", "extra"],
    ],
)
def test_usage_errors_exit_2(args):
    r = subprocess.run([str(FPS_AUTH), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert r.returncode == 2
    assert b"fps-auth" in r.stderr


def test_expired_keys_refuse_everyone(tmp_path):
    keys = tmp_path / "apikeys.json"
    keys.write_text(keys_json(("old", KEY1, PAST)))
    h = Helper(keys, log=tmp_path / "cache.log")
    assert h.ask("1 %s %s" % (USER, password(USER, KEY1))) == '1 ERR message="no valid API key"'
    assert h.close()[0] == 0
    assert "every key has expired" in h.stderr()


def test_key_rotation_kubelet_style(mount, helper):
    assert helper.ask("1 %s %s" % (USER, password(USER, KEY1))) == "1 OK"
    assert helper.ask("2 %s %s" % (USER, password(USER, KEY2))) == '2 ERR message="wrong password"'

    mount.publish({"apikeys.json": keys_json(("2026-12", KEY2, FUTURE))})
    poll_until("the rotated key to be accepted",
               lambda: helper.ask("3 %s %s" % (USER, password(USER, KEY2))) == "3 OK")
    assert helper.ask("4 %s %s" % (USER, password(USER, KEY1))) == '4 ERR message="wrong password"'

    log = helper.stderr()
    assert "apikeys.json: reloaded 1 keys" in log
    assert_no_secrets(log)


def test_overlapping_keys_during_rotation(mount, helper):
    mount.publish({"apikeys.json": keys_json(("2026-11", KEY1, FUTURE), ("2026-12", KEY2, FUTURE))})
    poll_until("the second key to be accepted",
               lambda: helper.ask("1 %s %s" % (USER, password(USER, KEY2))) == "1 OK")
    assert helper.ask("2 %s %s" % (USER, password(USER, KEY1))) == "2 OK"


def test_corrupt_keys_file_keeps_old_keys(mount, helper):
    good = password(USER, KEY1)
    assert helper.ask("1 %s %s" % (USER, good)) == "1 OK"

    mount.publish({"apikeys.json": '{"keys": [{"id": "2026-12", "key": "%s", "expires": "soon"}]}' % KEY2})

    def rejected_and_still_ok():
        assert helper.ask("2 %s %s" % (USER, good)) == "2 OK"  # every answer meanwhile: old key works
        return "keeping 1 previous keys" in helper.stderr()

    poll_until("the corrupt file to be reported", rejected_and_still_ok)
    assert helper.ask("3 %s %s" % (USER, password(USER, KEY2))) == '3 ERR message="wrong password"'

    # Then a good file: accepted, and the bad one was reported once, by name and key id only.
    mount.publish({"apikeys.json": keys_json(("2026-12", KEY2, FUTURE))})
    poll_until("the fixed key to be accepted",
               lambda: helper.ask("4 %s %s" % (USER, password(USER, KEY2))) == "4 OK")
    log = helper.stderr()
    assert log.count("is not an RFC 3339 UTC time") == 1
    assert 'apikeys.json: keys[0] (id "2026-12")' in log
    assert_no_secrets(log)


def test_keys_file_missing_at_start_then_appears(tmp_path):
    keys = tmp_path / "apikeys.json"
    h = Helper(keys, log=tmp_path / "cache.log")
    assert h.ask("1 %s %s" % (USER, password(USER, KEY1))) == '1 ERR message="no valid API key"'
    tmp = tmp_path / "apikeys.json.tmp"
    tmp.write_text(keys_json(("2026-11", KEY1, FUTURE)))
    os.rename(tmp, keys)  # a plain edit: write beside, rename over
    poll_until("the new file to be loaded",
               lambda: h.ask("2 %s %s" % (USER, password(USER, KEY1))) == "2 OK")
    assert h.close()[0] == 0
    assert "cannot stat keys file" in h.stderr()
