"""4. deploy/Dockerfile, checked statically (no Docker engine here), plus a dry run of the build
stage's `make` on exactly the files the Dockerfile copies."""

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

from deploy_helpers import (CONTROLLER, DOCKERIGNORE, REPO, WORKLOAD, built, container, copy_sources,
                            dockerfile_stages, find, pod_spec)

COMPILERS = re.compile(r"^(gcc|g\+\+|cpp|clang(-\d+)?|cc|make|build-essential|libc6-dev|pkg-config"
                       r"|binutils|autoconf|automake|libtool|cmake|.*-dev)$")
SECRETISH = re.compile(r"(\.pem|\.key|\.p12|\.crt|apikeys|upstream-password|secrets?)(/|$)", re.I)
# What each -l in the Makefile's LIBS needs, at build time and at run time (Debian 12 names).
LIB_PACKAGES = {
    "microhttpd": ("libmicrohttpd-dev", "libmicrohttpd12"),
    "cjson": ("libcjson-dev", "libcjson1"),
    "yaml": ("libyaml-dev", "libyaml-0-2"),
    "ssl": ("libssl-dev", "libssl3"),
    "crypto": ("libssl-dev", "libssl3"),
}


@pytest.fixture(scope="module")
def stages():
    s = dockerfile_stages()
    assert len(s) >= 2, "expected a multi-stage build"
    return s


def instructions(stage, name):
    return [rest for ins, rest in stage["ins"] if ins == name]


def apt_installed(stage):
    pkgs = []
    for run in instructions(stage, "RUN"):
        for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|$)", run):
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def makefile():
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
        return f.read()


def makefile_libs():
    m = re.search(r"^LIBS\s*:?=\s*(.*)$", makefile(), re.M)
    return re.findall(r"-l(\S+)", m.group(1)) if m else []


def test_base_images_are_debian_12(stages):
    aliases = {s["name"] for s in stages if s["name"]}
    for s in stages:
        if s["from"] in aliases:
            continue
        assert re.fullmatch(r"debian:(12|bookworm)([-.][\w.-]*)?(@sha256:[0-9a-f]{64})?", s["from"]), s["from"]
        assert s["from"] != "debian:latest"


def test_final_stage_runs_as_numeric_non_root_user(stages):
    users = instructions(stages[-1], "USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "numeric uid, so the kubelet can verify runAsNonRoot"
    assert int(user) != 0


def test_no_secrets_copied(stages):
    for s in stages:
        for ins in ("COPY", "ADD"):
            for rest in instructions(s, ins):
                _flags, sources, _dest = copy_sources(rest)
                for src in sources:
                    assert not SECRETISH.search(src), f"{ins} {src}"
        for env in instructions(s, "ENV") + instructions(s, "ARG"):
            assert not re.search(r"(key|password|secret|token)\s*=", env, re.I), env


def test_copy_sources_exist(stages):
    names = [s["name"] for s in stages]
    targets = set(re.findall(r"^(build/[\w./-]+)\s*:", makefile(), re.M))
    all_rule = re.search(r"^BINS\s*:?=\s*(.*)$", makefile(), re.M)
    bins = set(all_rule.group(1).split()) if all_rule else set()
    for i, s in enumerate(stages):
        for rest in instructions(s, "COPY"):
            flags, sources, _dest = copy_sources(rest)
            if "from" in flags:
                src_stage = stages[names.index(flags["from"])]
                assert names.index(flags["from"]) < i
                src_wd = (instructions(src_stage, "WORKDIR") or ["/"])[0].rstrip("/") + "/"
                for src in sources:
                    assert src.startswith(src_wd), src
                    rel = src[len(src_wd):]
                    # build/ outputs exist only inside the build stage: check the Makefile makes them.
                    assert rel in targets, f"{src}: no Makefile rule for {rel}"
                    assert os.path.basename(rel) in bins, f"{rel} is not built by `make all`"
            else:
                assert not flags, flags
                for src in sources:
                    assert os.path.exists(os.path.join(REPO, src)), f"COPY {src}: not in the repository"


def dockerignore_patterns():
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def ignored(path, patterns):
    path = path.rstrip("/")
    verdict = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes):
            verdict = not neg
    return verdict


def test_context_sources_are_not_dockerignored(stages):
    patterns = dockerignore_patterns()
    assert ignored(".git", patterns) and ignored("build/fps-controller", patterns)
    assert ignored("x/tunnel-client.key", patterns)
    for s in stages:
        for rest in instructions(s, "COPY"):
            flags, sources, _dest = copy_sources(rest)
            if "from" in flags:
                continue
            for src in sources:
                assert not ignored(src, patterns), f"COPY {src} is excluded by {DOCKERIGNORE}"
                root = os.path.join(REPO, src)
                for f in glob.glob(os.path.join(root, "**"), recursive=True):
                    if os.path.isfile(f):
                        rel = os.path.relpath(f, REPO)
                        assert not ignored(rel, patterns), f"{rel} would be missing from the image"


def test_runtime_stage_has_no_compilers_and_the_needed_packages(stages):
    final = stages[-1]
    pkgs = apt_installed(final)
    bad = [p for p in pkgs if COMPILERS.match(p)]
    assert not bad, f"build tools in the runtime stage: {bad}"
    for need in ("squid", "stunnel4", "ca-certificates", "curl"):
        assert need in pkgs, need
    for lib in makefile_libs():
        assert lib in LIB_PACKAGES, f"-l{lib}: add its Debian packages to this test and the Dockerfile"
        assert LIB_PACKAGES[lib][1] in pkgs, f"runtime package for -l{lib}"
    assert not any("make" in r.split() for r in instructions(final, "RUN"))
    assert "--no-install-recommends" in " ".join(instructions(final, "RUN"))


def test_build_stage_has_build_deps(stages):
    pkgs = apt_installed(stages[0])
    for lib in makefile_libs():
        assert LIB_PACKAGES[lib][0] in pkgs, f"build package for -l{lib}"
    assert any(re.search(r"\bmake\b.*\ball\b", r) for r in instructions(stages[0], "RUN"))


def test_healthcheck_uses_admin_healthz(stages):
    """The HEALTHCHECK asks this container's own controller, wherever its admin endpoints are
    (8079, or the spare while another instance holds it): `fps-controller get` reads the
    address from the state directory the image's FPS_STATE_DIR names."""
    hc = instructions(stages[-1], "HEALTHCHECK")
    assert hc, "no HEALTHCHECK"
    assert re.search(r"CMD\s+\[?\"?/usr/local/bin/fps-controller\"?,?\s+\"?get\"?,?\s+\"?/healthz", hc[-1]), hc[-1]
    env = " ".join(instructions(stages[-1], "ENV"))
    assert "FPS_STATE_DIR=/var/lib/fps" in env


def exec_form(text):
    import json
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def test_entrypoint_and_cmd_match_the_manifest(stages):
    final = stages[-1]
    entry = exec_form(instructions(final, "ENTRYPOINT")[-1])
    cmd = exec_form(instructions(final, "CMD")[-1])
    c = container(pod_spec(find(built("supervise"), *WORKLOAD)), CONTROLLER)
    assert entry == c["command"]
    assert cmd == c["args"]


def test_install_layout(stages):
    final = stages[-1]
    copies = [copy_sources(r) for r in instructions(final, "COPY")]
    dests = {os.path.basename(src.rstrip("/")): dest for _f, srcs, dest in copies for src in srcs}
    for b in ("fps-controller", "fps-acl", "fps-auth"):
        assert dests[b].rstrip("/") == "/usr/local/bin", b
    # The controller looks for templates at <exe dir>/../share/fps/.
    assert dests["squid-templates"].rstrip("/") == "/usr/local/share/fps/squid-templates"
    assert dests["stunnel-conf"].rstrip("/") == "/usr/local/share/fps/stunnel-conf"


@pytest.mark.skipif(not shutil.which("make"), reason="make not installed")
def test_build_stage_context_is_enough_for_make(stages, tmp_path):
    """Copy exactly what the build stage COPYs and ask make for a dry run of `make all`: a
    missing input (a new directory the Makefile needs) fails here instead of in `docker build`."""
    ref = subprocess.run(["make", "-n", "all"], cwd=REPO, capture_output=True, text=True, timeout=120)
    if ref.returncode != 0:
        pytest.skip(f"`make -n all` fails in the repository itself: {ref.stderr.strip()}")
    build = stages[0]
    for rest in instructions(build, "COPY"):
        _flags, sources, dest = copy_sources(rest)
        for src in sources:
            s = os.path.join(REPO, src)
            d = tmp_path / (dest.strip("./") if dest not in ("./", ".") else "")
            if os.path.isdir(s):
                shutil.copytree(s, tmp_path / src.rstrip("/"), dirs_exist_ok=True)
            else:
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(s, d / os.path.basename(src))
    run = subprocess.run(["make", "-n", "all"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def apt_lists_present():
    return bool(glob.glob("/var/lib/apt/lists/*Packages*"))


@pytest.mark.skipif(not shutil.which("apt-cache") or not apt_lists_present(),
                    reason="no apt package lists (run apt-get update)")
def test_runtime_packages_exist_in_debian(stages):
    pkgs = sorted(set(apt_installed(stages[-1]) + apt_installed(stages[0])))
    run = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs], capture_output=True, text=True)
    found = set(re.findall(r"^Package: (\S+)$", run.stdout, re.M))
    assert set(pkgs) <= found, f"not in the apt lists: {sorted(set(pkgs) - found)}"
