"""1. Every YAML file under deploy/ parses (all documents), and the files embedded in ConfigMaps
parse in their own format."""

import json
import os

import pytest
import yaml

from deploy_helpers import DEPLOY


def yaml_files():
    out = []
    for root, _dirs, files in os.walk(DEPLOY):
        for name in files:
            if name.endswith((".yaml", ".yml")) or name == "Kustomization":
                out.append(os.path.relpath(os.path.join(root, name), DEPLOY))
    return sorted(out)


def test_there_are_yaml_files():
    # Guards the parametrized test below against silently collecting nothing.
    assert len(yaml_files()) >= 10, yaml_files()


@pytest.mark.parametrize("rel", yaml_files())
def test_yaml_parses(rel):
    path = os.path.join(DEPLOY, rel)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "\t" not in text, f"{rel}: tab characters (YAML indentation must be spaces)"
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, f"{rel}: no YAML document"
    for doc in docs:
        assert isinstance(doc, (dict, list)), f"{rel}: top level is {type(doc).__name__}"
        if not isinstance(doc, dict) or "kind" not in doc or rel.endswith("kustomization.yaml"):
            continue
        assert doc.get("apiVersion"), f"{rel}: {doc['kind']} without apiVersion"
        assert doc.get("metadata", {}).get("name"), f"{rel}: {doc['kind']} without metadata.name"
        # Files carried inside ConfigMaps/Secrets must be valid in their own format.
        for section in ("data", "stringData"):
            for key, value in (doc.get(section) or {}).items():
                if key.endswith((".yaml", ".yml")):
                    yaml.safe_load(value)
                elif key.endswith(".json"):
                    json.loads(value)
