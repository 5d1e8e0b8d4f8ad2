"""docs/configuration.md against the parser: every key `fps-controller keys` lists (the parser's
own table) has a row in the reference, every row is a key the parser accepts, each row's example
value is accepted by `fps-controller check`, and the reference's complete examples are valid.
Also: the repository stands alone (nothing points at files outside it)."""
import functools
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fpsharness import BIN, ROOT

EXAMPLE_KEYS = '{"keys": [{"id": "docs", "key": "docs-example-key-0123456789", "expires": "2099-01-01T00:00:00Z"}]}'


@functools.lru_cache(maxsize=None)
def docs_ca():
    """A real CA certificate (PEM text): `check --secrets-dir` loads tunnel-ca.pem as `run` does."""
    d = Path(tempfile.mkdtemp(prefix="docs-ca-"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=FPS Docs Test CA", "-keyout", str(d / "ca.key"), "-out",
                    str(d / "ca.pem")], check=True, capture_output=True)
    text = (d / "ca.pem").read_text()
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    return text

DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([^`]+)` \|")


def doc_keys(text):
    """{(file, key): row cells} for every row of a table under a `<!-- keys: FILE -->` marker."""
    keys, current = {}, None
    for line in text.splitlines():
        m = re.match(r"<!-- keys: (\S+) -->", line)
        if m:
            current = m.group(1)
            continue
        if current is None:
            continue
        if not line.startswith("|"):
            if line.strip() == "" and keys and any(f == current for f, _ in keys):
                current = None
            continue
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert (current, m.group(1)) not in keys, f"{m.group(1)} documented twice"
            keys[(current, m.group(1))] = cells
    return keys


def parser_keys():
    out = subprocess.run([str(BIN / "fps-controller"), "keys"], capture_output=True, text=True, check=True).stdout
    return {tuple(line.split("\t")) for line in out.splitlines()}


def test_every_parser_key_is_documented_and_every_documented_key_exists():
    documented = set(doc_keys(DOC.read_text()))
    accepted = parser_keys()
    assert len(accepted) > 40
    assert accepted - documented == set(), "keys the parser accepts but docs/configuration.md lacks"
    assert documented - accepted == set(), "keys docs/configuration.md lists but the parser rejects"


def test_doc_key_extraction_sees_a_missing_row():
    """The check above can fail: drop one row and the difference shows it."""
    text = DOC.read_text().replace("| `tunnel.local_port` |", "| tunnel.local_port |")
    assert ("fps.yaml", "tunnel.local_port") in parser_keys() - set(doc_keys(text))


def check(tmp_path, yaml_text, json_text=None, secrets=None):
    cfg, sec = tmp_path / "config", tmp_path / "secrets"
    for d in (cfg, sec):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            f.unlink()
    (cfg / "fps.yaml").write_text(yaml_text)
    if json_text is not None:
        (cfg / "whitelist.json").write_text(json_text)
    for name, content in (secrets or {"tunnel-ca.pem": docs_ca()}).items():
        (sec / name).write_text(content)
    return subprocess.run([str(BIN / "fps-controller"), "check", "--config-dir", str(cfg), "--secrets-dir", str(sec)],
                          capture_output=True, text=True)


def nest(path, value):
    """{"a": {"b": value}} for "a.b"; a "[]" segment makes a one-item list."""
    head, _, rest = path.partition(".")
    inner = nest(rest, value) if rest else value
    if head.endswith("[]"):
        return {head[:-2]: [inner]}
    return {head: inner}


def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
    return a


def check_all(tmp_path, yaml_texts):
    """check() on each text, four at a time (each in a directory of its own): every `check`
    runs `squid -k parse`, and these tests make dozens of them."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda it: check(tmp_path / str(it[0]), it[1]), enumerate(yaml_texts)))


def test_each_documented_example_value_is_accepted(tmp_path):
    rows = doc_keys(DOC.read_text())
    cases = []
    for (file, key), cells in rows.items():
        example = cells[4].strip("`") if len(cells) > 4 else ""
        if file != "fps.yaml" or not example or "[]" in key:
            continue
        # upstream and tunnel need their required key; routes may name either.
        base = {"upstream": {"host": "proxy.example.test"}, "tunnel": {"server": "tunnel.example.test"}}
        cases.append((key, example, yaml.safe_dump(merge(base, nest(key, yaml.safe_load(example))))))
    for (key, example, _), r in zip(cases, check_all(tmp_path, [c[2] for c in cases])):
        assert r.returncode == 0, f"{key}: example `{example}` rejected: {r.stderr}"
    assert len(cases) >= 25


def test_documented_integer_limits_are_the_parsers(tmp_path):
    """A row that says "A..B" for an integer: A and B are accepted, A-1 and B+1 rejected."""
    base = {"upstream": {"host": "proxy.example.test"}, "tunnel": {"server": "tunnel.example.test"}}
    tried = 0
    cases = []
    for (file, key), cells in doc_keys(DOC.read_text()).items():
        m = re.match(r"(\d+)\.\.(\d+)", cells[3])
        if file != "fps.yaml" or not cells[1].startswith("integer") or not m:
            continue
        lo, hi = int(m.group(1)), int(m.group(2))
        for value, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
            cases.append((key, lo, hi, value, ok,
                          yaml.safe_dump(merge(yaml.safe_load(yaml.safe_dump(base)), nest(key, value)))))
        tried += 1
    for (key, lo, hi, value, ok, _), r in zip(cases, check_all(tmp_path, [c[5] for c in cases])):
        assert (r.returncode == 0) == ok, f"{key}: {value} {'rejected' if ok else 'accepted'}: {r.stderr}"
        if not ok:
            assert f"must be in {lo}..{hi}" in r.stderr
    assert tried >= 7


def test_complete_examples_are_valid(tmp_path):
    text = DOC.read_text()
    fps_yaml = re.search(r"### A complete example\n\n```yaml\n(.*?)```", text, re.S).group(1)
    wl = re.search(r"## `whitelist.json`.*?```json\n(.*?)```", text, re.S).group(1)
    keys = re.search(r"### `apikeys.json`\n\n```json\n(.*?)```", text, re.S).group(1)
    r = check(tmp_path, fps_yaml, wl, {"tunnel-ca.pem": docs_ca(), "apikeys.json": keys})
    assert r.returncode == 0, r.stderr
    assert "4 entries" in r.stdout
    # The same text with a typo is refused, naming the key and the keys the parser knows.
    r = check(tmp_path, fps_yaml.replace("  local_port:", "  local_prot:"), wl)
    assert r.returncode == 1
    assert "unknown key 'local_prot' in 'tunnel' (expected one of: server, address, port, local_port)" in r.stderr


@pytest.mark.parametrize("top", ["README.md", "docs", "fps-controller", "deploy", "examples", "squid-templates",
                                 "stunnel-conf", "bench", "tests"])
def test_the_repository_stands_alone(top):
    """README, docs, code comments, error hints and examples point inside the repository."""
    bad = []
    paths = [ROOT / top] if (ROOT / top).is_file() else sorted((ROOT / top).rglob("*"))
    for p in paths:
        if not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"shared/|SPEC(\.md| ?§| section)|FIELD.NOTES", line) and p != Path(__file__):
                bad.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert bad == []
