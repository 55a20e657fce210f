"""Avro schema files: loading, cross-file named types, versions, fingerprints.

A ``SchemaStore`` reads every ``*.avsc`` file under its directories once, at
declaration time, so the per-record path only ever sees parsed schemas.

File conventions::

    schemas/
      address.avsc       shop.Address (a record other files reference by name)
      order.v1.avsc      shop.Order, version v1
      order.v2.avsc      shop.Order, version v2
      order.avsc         shop.Order, version "latest": the newest

* Each file holds one named type (record, enum or fixed) at the top level; the
  store indexes it by its full name (``namespace.name``), not by file name.
* Several files may define the same full name: they are versions of one
  schema. A file name ending in ``.vN.avsc`` is version ``vN``; a file without
  that suffix is version ``latest``. The newest version is ``latest`` if it
  exists, else the highest ``vN``. At most one file per name and version.
* A file may use a named type defined in another file (``"type":
  "shop.Address"``). The reference resolves to the newest version of that
  type, which is copied into the referencing schema at its first use, so each
  stored schema is self-contained: its fingerprint and the text registered in
  a Schema Registry match what any other Avro library computes for it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from fastavro import parse_schema
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from streamkit.errors import DeclarationError

LATEST = "latest"
"""Version label of a schema file without a ``.vN`` suffix; it is the newest."""

_VERSION_SUFFIX = re.compile(r"\.v([0-9]+)$")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})

StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True, eq=False)
class AvroSchema:
    """One version of one named Avro type, parsed and fingerprinted.

    Attributes:
        name: Full name, for example ``"shop.Order"``.
        version: ``"vN"`` from a ``.vN.avsc`` file name, or ``"latest"``.
        path: The file it was read from.
        definition: The schema as JSON data, self-contained: named types from
            other files are copied in and every name is a full name.
        parsed: ``definition`` parsed by fastavro, ready for its reader and writer.
        canonical_form: The Avro Parsing Canonical Form, the input of ``fingerprint``.
        fingerprint: CRC-64-AVRO (Rabin) of ``canonical_form``, 8 bytes in
            little-endian order, exactly as the single-object encoding
            writes it after its ``C3 01`` marker.

    """

    name: str
    version: str
    path: Path
    definition: dict[str, Any]
    parsed: Any
    canonical_form: str
    fingerprint: bytes

    def to_json(self) -> str:
        """Return ``definition`` as compact JSON, the text sent to a Schema Registry."""
        return orjson.dumps(self.definition).decode()


class SchemaStore:
    """Every ``*.avsc`` file under some directories, indexed by full name and version.

    Example::

        store = SchemaStore("schemas")              # or SchemaStore(["a/", "b/x.avsc"])
        order = store.get("shop.Order")             # the newest version
        order_v1 = store.get("shop.Order", "v1")

    Raises:
        DeclarationError: A path does not exist, a file is not a valid Avro
            schema, a named type is unknown, or two files claim the same
            name and version.

    """

    def __init__(self, paths: StrPath | Iterable[StrPath] = "schemas") -> None:
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        # Absolute paths, so messages say where the store looked even when
        # the default "schemas" was resolved against an unexpected cwd.
        self.paths = tuple(Path(p).absolute() for p in paths)
        self._versions = _load(_schema_files(self.paths))

    @property
    def names(self) -> list[str]:
        """Sorted full names of every type defined at the top level of a file."""
        return sorted(self._versions)

    def get(self, name: str, version: str | None = None) -> AvroSchema:
        """Return version ``version`` of ``name``, or its newest version if None.

        Raises:
            DeclarationError: The name or version is not in the store; the
                message lists the known ones.

        """
        versions = self._versions.get(name)
        if versions is None:
            known = ", ".join(self.names) or f"none: no *.avsc files under {_show(self.paths)}"
            raise DeclarationError(f"unknown Avro schema {name!r}; known schemas: {known}")
        if version is None:
            return versions[-1]
        for schema in versions:
            if schema.version == version:
                return schema
        known = ", ".join(s.version for s in versions)
        raise DeclarationError(
            f"Avro schema {name!r} has no version {version!r}; versions: {known}"
        )

    def versions(self, name: str) -> tuple[AvroSchema, ...]:
        """Return every version of ``name``, oldest first (empty if unknown)."""
        return self._versions.get(name, ())

    def __iter__(self) -> Iterator[AvroSchema]:
        """Yield every version of every schema, by name, oldest version first."""
        for name in self.names:
            yield from self._versions[name]

    def __len__(self) -> int:
        """Count schema files loaded (every version counts)."""
        return sum(len(v) for v in self._versions.values())


@dataclass(frozen=True, slots=True)
class _Source:
    """A schema file read and named, before any reference is resolved."""

    path: Path
    raw: dict[str, Any]
    name: str
    version: str
    order: float  # sort key within one name: N for vN, infinity for latest


def _show(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def _schema_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Sorted, so load order and every message are the same on any
            # filesystem.
            files.extend(sorted(path.rglob("*.avsc")))
        elif path.is_file():
            files.append(path)
        else:
            raise DeclarationError(f"Avro schema path {path} does not exist")
    return files


def _load(files: list[Path]) -> dict[str, tuple[AvroSchema, ...]]:
    grouped: dict[str, list[_Source]] = {}
    for path in files:
        source = _read(path)
        grouped.setdefault(source.name, []).append(source)
    for name, group in grouped.items():
        group.sort(key=lambda s: s.order)
        for older, newer in pairwise(group):
            if older.version == newer.version:
                raise DeclarationError(
                    f"{older.path} and {newer.path} both define version {older.version!r} "
                    f"of Avro schema {name!r}; rename one to <name>.vN.avsc"
                )
    # The definitions a reference may resolve to: each name's newest file,
    # including the named types nested inside it. A top-level definition wins
    # over a nested copy of the same name elsewhere.
    definitions: dict[str, tuple[Any, str]] = {}
    for group in grouped.values():
        _collect(group[-1].raw, "", definitions)
    for name, group in grouped.items():
        definitions[name] = (group[-1].raw, "")
    return {
        name: tuple(_build(source, definitions) for source in group)
        for name, group in grouped.items()
    }


def _read(path: Path) -> _Source:
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DeclarationError(f"cannot read Avro schema {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") not in _NAMED:
        raise DeclarationError(
            f"Avro schema {path}: the top level must be a record, enum or fixed, "
            "so the schema has a full name that topics can refer to"
        )
    try:
        name, _ = _full_name(raw, "")
    except ValueError as exc:
        raise DeclarationError(f"invalid Avro schema {path}: {exc}") from exc
    stem = path.name.removesuffix(".avsc")
    match = _VERSION_SUFFIX.search(stem)
    if match is None:
        return _Source(path, raw, name, LATEST, math.inf)
    number = int(match.group(1))
    return _Source(path, raw, name, f"v{number}", float(number))


def _build(source: _Source, definitions: Mapping[str, tuple[Any, str]]) -> AvroSchema:
    try:
        definition = _inline(source.raw, "", set(), definitions)
        parsed = parse_schema(definition)
        canonical = to_parsing_canonical_form(parsed)
    except (ValueError, KeyError, TypeError, SchemaParseException) as exc:
        # fastavro reports a bad schema with any of these; KeyError and
        # TypeError also come from our walk when a required key is missing.
        raise DeclarationError(f"invalid Avro schema {source.path}: {exc!r}") from exc
    # fastavro returns the 64-bit Rabin fingerprint as hex of its
    # little-endian bytes, the order the single-object encoding needs.
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return AvroSchema(
        name=source.name,
        version=source.version,
        path=source.path,
        definition=definition,
        parsed=parsed,
        canonical_form=canonical,
        fingerprint=digest,
    )


def _full_name(node: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    """Return (full name, namespace for names nested inside), per the Avro spec."""
    name = node.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {node.get('type')} needs a non-empty string name")
    if "." in name:
        return name, name.rpartition(".")[0]
    own = node.get("namespace", namespace) or ""
    return (f"{own}.{name}" if own else name), own


def _collect(node: Any, namespace: str, out: dict[str, tuple[Any, str]]) -> None:
    """Record each named type nested in ``node`` with the namespace it appears in."""
    if isinstance(node, list):
        for branch in node:
            _collect(branch, namespace, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED:
            try:
                full, inner = _full_name(node, namespace)
            except ValueError:
                return  # reported with its file name when that file is built
            out.setdefault(full, (node, namespace))
            for field in node.get("fields", ()):
                if isinstance(field, dict):
                    _collect(field.get("type"), inner, out)
        elif kind == "array":
            _collect(node.get("items"), namespace, out)
        elif kind == "map":
            _collect(node.get("values"), namespace, out)
        else:
            _collect(kind, namespace, out)


def _inline(
    node: Any, namespace: str, defined: set[str], definitions: Mapping[str, tuple[Any, str]]
) -> Any:
    """Copy ``node`` with full names everywhere and foreign types inlined at first use.

    ``defined`` holds the names already written into this schema: later
    references to them stay references, which is also what stops recursive
    types from being expanded forever.
    """
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = f"{namespace}.{node}" if namespace and "." not in node else node
        if full in defined:
            return full
        found = definitions.get(full)
        if found is None:
            known = ", ".join(sorted(definitions)) or "none"
            raise ValueError(f"unknown type {full!r}; named types in the store: {known}")
        foreign, foreign_namespace = found
        return _inline(foreign, foreign_namespace, defined, definitions)
    if isinstance(node, list):
        return [_inline(branch, namespace, defined, definitions) for branch in node]
    if not isinstance(node, dict):
        raise ValueError(f"not an Avro schema: {node!r}")
    kind = node["type"]
    if kind in _NAMED:
        full, inner = _full_name(node, namespace)
        if full in defined:
            raise ValueError(
                f"type {full!r} is defined twice; define it in one file and refer to it by name"
            )
        defined.add(full)
        out = {key: value for key, value in node.items() if key != "namespace"}
        out["name"] = full
        if "." not in full:
            # A name in the null namespace, which may now sit inside a
            # namespaced record: say so, or a reader would qualify it.
            out["namespace"] = ""
        if kind in ("record", "error"):
            out["fields"] = [
                {**field, "type": _inline(field["type"], inner, defined, definitions)}
                for field in node["fields"]
            ]
        return out
    if kind == "array":
        return {**node, "items": _inline(node["items"], namespace, defined, definitions)}
    if kind == "map":
        return {**node, "values": _inline(node["values"], namespace, defined, definitions)}
    # {"type": "long", "logicalType": ...}, {"type": "shop.Address"} or a
    # nested {"type": {...}}: the type itself is the part to walk.
    return {**node, "type": _inline(kind, namespace, defined, definitions)}
