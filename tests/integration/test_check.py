"""`fps-controller check` judges what `run` judges (docs/operations.md, "check"): with
`--secrets-dir`, the Secret as the reload pipeline checks it, and the generation proven with
`squid -k parse`, the update cache's size against the memory limit and the state volume. Each
refused case is one `run` refuses too."""
import os
import subprocess

import pytest
import yaml

from fpsharness import BIN, ROOT, World, free_port
from test_docs import EXAMPLE_KEYS, docs_ca

SEED_SECRET = ROOT / "deploy" / "k8s" / "seed" / "secret.example.yaml"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    for name in ("client", "other"):
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))
    return d


def check(tmp_path, secrets, env=None):
    sec = tmp_path / "secrets"
    sec.mkdir(exist_ok=True)
    for f in sec.iterdir():
        f.unlink()
    for name, content in secrets.items():
        (sec / name).write_text(content)
    return subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(ROOT / "examples" / "config"),
                           "--secrets-dir", str(sec)], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=60)


def bad_secrets(pki):
    seed = yaml.safe_load(SEED_SECRET.read_text())["stringData"]
    ca = docs_ca()
    return {
        "apikeys.json not json": ({"apikeys.json": "not json", "tunnel-ca.pem": ca}, "apikeys.json:1:1: not valid JSON"),
        "client certificate without its key": (
            {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": ca, "tunnel-client.pem": (pki / "client.pem").read_text()},
            "mTLS needs both tunnel-client.pem and tunnel-client.key; only tunnel-client.pem is present"),
        "key of another certificate": (
            {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": ca, "tunnel-client.pem": (pki / "client.pem").read_text(),
             "tunnel-client.key": (pki / "other.key").read_text()},
            "tunnel-client.key: is not the private key of tunnel-client.pem"),
        "the seed Secret's placeholders": (
            {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": seed["tunnel-ca.pem"]},
            "tunnel-ca.pem: not a PEM file (no -----BEGIN line)"),
        "a PEM header with no certificate": (
            {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "tunnel-ca.pem: not a PEM certificate OpenSSL can load"),
        "no tunnel CA": ({"apikeys.json": EXAMPLE_KEYS},
                         "a tunnel is configured but tunnel-ca.pem is missing from the secrets"),
    }


def test_check_refuses_every_secret_run_refuses(tmp_path, pki):
    for case, (secrets, message) in bad_secrets(pki).items():
        r = check(tmp_path, secrets)
        assert r.returncode == 1, f"{case}: {r.stdout}{r.stderr}"
        assert message in r.stderr, f"{case}: {r.stderr}"
        assert "REPLACE" not in r.stderr and "BEGIN" not in r.stderr.replace("-----BEGIN line", "")
    good = {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": docs_ca(),
            "tunnel-client.pem": (pki / "client.pem").read_text(), "tunnel-client.key": (pki / "client.key").read_text()}
    r = check(tmp_path, good)
    assert r.returncode == 0, r.stderr
    assert "valid: 4 entries" in r.stdout


def test_check_proves_the_generation_with_squid_parse(tmp_path):
    """A Squid that refuses the rendered squid.conf makes `check` refuse it too."""
    fake = tmp_path / "squid"
    fake.write_text("#!/bin/sh\necho 'FATAL: Bungled squid.conf line 1: for the test' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = check(tmp_path, {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": docs_ca()}, env={"FPS_SQUID_BIN": str(fake)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Bungled" in r.stderr


def test_check_judges_the_cache_size_as_run_does(tmp_path):
    """The update cache against the container's memory limit and, with --state-dir, the state
    volume: what `run` refuses (test_cache_store.py), `check` refuses too (the same build)."""
    secrets = {"apikeys.json": EXAMPLE_KEYS, "tunnel-ca.pem": docs_ca()}
    r = check(tmp_path, secrets, env={"FPS_MEMORY_LIMIT_BYTES": str(200 << 20)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cache.memory_mb 128 does not fit the container's memory limit of 200 MB" in r.stderr
    assert check(tmp_path, secrets, env={"FPS_MEMORY_LIMIT_BYTES": str(8 << 30)}).returncode == 0
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0755", "tmpfs", str(state)], check=True)
    try:
        r = subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(ROOT / "examples" / "config"),
                            "--state-dir", str(state)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, FPS_MEMORY_LIMIT_BYTES=str(8 << 30)))
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cache.disk_mb 512 does not fit the state volume: 96 MB in all" in r.stderr


@pytest.mark.parametrize("case", ["apikeys.json not json", "the seed Secret's placeholders"])
def test_run_refuses_what_check_refuses(case, pki):
    """The same inputs, at `run`'s start with no last good generation: exit 1 with the reason."""
    secrets, message = bad_secrets(pki)[case]
    w = World("check-run")
    try:
        for name, content in secrets.items():
            (w.secrets / name).write_text(content)
        for f in (ROOT / "examples" / "config").iterdir():
            (w.config / f.name).write_text(f.read_text())
        r = subprocess.run([str(BIN / "fps-controller"), "run", "--config-dir", str(w.config), "--secrets-dir",
                            str(w.secrets), "--state-dir", str(w.state), "--admin", f"127.0.0.1:{free_port()}"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr[-2000:]
        assert message in r.stderr
    finally:
        w.close()
