"""Which HTTP clients get a 5 MiB plain-HTTP upload through FPS when they send credentials only
after the 407 challenge, and which when they send them with the request (docs/agents.md,
"Uploads"). Not a test: nothing is asserted; it prints one line per client and mode.

    FPS_BIN_DIR=build/asan python3 tests/integration/upload_measure.py [TRIALS [LABEL-SUBSTRING]]

Each trial is a fresh client process posting 5 MiB of 'z' (no `Expect: 100-continue` unless the
mode says so) through a real FPS (Squid 5.7, fps-auth, fps-acl): [407] to a whitelisted host,
each client authenticating its own way; [403] to a host that is not whitelisted, by the modes
that send credentials with the request. An outcome
is the client's final status, `reset` (the connection broke under it: the 407 never reached
it), or the error it printed; `origin` counts the uploads the origin received whole."""
import collections
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fpsharness import World, agent_credentials  # noqa: E402

HERE = Path(__file__).resolve().parent
BODY = 5 << 20

URLLIB_HANDLER = """
import sys, urllib.request, urllib.error
url, proxy, user, password, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], open(sys.argv[5], 'rb').read()
mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
mgr.add_password(None, proxy, user, password)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': 'http://' + proxy}),
                                     urllib.request.ProxyBasicAuthHandler(mgr))
try:
    print(opener.open(urllib.request.Request(url, data=body, method='POST'), timeout=50).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(type(e).__name__, e)
"""

URLLIB_URL = """
import sys, urllib.request, urllib.error
url, proxy, user, password, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], open(sys.argv[5], 'rb').read()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': f'http://{user}:{password}@{proxy}'}))
try:
    print(opener.open(urllib.request.Request(url, data=body, method='POST'), timeout=50).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(type(e).__name__, e)
"""

REQUESTS_URL = """
import sys, requests
url, proxy, user, password, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], open(sys.argv[5], 'rb').read()
p = f'http://{user}:{password}@{proxy}'
try:
    print(requests.post(url, data=body, proxies={'http': p}, timeout=50).status_code)
except Exception as e:
    print(type(e).__name__, e)
"""


def classify(text):
    low = text.lower()
    if any(s in low for s in ("reset", "broken pipe", "brokenpipe", "connection closed", "remotedisconnected",
                              "aborted", "giving up", "recv failure", "send failure", "eof")):
        return "reset"
    return text.strip()[:80] or "(nothing)"


def run(argv, timeout=70):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    out = p.stdout.strip().splitlines()
    last = out[-1] if out else p.stderr.strip()[-200:]
    return last if last.isdigit() else classify(last + " " + p.stderr[-300:])


def modes(w, url, body):
    py = "/usr/bin/python3"
    proxy = w.proxy
    u, pw = w.user, w.password
    m = {
        "urllib ProxyBasicAuthHandler (after 407)": [py, "-c", URLLIB_HANDLER, url, proxy, u, pw, str(body)],
        "urllib, credentials in the proxy URL": [py, "-c", URLLIB_URL, url, proxy, u, pw, str(body)],
        "requests, credentials in the proxy URL": [py, "-c", REQUESTS_URL, url, proxy, u, pw, str(body)],
        "curl --proxy-anyauth, no Expect (after 407)": ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\n",
                                                        "--max-time", "50", "-x", f"http://{proxy}", "--proxy-anyauth",
                                                        "--proxy-user", f"{u}:{pw}", "-H", "Expect:",
                                                        "--data-binary", f"@{body}", url],
        "curl --proxy-user (preemptive)": ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\n", "--max-time", "50",
                                           "-x", f"http://{proxy}", "--proxy-user", f"{u}:{pw}", "-H", "Expect:",
                                           "--data-binary", f"@{body}", url],
    }
    wget = ["wget", "-S", "-O", "/dev/null", "--tries=1", "--timeout=50", "-e", "use_proxy=yes", "-e",
            f"http_proxy=http://{proxy}", f"--post-file={body}", f"--proxy-user={u}", f"--proxy-password={pw}", url]
    m["wget --proxy-user (preemptive)"] = ("wget", wget)
    if shutil.which("java"):
        for jm, label in (("urlconnection-authenticator", "Java HttpURLConnection + Authenticator (after 407)"),
                          ("urlconnection-preemptive", "Java HttpURLConnection, Proxy-Authorization header"),
                          ("httpclient-authenticator", "Java HttpClient + authenticator (after 407)"),
                          ("httpclient-expect", "Java HttpClient + authenticator + expectContinue(true)"),
                          ("httpclient-preemptive", "Java HttpClient, Proxy-Authorization header")):
            m[label] = ["java", str(HERE / "clients" / "UploadAuth.java"), jm, "127.0.0.1", str(w.port), url, u, pw]
    return m


def run_wget(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=70)
    except subprocess.TimeoutExpired:
        return "hang"
    statuses = [line.split()[1] for line in p.stderr.splitlines() if line.strip().startswith("HTTP/1.")]
    return statuses[-1] if statuses else classify(p.stderr[-300:])


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    w = World("upload-measure")
    try:
        w.set_hosts({"ok.upload.test": "127.0.0.1", "no.upload.test": "127.0.0.1"})
        w.http = w.origin(name="http")
        w.write_keys()
        w.write_config(w.yaml(auth=True), {"version": 1, "domains": ["ok.upload.test"]})
        w.start()
        w.user, w.password = agent_credentials(w.API_KEY)
        body = w.dir / "body"
        body.write_bytes(b"z" * BODY)
        only = sys.argv[2] if len(sys.argv) > 2 else ""
        # 407: a whitelisted host, the client authenticates its own way. 403: a host that is
        # not whitelisted, credentials sent with the request (what the agent sees of a denial).
        for case, host in (("407", "ok.upload.test"), ("403", "no.upload.test")):
            url = f"http://{host}:{w.http.port}/upload"
            for label, argv in modes(w, url, body).items():
                if only not in label or (case == "403" and "after 407" in label):
                    continue
                got = collections.Counter()
                before = sum(1 for h in w.http.hits if h[1] == "/upload")
                for _ in range(trials):
                    got[run_wget(argv[1]) if isinstance(argv, tuple) else run(argv)] += 1
                received = sum(1 for h in w.http.hits if h[1] == "/upload") - before
                print(f"[{case}] {label}: {dict(got)}; origin received {received}/{trials}", flush=True)
    finally:
        w.close()


if __name__ == "__main__":
    main()
