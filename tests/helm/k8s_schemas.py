"""Turn the Kubernetes OpenAPI document and CRD manifests into strict JSON Schemas.

kubeconform validates each object against one JSON Schema (draft 4) file per
kind. It normally downloads them from GitHub; here they are generated offline
from sources the Go module proxy serves:

- built-in kinds: ``api/openapi-spec/swagger.json`` in the ``k8s.io/kubernetes``
  module (OpenAPI v2, one ``definitions`` map with ``$ref`` between them);
- custom resources: the ``openAPIV3Schema`` of each CRD manifest (KEDA,
  prometheus-operator).

Each output file is self-contained: the kind's schema at the root plus the
definitions it reaches, so no cross-file ``$ref`` has to be resolved. Files are
laid out as ``<group>/<version>/<kind>.json``, which kubeconform addresses with
``{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json``; for the core
group (apiVersion ``v1``) kubeconform's ``.Group`` is ``v1``, so those land in
``v1/v1/``.

Strictness matches what the API server does with unknown fields: every object
schema that lists ``properties`` gets ``additionalProperties: false`` unless it
preserves unknown fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]

_REF_PREFIX = "#/definitions/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
# Quantities are strings in the OpenAPI document, but the API accepts numbers
# (`cpu: 1`), as does every kubectl user.
_NUMBER_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf")


def schema_path(root: Path, api_version: str, kind: str) -> Path:
    """Where the schema for ``api_version``/``kind`` lives under ``root``.

    Mirrors kubeconform's template variables: ``.Group`` is the part of the
    apiVersion before the slash (``v1`` for the core group), ``.ResourceKind``
    is the lower-cased kind.
    """
    group, _, version = api_version.rpartition("/")
    return root / (group or version) / version / f"{kind.lower()}.json"


# kubeconform's -schema-location template matching schema_path().
LOCATION_TEMPLATE = "{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json"


def _strict(schema: Schema) -> Schema:
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def _convert_openapi_v2(node: Schema) -> Schema:
    """Convert one schema node of the OpenAPI v2 document (recursively)."""
    if "$ref" in node:
        return {"$ref": node["$ref"]}
    if node.get("format") == "int-or-string":
        return dict(_INT_OR_STRING)
    out: Schema = {}
    for key, value in node.items():
        if key.startswith("x-") or key == "description":
            continue
        if key == "properties":
            out[key] = {name: _convert_openapi_v2(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert_openapi_v2(value)
        else:
            out[key] = value
    return _strict(out)


def _convert_structural(node: Schema) -> Schema:
    """Convert one node of a CRD's structural (OpenAPI v3) schema (recursively)."""
    if node.get("x-kubernetes-int-or-string") and not any(
        key in node for key in _SCHEMA_LIST_KEYWORDS
    ):
        return dict(_INT_OR_STRING)
    out: Schema = {}
    for key, value in node.items():
        if key.startswith("x-") or key in ("description", "nullable"):
            continue
        if key == "properties":
            out[key] = {name: _convert_structural(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _convert_structural(value)
        elif key in _SCHEMA_LIST_KEYWORDS:
            out[key] = [_convert_structural(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return out
    return _strict(out)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            yield ref.removeprefix(_REF_PREFIX)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _closure(roots: Iterable[str], definitions: dict[str, Schema]) -> dict[str, Schema]:
    """The definitions reachable from ``roots`` through ``$ref``."""
    seen: dict[str, Schema] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = definitions[name]
        todo.extend(_refs(definitions[name]))
    return seen


def _write(path: Path, schema: Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, sort_keys=True), encoding="utf-8")


def _document(root: Schema, definitions: dict[str, Schema]) -> Schema:
    document: Schema = {"$schema": "http://json-schema.org/draft-04/schema#", **root}
    needed = _closure(_refs(root), definitions)
    if needed:
        document["definitions"] = dict(sorted(needed.items()))
    return document


def load_definitions(swagger: Path) -> dict[str, Schema]:
    """All definitions of the OpenAPI v2 document, converted to strict JSON Schema."""
    raw: dict[str, Schema] = json.loads(swagger.read_text(encoding="utf-8"))["definitions"]
    definitions = {name: _convert_openapi_v2(node) for name, node in raw.items()}
    definitions[_QUANTITY] = dict(_NUMBER_OR_STRING)
    return definitions


def write_builtin_schemas(swagger: Path, out: Path) -> int:
    """Write one schema file per built-in kind; returns how many were written."""
    raw: dict[str, Schema] = json.loads(swagger.read_text(encoding="utf-8"))["definitions"]
    definitions = load_definitions(swagger)
    written = 0
    for name, node in raw.items():
        for gvk in node.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            api_version = f"{group}/{version}" if group else version
            _write(schema_path(out, api_version, kind), _document(definitions[name], definitions))
            written += 1
    return written


def write_crd_schemas(crd_file: Path, definitions: dict[str, Schema], out: Path) -> int:
    """Write one schema file per served version of the CRD(s) in ``crd_file``."""
    written = 0
    for crd in yaml.safe_load_all(crd_file.read_text(encoding="utf-8")):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            root = _convert_structural(version["schema"]["openAPIV3Schema"])
            # CRDs declare metadata as a bare object; hold it to ObjectMeta.
            root.setdefault("properties", {})["metadata"] = {"$ref": _REF_PREFIX + _OBJECT_META}
            api_version = f"{spec['group']}/{version['name']}"
            _write(
                schema_path(out, api_version, spec["names"]["kind"]),
                _document(root, definitions),
            )
            written += 1
    return written
