"""Every rendered config passes `squid -k parse` with no ERROR, FATAL or WARNING line,
including 100,000 overlapping entries, in both apply modes (issue: controller core)."""
import json
import os
import re
import subprocess

import pytest

from fpsharness import BIN, TEMPLATES, World

BAD = re.compile(r"WARNING|ERROR|FATAL|unrecognized|Bungled|empty ACL")


def overlapping_entries(n=100_000):
    """Wildcards, names they cover, apexes, duplicates in other case, trailing dots, IPs."""
    out = []
    i = 0
    while len(out) < n:
        d = f"d{i}.example.com"
        out += [f"*.{d}", f"www.{d}", d.upper() + ".", f"https://API.{d}:443/v1", f"h{i}.example.net",
                f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", f".sub{i}.example.org", f"x.sub{i}.example.org"]
        i += 1
    return out[:n]


@pytest.mark.parametrize("mode", ["live", "reconfigure"])
def test_rendered_config_with_100k_overlapping_entries_parses_cleanly(mode):
    w = World(f"parse-{mode}")
    try:
        w.set_hosts({"a.test": "127.0.0.1"})
        extra = ("upstream: {host: proxy.corp.test, port: 3128, username: fps}\n"
                 "tunnel: {server: tunnel.fps.test, local_port: 3999}\n"
                 "routes:\n  - {via: tunnel, domains: [\"*.example.com\"]}\n"
                 "  - {via: upstream, domains: [\"*.example.net\"]}\n"
                 "  - {via: direct, domains: [d5.example.com]}\n")
        yaml = w.yaml(apply=mode, extra=extra, auth=True).replace("auth:\n  enabled: true\n",
                                                                   "auth:\n  enabled: true\n  products: [ApexOne]\n")
        w.write_config(yaml, {"version": 9, "domains": overlapping_entries()})
        (w.secrets / "upstream-password").write_text("s3cret pass\n")
        (w.secrets / "tunnel-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        env = dict(os.environ, FPS_TEMPLATES_DIR=str(TEMPLATES))
        out = w.dir / "out"
        r = subprocess.run([str(BIN / "fps-controller"), "render", "--config-dir", str(w.config), "--secrets-dir",
                            str(w.secrets), "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        conf = (out / "squid.conf").read_text()
        assert "s3cret%20pass" in conf and "s3cret pass" not in conf
        if mode == "reconfigure":
            lines = (out / "whitelist.dstdomain").read_text().splitlines()
            # folded: www.dN / apex / API.dN under *.dN, x.subN under .subN
            assert len(lines) == len(set(lines)) == 50_000
        p = subprocess.run(["squid", "-k", "parse", "-f", str(out / "squid.conf")], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        bad = [l for l in p.stderr.splitlines() if BAD.search(l)]
        assert bad == [], bad[:10]
    finally:
        w.close()
