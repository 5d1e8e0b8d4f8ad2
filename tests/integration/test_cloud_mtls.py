"""The cloud side asks every appliance for its client certificate (deploy/README.md, "Appliance
client certificates"), here as examples/cloud/run-cloud.sh runs it for the demo and the tests:
by default with an appliance CA of its own and one appliance certificate it issued; a client
without a certificate or with one from another CA is refused in the TLS handshake, and with a
CRL (`FPS_CLOUD_CLIENT_CRL`, stunnel's CRLfile) a revoked certificate is refused too. Checked
with `openssl s_client` carrying a raw proxy request: a status line means the cloud Squid was
reached."""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from fpsharness import register_dir
from test_routes import NAMES, SERVER, Cloud, client_pki, openssl


@pytest.fixture
def base():
    d = Path(f"/tmp/cloud-mtls-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    os.chmod(d, 0o755)
    register_dir(d)
    hosts = d / "hosts"
    hosts.write_text("".join(f"{ip} {n}\n" for n, ip in NAMES.items()))
    os.chmod(hosts, 0o644)
    yield d, hosts
    shutil.rmtree(d, ignore_errors=True)  # the tests stop what they start in it


def s_client(cloud, cert=None):
    """The cloud Squid's status line for a request over TLS with this client certificate
    (a (pem, key) pair, or none), or "" when the handshake was refused."""
    argv = ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{cloud.tls_port}", "-CAfile", str(cloud.ca),
            "-verify_return_error", "-servername", SERVER]
    if cert:
        argv += ["-cert", str(cert[0]), "-key", str(cert[1])]
    run = subprocess.run(argv, input=b"GET http://other.fps.test/ HTTP/1.0\r\n\r\n", capture_output=True,
                         timeout=30)
    line = run.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
    return line if line.startswith("HTTP/") else ""


def test_default_cloud_side_requires_its_appliance_certificate(base):
    d, hosts = base
    other = client_pki(d / "other-pki")  # a CA the cloud does not know, same kind of certificates
    cloud = Cloud(d / "cloud", hosts).start()
    try:
        assert s_client(cloud, (cloud.dir / "appliance.pem", cloud.dir / "appliance.key")).startswith("HTTP/1.1 ")
        before = cloud.access()
        assert s_client(cloud) == ""
        assert s_client(cloud, (other / "appliance-1.pem", other / "appliance-1.key")) == ""
        assert cloud.access() == before  # the refused never reached the cloud Squid
    finally:
        cloud.stop()


def test_a_revoked_appliance_certificate_is_refused(base):
    d, hosts = base
    pki = client_pki(d / "pki")
    # The CA's database: revoke appliance-2, publish the CRL (deploy/README.md, "Revoking").
    (pki / "ca.cnf").write_text("[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
                                "default_md = sha256\ndefault_crl_days = 1\ncertificate = ca.pem\n"
                                "private_key = ca.key\n")
    (pki / "index.txt").write_text("")
    (pki / "crlnumber").write_text("01\n")
    openssl("ca", "-config", "ca.cnf", "-revoke", "appliance-2.pem", cwd=pki)
    openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem", cwd=pki)
    cloud = Cloud(d / "cloud-crl", hosts, env={"FPS_CLOUD_CLIENT_CA": str(pki / "ca.pem"),
                                               "FPS_CLOUD_CLIENT_CRL": str(pki / "crl.pem")}).start()
    try:
        assert s_client(cloud, (pki / "appliance-1.pem", pki / "appliance-1.key")).startswith("HTTP/1.1 ")
        assert s_client(cloud, (pki / "appliance-2.pem", pki / "appliance-2.key")) == ""
    finally:
        cloud.stop()
