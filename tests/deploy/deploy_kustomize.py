"""A small, offline kustomize renderer for the subset that deploy/ uses.

Why this exists: the tests must build the overlays on a machine with no kubectl. Debian 12's
`kubernetes-client` is kubectl 1.20 with kustomize v2.0.3, which predates `patches:` and
directories in `resources:` (the syntax every current kubectl expects), so it cannot be the
reference. This renderer implements exactly what deploy/ uses and refuses anything else, so a
kustomization that grows beyond it fails loudly here instead of being silently mis-rendered.
When a kubectl with kustomize >= v4 is on PATH, test_deploy_kustomize.py checks that both
produce the same objects.

Supported kustomization fields: apiVersion, kind, namespace, resources (files and
directories), images (name, newName, newTag, digest), patches (path or inline patch; a YAML
list is JSON 6902 and needs a target, a mapping is a strategic-merge patch).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}

# Strategic-merge keys of the core/apps types we patch (from the Kubernetes API's
# patchMergeKey tags). Lists not named here are replaced whole, as in Kubernetes.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
}

CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService",
}


class KustomizeError(Exception):
    pass


def kustomization_file(directory: str) -> str:
    for name in KUSTOMIZATION_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise KustomizeError(f"{directory}: no kustomization file")


def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def res_id(obj: dict) -> tuple[str, str, str, str]:
    md = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), md.get("namespace") or "", md.get("name", ""))


def build(directory: str) -> list[dict]:
    """Render the kustomization in `directory` into a list of objects."""
    directory = os.path.abspath(directory)
    kpath = kustomization_file(directory)
    with open(kpath, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kpath}: fields outside the supported subset: {sorted(unknown)}")

    objs: list[dict] = []
    for ref in k.get("resources") or []:
        path = os.path.normpath(os.path.join(directory, ref))
        if os.path.isdir(path):
            objs.extend(build(path))
        elif os.path.isfile(path):
            objs.extend(load_docs(path))
        else:
            raise KustomizeError(f"{kpath}: resource {ref!r} does not exist")

    for patch in k.get("patches") or []:
        apply_patch(objs, patch, directory, kpath)

    for image in k.get("images") or []:
        apply_image(objs, image)

    ns = k.get("namespace")
    if ns:
        for obj in objs:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = ns

    seen = set()
    for obj in objs:
        rid = res_id(obj)
        if rid in seen:
            raise KustomizeError(f"{kpath}: duplicate resource {rid}")
        seen.add(rid)
    return objs


# ---- patches --------------------------------------------------------------------------------

def _group_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        g, v = api_version.split("/", 1)
        return g, v
    return "", api_version


def _matches(obj: dict, target: dict) -> bool:
    group, version = _group_version(obj.get("apiVersion", ""))
    md = obj.get("metadata") or {}
    checks = {
        "group": group, "version": version, "kind": obj.get("kind"),
        "name": md.get("name"), "namespace": md.get("namespace"),
    }
    for key, want in target.items():
        if key not in checks:
            raise KustomizeError(f"patch target field {key!r} is not supported")
        if checks[key] != want:
            return False
    return True


def apply_patch(objs: list[dict], patch: dict, directory: str, kpath: str) -> None:
    if "path" in patch:
        with open(os.path.join(directory, patch["path"]), encoding="utf-8") as f:
            text = f.read()
    elif "patch" in patch:
        text = patch["patch"]
    else:
        raise KustomizeError(f"{kpath}: patch needs path or patch")
    extra = set(patch) - {"path", "patch", "target"}
    if extra:
        raise KustomizeError(f"{kpath}: patch options not supported: {sorted(extra)}")
    body = yaml.safe_load(text)
    target = patch.get("target")

    if isinstance(body, list):
        if not target:
            raise KustomizeError(f"{kpath}: a JSON 6902 patch needs a target")
        hits = [o for o in objs if _matches(o, target)]
        if not hits:
            raise KustomizeError(f"{kpath}: patch target {target} matches nothing")
        for obj in hits:
            json6902(obj, body)
        return

    if not isinstance(body, dict):
        raise KustomizeError(f"{kpath}: patch is neither a list nor a mapping")
    if not target:
        target = {"kind": body.get("kind"), "name": (body.get("metadata") or {}).get("name")}
    hits = [o for o in objs if _matches(o, target)]
    if not hits:
        raise KustomizeError(f"{kpath}: strategic-merge patch matches nothing: {target}")
    for obj in hits:
        merged = strategic_merge(obj, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
        obj.clear()
        obj.update(merged)


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        for key, value in patch.items():
            if key == "$patch":
                continue
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = _strip_directives(copy.deepcopy(value))
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeError(f"list {field}: patch item without merge key {key!r}")
            idx = next((i for i, cur in enumerate(out) if isinstance(cur, dict) and _same(field, key, cur, item)), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    del out[idx]
            elif idx is None:
                out.append(_strip_directives(copy.deepcopy(item)))
            else:
                out[idx] = strategic_merge(out[idx], item, field)
        return out
    return _strip_directives(copy.deepcopy(patch))


def _same(field: str, key: str, a: dict, b: dict) -> bool:
    if a.get(key) != b.get(key):
        return False
    if field == "ports":
        # kustomize merges container ports on (containerPort, protocol), protocol TCP by default.
        return a.get("protocol", "TCP") == b.get("protocol", "TCP")
    return True


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KustomizeError(f"cannot descend into {type(doc).__name__} at {part!r}")
    return doc


def json6902(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op["path"])
        if not parts:
            raise KustomizeError("patching the whole document is not supported")
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if kind == "add":
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                else:
                    parent.insert(int(last), value)
            else:
                parent[last] = value
        elif kind == "replace":
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                parent[int(last)] = value
            else:
                if last not in parent:
                    raise KustomizeError(f"replace: {op['path']} does not exist")
                parent[last] = value
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent[last]
            if cur != op["value"]:
                raise KustomizeError(f"test failed at {op['path']}")
        else:
            raise KustomizeError(f"JSON 6902 op {kind!r} is not supported")


# ---- images ---------------------------------------------------------------------------------

def split_image(image: str) -> tuple[str, str | None, str | None]:
    """'reg:5000/a/b:tag@sha256:x' -> ('reg:5000/a/b', 'tag', 'sha256:x')."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def apply_image(objs: list[dict], rule: dict) -> None:
    extra = set(rule) - {"name", "newName", "newTag", "digest"}
    if extra:
        raise KustomizeError(f"images: fields not supported: {sorted(extra)}")

    def rewrite(container: dict) -> None:
        image = container.get("image")
        if not isinstance(image, str):
            return
        name, tag, digest = split_image(image)
        if name != rule["name"]:
            return
        name = rule.get("newName", name)
        if "digest" in rule:
            container["image"] = f"{name}@{rule['digest']}"
            return
        if "newTag" in rule:
            tag, digest = str(rule["newTag"]), None
        out = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        container["image"] = out

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(value, list):
                    for c in value:
                        if isinstance(c, dict):
                            rewrite(c)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for obj in objs:
        walk(obj)
