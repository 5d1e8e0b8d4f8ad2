"""What a newcomer reads stays true (test_docs.py's sibling): every command and flag the README
and docs show is in `fps-controller --help` (and the commands that need nothing work); every
shipped example config passes `check`; every limit the docs quote is the code's; every metric and
/status field that can be absent says so; every file in fps-controller/ is in the README's table;
the default admin port is the code's wherever it is written. Static reads plus a few `check`
runs: fast, no stack started."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fpsharness import BIN, ROOT
from test_docs import docs_ca

SRC = ROOT / "fps-controller"
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fps(*args, **kw):
    return subprocess.run([str(BIN / "fps-controller"), *args], capture_output=True, text=True, timeout=120, **kw)


def code_text(md):
    """The code of a markdown text: fenced blocks and inline code spans, one item per line/span."""
    items, fence = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            items.append(line)
        else:
            items.extend(re.findall(r"`([^`]+)`", line))
    return items


def documented_invocations():
    """[(file, command, {flags})] for every `fps-controller CMD ...` in the docs' code."""
    found = []
    for doc in DOCS:
        for item in code_text(doc.read_text()):
            for m in re.finditer(r"fps-controller\s+([a-z][a-z-]*|--[a-z]+)((?:\s+\S+)*)", item):
                found.append((doc.relative_to(ROOT), m.group(1), set(re.findall(r"(?<![\w-])--[a-z][a-z-]*",
                                                                              m.group(2)))))
    return found


def help_flags():
    """{command: {flags}} from `fps-controller --help` (a command's line and its continuations)."""
    out = fps("--help").stdout
    cmds, current = {}, None
    for line in out.splitlines():
        m = re.match(r"\s+fps-controller\s+(\S+)(.*)", line)
        if m:
            names = [m.group(1)] + re.findall(r"\|\s*(\S+)", m.group(2)) if m.group(1).startswith("--") else [m.group(1)]
            current = names
            for n in names:
                cmds.setdefault(n, set())
            rest = m.group(2)
        elif current and line.startswith("    "):
            rest = line
        else:
            current = None
            continue
        for n in current:
            cmds[n] |= set(re.findall(r"--[a-z][a-z-]*", rest))
    return cmds


def test_every_documented_command_and_flag_is_in_help():
    helped = help_flags()
    assert {"run", "render", "check", "diagnose", "keys", "denied", "explain", "--version", "--help", "help",
            "version"} <= set(helped)
    invocations = documented_invocations()
    assert len(invocations) > 15
    missing = [f"{doc}: fps-controller {cmd} {sorted(flags - helped.get(cmd, set()))}"
               for doc, cmd, flags in invocations if cmd not in helped or flags - helped[cmd]]
    assert missing == [], "documented but not in --help"


def test_the_help_sees_a_missing_flag():
    """The check above can fail: a flag the help does not list for a command is caught."""
    assert "--out" not in help_flags()["check"]
    assert "--state-dir" in help_flags()["check"] and "--state-dir" in help_flags()["diagnose"]


@pytest.mark.parametrize("args", [["--help"], ["help"], ["--version"], ["version"], ["keys"]])
def test_commands_that_need_nothing_work(args):
    r = fps(*args)
    assert r.returncode == 0 and r.stdout, r.stderr


def test_every_source_file_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    names = sorted({p.stem for p in SRC.iterdir() if p.suffix in (".c", ".h")})
    missing = [n for n in names if f"`{n}.c`" not in table and f"`{n}.h`" not in table]
    assert missing == [], "fps-controller/ files README.md's table does not name"


def check_dir(tmp_path, files, secrets=None):
    cfg = tmp_path / "config"
    cfg.mkdir(parents=True)
    for name, text in files.items():
        (cfg / name).write_text(text)
    args = ["check", "--config-dir", str(cfg)]
    if secrets is not None:
        sec = tmp_path / "secrets"
        sec.mkdir()
        for name, text in secrets.items():
            (sec / name).write_text(text)
        args += ["--secrets-dir", str(sec)]
    return fps(*args)


def test_the_example_config_passes_check_as_documented():
    """README and docs/configuration.md: `check --config-dir examples/config`."""
    r = fps("check", "--config-dir", str(ROOT / "examples" / "config"))
    assert r.returncode == 0, r.stderr
    assert "valid:" in r.stdout


def test_the_seed_configmap_passes_check_and_the_seed_secret_does_not(tmp_path):
    """deploy/k8s/seed: the ConfigMap is valid as shipped; the example Secret is placeholders,
    which `check` (like `run`) refuses; with real secrets the same ConfigMap passes."""
    seed = ROOT / "deploy" / "k8s" / "seed"
    data = yaml.safe_load((seed / "configmap.yaml").read_text())["data"]
    secret = yaml.safe_load((seed / "secret.example.yaml").read_text())["stringData"]
    r = check_dir(tmp_path / "a", data)
    assert r.returncode == 0, r.stderr
    r = check_dir(tmp_path / "b", data, secret)
    assert r.returncode == 1 and "tunnel-ca.pem: not a PEM file" in r.stderr, r.stdout + r.stderr
    real = dict(secret, **{"tunnel-ca.pem": docs_ca()})
    r = check_dir(tmp_path / "c", data, real)
    assert r.returncode == 0, r.stderr


def defines(path):
    """{NAME: int} for the integer #defines of a C file ((1u << 20) and 200000 forms)."""
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)\s+\(?(\d+)u?(?:\s*<<\s*(\d+))?\)?", path.read_text(), re.M):
        out[m.group(1)] = int(m.group(2)) << int(m.group(3) or 0)
    return out


def section(md, heading):
    """The text of a markdown section, from its heading to the next heading of the same level."""
    level = heading.split(" ")[0]
    start = md.index(heading + "\n")
    nxt = re.search(rf"^{level} ", md[start + len(heading):], re.M)
    return md[start: start + len(heading) + (nxt.start() if nxt else len(md))]


def mib(n):
    assert n % (1 << 20) == 0
    return f"{n >> 20} MiB"


def test_documented_input_limits_are_the_codes():
    d = defines(SRC / "config.h")
    conf = (ROOT / "docs" / "configuration.md").read_text()
    sec = (ROOT / "docs" / "security.md").read_text()
    yaml_max, json_max, secret_max = mib(d["CFG_YAML_MAX_SIZE"]), mib(d["CFG_JSON_MAX_SIZE"]), mib(d["CFG_SECRET_MAX_SIZE"])
    # every size the fps.yaml and whitelist.json sections quote is the file's limit
    for heading, want in (("## `fps.yaml`", yaml_max), ("## `whitelist.json`", json_max)):
        # the prose about the file; the key table's rows quote limits of their own (cache sizes)
        prose = "\n".join(l for l in section(conf, heading).splitlines() if not l.startswith("| `"))
        quoted = re.findall(r"\d+ MiB", prose)
        assert quoted and set(quoted) == {want}, (heading, quoted, want)
    limits = section(conf, "## Limits")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)`[^|]*\| ([^|]+) \|", limits, re.M)}
    assert rows["fps.yaml"].startswith(f"{yaml_max}; nesting depth {d['CFG_YAML_MAX_DEPTH']}; "
                                       f"{d['CFG_YAML_MAX_NODES']:,} nodes"), rows["fps.yaml"]
    assert rows["whitelist.json"].startswith(f"{json_max}; nesting depth {d['CFG_JSON_MAX_DEPTH']}"), rows
    for table in (limits, sec):
        assert re.search(rf"`fps.yaml` \| {yaml_max}", table) and re.search(rf"`whitelist.json` \| {json_max}", table)
        assert re.search(rf"tunnel certificates and key \| {secret_max} each", table)


def test_documented_admin_and_helper_limits_are_the_codes():
    a = defines(SRC / "admin.c")
    r = defines(SRC / "render.c")
    ops = (ROOT / "docs" / "operations.md").read_text()
    sec = (ROOT / "docs" / "security.md").read_text()
    admin = section(ops, "### Admin endpoints (`admin.bind:admin.port`, default `127.0.0.1:8079`; `--admin ADDR:PORT` "
                         "overrides)")
    assert f"{a['ADMIN_CONN_LIMIT']} connections at once and no per-address" in admin
    assert f"{a['ADMIN_MEM_LIMIT'] // 1024} KiB for a request's line" in admin
    assert f"{a['ADMIN_CONN_TIMEOUT']} s of inactivity" in admin
    for text in (admin, sec):
        assert f"for more than {a['ADMIN_IDLE_GRACE_MS'] // 1000} s is *slow*" in text.replace("\n", " ")
        assert f"more than {a['ADMIN_SLOW_MAX']} are slow" in text.replace("\n", " ")
        assert f"every {a['ADMIN_SWEEP_MS']} ms" in text.replace("\n", " ")
    assert f"at the {a['ADMIN_CONN_LIMIT']}-connection limit" in sec
    assert f"{r['RENDER_HELPER_CHILDREN']} helpers per Squid worker" in ops.replace("\n", " ")
    for stale in ("256 connections at once", "64 per client", "8 KiB header limit, not by time"):
        assert stale not in ops.replace("\n", " ")


def metric_rows():
    """{metric name: its row (or section) text} from docs/operations.md's metric tables; names in
    the Squid cache-manager table carry that table's "left out" sentence."""
    ops = (ROOT / "docs" / "operations.md").read_text()
    rows = {}
    squid_table = False
    for line in ops.splitlines():
        if "every metric below is left out" in line:
            squid_table = True
        elif squid_table and line.strip() and not line.startswith("|"):
            squid_table = False
        if line.startswith("| `fps_"):
            for n in re.findall(r"`(fps_\w+)", line.split("|")[1]):
                rows[n] = line + (" (left out when Squid does not answer)" if squid_table else "")
    return rows


def conditional_metrics():
    """Metric names metrics.c emits only under an `if` (a family with no sample is left out)."""
    lines = (SRC / "metrics.c").read_text().splitlines()
    found = set()
    indent = lambda s: len(s) - len(s.lstrip("\t"))
    for i, line in enumerate(lines):
        for name in re.findall(r'"(fps_[a-z_%]+)', line):
            j = i
            while j > 0 and not re.search(r"[;{}]\s*$", lines[j - 1]) and indent(lines[j - 1]) >= indent(lines[j]):
                j -= 1  # the statement's first line (an `if` line above it is less indented)
            k = j - 1
            while k >= 0 and (not lines[k].strip() or indent(lines[k]) >= indent(lines[j])):
                k -= 1  # the enclosing line
            if k >= 0 and re.match(r"\s*(if|\} else if|else)\b", lines[k]):
                for what in (("tunnel", "upstream") if "%s" in name else (None,)):
                    found.add(name.replace("%s", what) if what else name)
    return found


def test_every_metric_that_can_be_absent_says_so():
    rows = metric_rows()
    conditional = conditional_metrics()
    assert {"fps_start_time_seconds", "fps_state_volume_free_bytes", "fps_upstream_last_check_timestamp_seconds",
            "fps_auth_key_expiry_seconds", "fps_clock_skew_seconds"} <= conditional, conditional
    unsaid = sorted(n for n in conditional if n in rows and not re.search(r"absent|left out", rows[n], re.I))
    undocumented = sorted(n for n in conditional if n not in rows and not n.startswith("fps_squid_"))
    assert unsaid == [], "metrics emitted only sometimes whose docs/operations.md row does not say so"
    assert undocumented == [], "metrics emitted only sometimes that docs/operations.md does not list"


def test_every_status_field_that_can_be_null_says_so():
    src = (SRC / "statusjson.c").read_text()
    nullable = set(re.findall(r'sj_str_or_null\(\w+, "(\w+)"', src)) | set(re.findall(r'sj_time\(\w+, "(\w+)"', src))
    nullable |= set(re.findall(r'cJSON_AddNullToObject\(\w+, "(\w+)"\)', src))
    ops = (ROOT / "docs" / "operations.md").read_text()
    para = ops[ops.index("<!-- nullable: /status -->"):]
    para = para[:para.index("\n\n", para.index("**Fields that can be"))]
    unsaid = sorted(n for n in nullable if not re.search(rf"[`.]{n}`", para))
    assert unsaid == [], "/status fields that can be null but docs/operations.md does not say so"
    assert "`last_reload.result` is `none`" in para and "`state_volume` is `{}`" in para


def test_the_default_admin_port_is_the_codes_everywhere():
    port = defines(SRC / "config.h")["CFG_ADMIN_PORT_DEFAULT"]
    assert port != 9090, "9090 is the Prometheus server's own port"
    assert f'"127.0.0.1:" ADMINCLIENT_STR(CFG_ADMIN_PORT_DEFAULT)' in (SRC / "adminclient.h").read_text()
    conf = (ROOT / "docs" / "configuration.md").read_text()
    assert re.search(rf"^\| `admin.port` \| integer \| `{port}` \|", conf, re.M)
    wants = {
        "README.md": [f"127.0.0.1:{port}"],
        "docs/operations.md": [f"default `127.0.0.1:{port}`"],
        "examples/config/fps.yaml": [f"port: {port}"],
        "examples/run.sh": [f"admin on 127.0.0.1:{port}", f"curl -s 127.0.0.1:{port}/status"],
        "deploy/Dockerfile": [f'"127.0.0.1:{port}"'],
        "deploy/k8s/base/daemonset.yaml": [f"- 127.0.0.1:{port}"],
        "deploy/k8s/seed/configmap.yaml": [f"port: {port}"],
    }
    for path, needles in wants.items():
        text = (ROOT / path).read_text()
        for n in needles:
            assert n in text, f"{path}: {n}"
    stale = []
    for top in ("README.md", "docs", "deploy", "examples", "fps-controller"):
        for p in [ROOT / top] if (ROOT / top).is_file() else sorted((ROOT / top).rglob("*")):
            if p.is_file():
                for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                    if "9090" in line and "rometheus" not in line:
                        stale.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert stale == []


def test_the_image_the_overlays_pull_is_the_one_the_docs_build_and_push():
    """`make image` names the image localhost/fps:VERSION; the overlays pull newName:newTag;
    deploy/README.md shows how to build (or tag) and push that very name with podman."""
    version = (ROOT / "VERSION").read_text().strip()
    readme = (ROOT / "deploy" / "README.md").read_text()
    for overlay in ("supervise", "sidecar"):
        k = yaml.safe_load((ROOT / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        img = next(i for i in k["images"] if i["name"] == "fps")
        assert img["newTag"] == version, overlay
        name = img["newName"]
        assert f"make image IMAGE={name}:$(cat VERSION)" in readme
        assert f"podman push {name}:$(cat VERSION)" in readme
        assert f"podman tag localhost/fps:$(cat VERSION) {name}:$(cat VERSION)" in readme
    assert readme.index("podman push") < readme.index("With Docker instead of podman")
