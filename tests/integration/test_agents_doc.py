"""docs/agents.md cannot rot: every snippet marked `<!-- run: NAME [file=F] -->` is extracted and
run, with the client Debian ships, against a real FPS with credentials (Squid 5.7, fps-auth,
fps-acl), an HTTP and an HTTPS origin. The doc's placeholders (proxy.example.internal:8080,
updates.example.com) are replaced by the test stack's addresses; the test CA is trusted through
each client's standard environment variable, so the snippets stay exactly as a reader copies
them. The traps the guide warns about are checked too, so a client that fixes one is noticed."""
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from fpsharness import ROOT, World, agent_credentials, make_ca_and_cert, wait_for

DOC = ROOT / "docs" / "agents.md"
MARK = re.compile(r"<!-- run: (\S+)(?: file=(\S+))? -->\n```(\w+)\n(.*?)```", re.S)
# Every client the guide promises to have tried; dropping one from the doc fails this test.
TESTED = {"credentials", "credentials-python", "curl", "wget", "python-requests", "python-urllib",
          "java-httpclient", "java-urlconnection", "node-undici", "upload"}
# Plain-HTTP uploads with the credentials sent with the request (docs/agents.md, "Uploads").
UPLOADS = {"upload-wget", "upload-python-requests", "upload-python-urllib", "upload-java-urlconnection",
           "upload-java-httpclient"}
TESTED |= UPLOADS
TOOLS = {"curl": "curl", "wget": "wget", "java": "java", "node": "node", "keytool": "keytool"}


def snippets():
    groups = {}
    for m in MARK.finditer(DOC.read_text()):
        name, fname, lang, code = m.groups()
        groups.setdefault(name, []).append((fname, lang, code))
    return groups


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = [t for t in TOOLS.values() if shutil.which(t) is None]
    assert not missing, f"not installed: {missing} (make test-deps installs them)"
    w = World("agents")
    try:
        ca, cert, key = make_ca_and_cert(w.dir / "pki", ["updates.example.com"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        plain = w.origin(name="http")
        tls = w.origin(name="https", ssl_ctx=ctx)
        w.set_hosts({"updates.example.com": "127.0.0.1"})
        w.write_keys()
        w.write_config(w.yaml(auth=True, connect_ports=[tls.port]), {"version": 1, "domains": ["updates.example.com"]})
        w.start()
        store = w.dir / "truststore.p12"
        subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "fps-test", "-file", str(ca), "-keystore",
                        str(store), "-storetype", "PKCS12", "-storepass", "changeit"], check=True, capture_output=True)
        (w.dir / "wgetrc").write_text(f"ca_certificate = {ca}\n")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(
            CURL_CA_BUNDLE=str(ca), WGETRC=str(w.dir / "wgetrc"), REQUESTS_CA_BUNDLE=str(ca), SSL_CERT_FILE=str(ca),
            NODE_EXTRA_CA_CERTS=str(ca),
            JDK_JAVA_OPTIONS=f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit")
        if Path("/usr/share/nodejs/undici").is_dir():  # Debian's node-undici, for a Node not from Debian
            env["NODE_PATH"] = "/usr/share/nodejs"
        user, password = agent_credentials(w.API_KEY)
        env.update(FPS_USER=user, FPS_PASSWORD=password, FPS_API_KEY=w.API_KEY)
        yield {"world": w, "env": env, "plain": plain.port, "tls": tls.port}
    finally:
        w.close()


def localize(code, stack):
    """The doc's placeholders -> the test stack. Returns (code, substitutions made)."""
    port = stack["world"].port
    subs = [("proxy.example.internal:8080", f"127.0.0.1:{port}"),
            ('"proxy.example.internal", 8080', f'"127.0.0.1", {port}'),
            ("https://updates.example.com/", f"https://updates.example.com:{stack['tls']}/"),
            ("http://updates.example.com/", f"http://updates.example.com:{stack['plain']}/")]
    n = 0
    for a, b in subs:
        n += code.count(a)
        code = code.replace(a, b)
    return code, n


def run_group(name, stack, tmp_path, env_extra=None):
    """Writes the group's files, runs its executable blocks in order; returns their stdout."""
    out = []
    env = dict(stack["env"], **(env_extra or {}))
    for i, (fname, lang, code) in enumerate(snippets()[name]):
        code, n = localize(code, stack)
        if fname:
            (tmp_path / fname).write_text(code)
            continue
        runner = {"sh": ["bash", "-euo", "pipefail"], "python": ["/usr/bin/python3"], "js": ["node"]}[lang]
        script = tmp_path / f"block{i}.{lang}"
        script.write_text(code)
        p = subprocess.run(runner + [str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=180)
        assert p.returncode == 0, f"{name} block {i} exited {p.returncode}:\n{code}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
        out.append(p.stdout)
    return "".join(out)


def test_the_guide_has_every_tested_client():
    assert TESTED <= set(snippets()), f"missing from docs/agents.md: {TESTED - set(snippets())}"


def test_worked_example_is_right():
    text = DOC.read_text()
    row = lambda label: re.search(rf"^\| {label} \| `([^`]+)` \|$", text, re.M).group(1)
    user, key = row("username"), row("API key")
    assert row("SHA-1 input") == user + key
    password = hashlib.sha1((user + key).encode()).hexdigest()
    assert row("password") == password
    import base64
    assert row("header") == "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credential_snippets_compute_what_fps_auth_accepts(stack, tmp_path):
    want = stack["env"]["FPS_PASSWORD"]
    assert run_group("credentials", stack, tmp_path).strip() == want
    run_group("credentials-python", stack, tmp_path)
    namespace = {}
    exec((tmp_path / "fps_password.py").read_text(), namespace)
    assert namespace["fps_password"](stack["env"]["FPS_USER"], stack["env"]["FPS_API_KEY"]) == want


@pytest.mark.parametrize("name", sorted(TESTED - {"credentials", "credentials-python", "upload"} - UPLOADS))
def test_client_snippet_reaches_the_origins(name, stack, tmp_path):
    out = run_group(name, stack, tmp_path)
    text = "".join(code for _, _, code in snippets()[name])
    assert localize(text, stack)[1] > 0, "the snippet uses none of the placeholders"
    # Each origin the snippet names answered it, through the proxy.
    if "https://updates.example.com/" in text:
        assert f"origin https updates.example.com:{stack['tls']} /" in out, out
    if "http://updates.example.com/" in text:
        assert f"origin http updates.example.com:{stack['plain']} /" in out, out


def test_upload_snippet(stack, tmp_path):
    out = run_group("upload", stack, tmp_path)
    digest = hashlib.sha256((tmp_path / "upload.bin").read_bytes()).hexdigest()
    assert out.count(f"received 2097152 bytes sha256 {digest}") == 2, out


@pytest.mark.parametrize("name", sorted(UPLOADS))
def test_upload_snippet_sends_5_mib_with_the_credentials_on_the_first_request(name, stack, tmp_path):
    """Squid 5.7 cannot deliver a 407 to a client still sending a large body (it closes, the
    client sees a reset): the guide's way is to never get one. The origin receives every byte,
    and access.log shows the upload allowed with no 407 before it."""
    body = os.urandom(5 << 20)
    (tmp_path / "upload.bin").write_bytes(body)
    log = stack["world"].state / "run" / "access.log"
    before = len(log.read_text().splitlines())
    out = run_group(name, stack, tmp_path)
    assert f"received {len(body)} bytes sha256 {hashlib.sha256(body).hexdigest()}" in out, out

    def uploads():
        return [l for l in log.read_text().splitlines()[before:] if " POST " in l and "/upload " in l]
    wait_for(lambda: any(" TCP_MISS/200 " in l for l in uploads()), 10, what="the upload's access.log line")
    assert len(uploads()) == 1 and " TCP_MISS/200 " in uploads()[0], uploads()


# ---- the traps the guide describes ------------------------------------------------------------

def test_trap_urllib_proxy_auth_handler_cannot_answer_connect(stack):
    w, env = stack["world"], stack["env"]
    handler = urllib.request.ProxyBasicAuthHandler(urllib.request.HTTPPasswordMgrWithDefaultRealm())
    handler.add_password(None, w.proxy, env["FPS_USER"], env["FPS_PASSWORD"])
    ctx = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{w.proxy}",
                                                                      "https": f"http://{w.proxy}"}),
                                         handler, urllib.request.HTTPSHandler(context=ctx))
    # Plain HTTP: the handler answers the 407.
    with opener.open(f"http://updates.example.com:{stack['plain']}/", timeout=10) as r:
        assert r.status == 200
    # HTTPS: the 407 to CONNECT never reaches it.
    with pytest.raises(OSError, match="407"):
        opener.open(f"https://updates.example.com:{stack['tls']}/", timeout=10)


def test_trap_requests_proxy_auth_covers_plain_http_only(stack):
    requests = pytest.importorskip("requests")
    w, env = stack["world"], stack["env"]
    auth = requests.auth.HTTPProxyAuth(env["FPS_USER"], env["FPS_PASSWORD"])
    proxies = {"http": f"http://{w.proxy}", "https": f"http://{w.proxy}"}
    assert requests.get(f"http://updates.example.com:{stack['plain']}/", proxies=proxies, auth=auth,
                        timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ProxyError, match="407"):
        requests.get(f"https://updates.example.com:{stack['tls']}/", proxies=proxies, auth=auth, timeout=10,
                     verify=env["REQUESTS_CA_BUNDLE"])


def test_trap_java_needs_the_tunneling_property(stack, tmp_path):
    run_group("java-httpclient", stack, tmp_path)  # writes Fetch.java (and shows it works with it)
    p = subprocess.run(["java", "Fetch.java", f"https://updates.example.com:{stack['tls']}/"], cwd=tmp_path,
                       env=stack["env"], capture_output=True, text=True, timeout=180)
    assert p.returncode != 0 and "407" in p.stderr, p.stderr


def test_trap_undici_tunnels_plain_http(stack, tmp_path):
    run_group("node-undici", stack, tmp_path)  # writes fetch.js
    p = subprocess.run(["node", "fetch.js", f"http://updates.example.com:{stack['plain']}/"], cwd=tmp_path,
                       env=stack["env"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    log = (stack["world"].state / "run" / "access.log").read_text()
    assert f"TCP_DENIED/403 " in log and f"CONNECT updates.example.com:{stack['plain']} " in log
