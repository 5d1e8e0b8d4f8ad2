"""The cloud side (deploy/cloud) for real: the ConfigMaps' squid.conf passes `squid -k parse`, and
the two containers' exact commands, run as the image's non-root user on loopback, form a working
TLS tunnel: an HTTPS-proxy request through stunnel, with an appliance client certificate, reaches
the cloud Squid, which refuses non-vendor hosts (403) and lets vendor hosts through to its
forwarding stage; a client without a certificate, or with one from another CA, is refused in the
TLS handshake (`openssl s_client`, curl) and never reaches the cloud Squid."""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from deploy_helpers import as_pod_user, path_mapper, built, container, find, pod_spec, world_traversable_tmpdir
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "integration"))
from fpsharness import free_port  # noqa: E402  (below the ephemeral range: see there)

NEEDED = ("squid", "stunnel4", "openssl", "curl")
missing = [b for b in NEEDED if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"not installed: {missing}")

SQUID = shutil.which("squid") or "/usr/sbin/squid"


def cloud_objects():
    objs = built("cloud")
    return (find(objs, "Deployment", "fps-tunnel"), find(objs, "ConfigMap", "fps-cloud-stunnel")["data"],
            find(objs, "ConfigMap", "fps-cloud-squid")["data"])


def test_cloud_squid_conf_parses(tmp_path):
    _dep, _st, sq = cloud_objects()
    conf = tmp_path / "squid.conf"
    conf.write_text(sq["squid.conf"].replace("/tmp/", f"{tmp_path}/"))
    run = subprocess.run([SQUID, "-k", "parse", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # docs/squid-facts.md: parse exits 0 on some broken configs; any of these lines is a failure.
    bad = [ln for ln in run.stderr.splitlines() if re.search(r"FATAL|ERROR|WARNING|unrecognized|Bungled", ln)]
    assert not bad, bad


def issue(d, ca_name, cn):
    """A client certificate (clientAuth) for CN=cn from the CA ca_name, made in d if missing."""
    ca, ca_key = d / f"{ca_name}.pem", d / f"{ca_name}.key"
    if not ca.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "1", "-subj", f"/CN={ca_name}", "-keyout", str(ca_key), "-out", str(ca)],
                       check=True, capture_output=True)
    stem = d / f"{ca_name}-{cn.replace('/', '_')}"
    cert, key, csr, ext = (stem.with_suffix(x) for x in (".crt", ".key", ".csr", ".ext"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    ext.write_text("extendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def poll(deadline, fn):
    while True:
        result = fn()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


@pytest.fixture
def pod_tmp():
    path = world_traversable_tmpdir("fps-cloud-")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_cloud_tunnel_chain(pod_tmp):
    tmp_path = pod_tmp
    dep, stunnel_data, squid_data = cloud_objects()
    spec = pod_spec(dep)
    # Pod paths -> temp dirs (emptyDir /tmp writable by uid 13, config and TLS read-only).
    dirs = {"/etc/stunnel/conf": tmp_path / "stunnel-conf", "/etc/stunnel/tls": tmp_path / "tls",
            "/etc/stunnel/appliance-ca": tmp_path / "appliance-ca",
            "/etc/squid-cloud": tmp_path / "squid-conf", "/tmp": tmp_path / "tmp"}
    for d in dirs.values():
        d.mkdir()
    if os.geteuid() == 0:
        os.chown(dirs["/tmp"], 13, 13)
    tls_port, squid_port = free_port(), free_port()

    localize = path_mapper({k: str(v) for k, v in dirs.items()})

    stunnel_conf = localize(stunnel_data["stunnel.conf"])
    stunnel_conf = re.sub(r"^accept\s*=.*$", f"accept = 127.0.0.1:{tls_port}", stunnel_conf, flags=re.M)
    stunnel_conf = stunnel_conf.replace("127.0.0.1:3128", f"127.0.0.1:{squid_port}")
    (dirs["/etc/stunnel/conf"] / "stunnel.conf").write_text(stunnel_conf)
    squid_conf = localize(squid_data["squid.conf"]).replace("127.0.0.1:3128", f"127.0.0.1:{squid_port}")
    # Environment only (the policy is untouched): the vendor name maps to TEST-NET-1, which is
    # outside the `internal` ACL and unreachable, so the request passes the policy and then
    # fails in Squid's forwarding (503/504) within connect_timeout; no DNS is asked; the fd
    # limit of this box is lower than the pod's.
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.1 www.example-vendor.com\n")
    squid_conf += (f"\nhosts_file {hosts}\ndns_nameservers 127.0.0.1\ndns_timeout 3 seconds\n"
                   "connect_timeout 3 seconds\nmax_filedescriptors 1024\n")
    (dirs["/etc/squid-cloud"] / "squid.conf").write_text(squid_conf)

    crt, key = dirs["/etc/stunnel/tls"] / "tls.crt", dirs["/etc/stunnel/tls"] / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=tunnel.fps.test", "-addext", "subjectAltName=DNS:tunnel.fps.test,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    if os.geteuid() == 0:
        for f in (crt, key):
            os.chown(f, 0, 13)   # fsGroup 13, defaultMode 0440, like the Secret mount
    crt.chmod(0o440)
    key.chmod(0o440)
    # mTLS: the Secret fps-appliance-ca (ca.crt) and an appliance certificate it signed.
    pki = tmp_path / "pki"
    pki.mkdir()
    appliance = issue(pki, "FPS Appliance CA", "appliance-1")
    (dirs["/etc/stunnel/appliance-ca"] / "ca.crt").write_bytes((pki / "FPS Appliance CA.pem").read_bytes())
    if os.geteuid() == 0:
        os.chown(dirs["/etc/stunnel/appliance-ca"] / "ca.crt", 0, 13)
    (dirs["/etc/stunnel/appliance-ca"] / "ca.crt").chmod(0o440)

    procs = {}
    logs = {}
    try:
        for name in ("squid", "stunnel"):
            c = container(spec, name)
            cmd = [localize(a) for a in c["command"] + c.get("args", [])]
            logs[name] = (open(tmp_path / f"{name}.out", "wb"), open(tmp_path / f"{name}.err", "wb"))
            procs[name] = subprocess.Popen(as_pod_user() + cmd, stdout=logs[name][0], stderr=logs[name][1],
                                           cwd=str(tmp_path), start_new_session=True)

        def through_tunnel(url):
            run = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                                  "--proxy", f"https://127.0.0.1:{tls_port}", "--proxy-cacert", str(crt),
                                  "--proxy-cert", str(appliance[0]), "--proxy-key", str(appliance[1]), url],
                                 capture_output=True, text=True)
            return run.stdout.strip()

        def s_client(cert=None):
            """A raw HTTP request over `openssl s_client`: the cloud Squid's status line, or ""
            when the TLS handshake (with this client certificate, or none) was refused."""
            argv = ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{tls_port}", "-CAfile", str(crt),
                    "-verify_return_error", "-servername", "tunnel.fps.test"]
            if cert:
                argv += ["-cert", str(cert[0]), "-key", str(cert[1])]
            run = subprocess.run(argv, input=b"GET http://not-vendor.fps.test/ HTTP/1.0\r\n\r\n",
                                 capture_output=True, timeout=30)
            line = run.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
            return line if line.startswith("HTTP/") else ""

        def ready():
            for name, p in procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"{name} exited {p.returncode}: {(tmp_path / f'{name}.err').read_text()}")
            code = through_tunnel("http://not-vendor.fps.test/")
            return code if code not in ("", "000") else None

        assert poll(time.monotonic() + 60, ready) == "403"
        # mTLS (deploy/README.md): the appliance's certificate gets through; no certificate, one
        # from another CA (even with the same subject), or the server's own do not.
        assert s_client(appliance).startswith("HTTP/1.1 403"), s_client(appliance)
        denied_before = (tmp_path / "squid.out").read_text().count("not-vendor.fps.test")
        other = issue(pki, "Other CA", "appliance-1")
        for cert in (None, other, (crt, key)):
            assert s_client(cert) == "", cert
        curl_no_cert = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                                       "--proxy", f"https://127.0.0.1:{tls_port}", "--proxy-cacert", str(crt),
                                       "http://not-vendor.fps.test/"], capture_output=True, text=True)
        assert curl_no_cert.stdout.strip() == "000" and curl_no_cert.returncode != 0
        # The vendor's domains pass the cloud Squid's policy (here they then fail on DNS).
        code = through_tunnel("http://www.example-vendor.com/")
        assert code in ("502", "503", "504"), code
        # Squid's access log reaches the container's stdout through the FIFO.
        out = tmp_path / "squid.out"
        assert poll(time.monotonic() + 30,
                    lambda: True if re.search(r"TCP_DENIED/403 .*not-vendor\.fps\.test", out.read_text()) else None), \
            out.read_text()
        # The refused clients never reached the cloud Squid (the good ones' lines are all in:
        # the www.example-vendor.com request was logged after them).
        assert poll(time.monotonic() + 30, lambda: True if "www.example-vendor.com" in out.read_text() else None)
        assert out.read_text().count("not-vendor.fps.test") == denied_before, out.read_text()
        assert re.search(r"certificate|CERT", (tmp_path / "stunnel.err").read_text() +
                         (tmp_path / "stunnel.out").read_text()), "stunnel logs the refused certificates"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise AssertionError(f"{name} ignored SIGTERM")
            try:
                os.killpg(p.pid, signal.SIGKILL)   # the container's leftovers (e.g. cat on the FIFO)
            except ProcessLookupError:
                pass
        for f in (f for pair in logs.values() for f in pair):
            f.close()
    # Squid exits cleanly on SIGTERM (the kubelet's stop signal).
    assert procs["squid"].returncode == 0, (tmp_path / "squid.err").read_text()
