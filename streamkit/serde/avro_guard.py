"""A pre-check of hostile Avro bytes that fastavro cannot survive on its own.

fastavro's compiled reader recurses on the C stack and materialises whatever
a block count says, so two kinds of writer schema let a few bytes take a
worker down:

* a recursive schema (``graph.Node`` with a ``["null", "Node"]`` field): each
  nesting level costs two bytes on the wire and about 1.8 KB of C stack, so
  a 10 KB record segfaults the process (seen at about 4,500 levels on an
  8 MiB stack);
* an array or map of items that take no bytes (``null``, a record without
  fields): a 9-byte block count of 2^60 makes fastavro append ``None`` for
  hours.

For those schemas only, :func:`guard` walks the bytes first, iteratively and
without building values, and refuses records nested deeper than
:data:`MAX_DEPTH` or holding more than :data:`MAX_EMPTY_ITEMS` zero-width
items (array items, or map entries whose values take no bytes). Every
other schema is decoded as before, with no extra pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_DEPTH = 1000
"""Deepest nesting (records, arrays, maps) accepted: about 2 MB of C stack in fastavro."""

MAX_EMPTY_ITEMS = 100_000
"""Most zero-width items (``null``, empty records) in one record; fastavro takes 5 ms for them."""

_FIXED_WIDTH = {"null": 0, "boolean": 1, "float": 4, "double": 8}


class HostileRecord(ValueError):
    """The bytes would crash or stall the decoder; the message says which limit they pass."""


def needs_guard(schema: Any) -> bool:
    """Whether ``schema`` (parsed by fastavro) is recursive or has zero-width collection items."""
    named: Mapping[str, Any] = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    found = False

    def walk(node: Any, path: frozenset[str]) -> None:
        nonlocal found
        if found:
            return
        if isinstance(node, str):
            if node in path:
                found = True  # a named type inside itself
            elif node in named:
                walk(named[node], path | {node})
            return
        if isinstance(node, list):
            for branch in node:
                walk(branch, path)
            return
        kind = node.get("type")
        if kind in ("record", "error"):
            inner = path | {node["name"]}
            for f in node["fields"]:
                walk(f["type"], inner)
        elif kind in ("array", "map"):
            items = node["items"] if kind == "array" else node["values"]
            if _zero_width(items, named, frozenset()):
                found = True
            walk(items, path)
        elif isinstance(kind, dict | list):
            walk(kind, path)

    walk(schema, frozenset())
    return found


def _zero_width(node: Any, named: Mapping[str, Any], seen: frozenset[str]) -> bool:
    if isinstance(node, str):
        if node in named and node not in seen:
            return _zero_width(named[node], named, seen | {node})
        return node == "null"
    if isinstance(node, list):
        return False  # a union's branch index takes a byte
    kind = node.get("type")
    if kind in ("record", "error"):
        return all(_zero_width(f["type"], named, seen) for f in node["fields"])
    if kind == "fixed":
        return bool(node["size"] == 0)
    if isinstance(kind, dict | str):
        return kind == "null" if isinstance(kind, str) else _zero_width(kind, named, seen)
    return False


# Compiled node codes: the check dispatches on small ints, not on schema dicts.
_SKIP, _VARINT, _SIZED, _ENUM, _RECORD, _ARRAY, _MAP, _UNION = range(8)


def _compile(schema: Any) -> list[Any]:
    """``schema`` as nested ``[code, a, b]`` lists; a named type is compiled once (cycles too)."""
    named: Mapping[str, Any] = schema.get("__named_schemas", {})
    done: dict[str, list[Any]] = {}

    def build(node: Any) -> list[Any]:
        if isinstance(node, str) and node in named:
            if node not in done:
                placeholder: list[Any] = [_SKIP, 0, False]
                done[node] = placeholder
                placeholder[:] = build(named[node])
            return done[node]
        if isinstance(node, list):
            return [_UNION, tuple(build(b) for b in node), False]
        kind = node if isinstance(node, str) else node["type"]
        if isinstance(kind, dict | list):
            return build(kind)
        if kind in _FIXED_WIDTH:
            return [_SKIP, _FIXED_WIDTH[kind], False]
        if kind in ("int", "long"):
            return [_VARINT, 0, False]
        if kind in ("bytes", "string"):
            return [_SIZED, 0, False]
        if kind == "fixed":
            return [_SKIP, node["size"], False]
        if kind == "enum":
            return [_ENUM, len(node["symbols"]), False]
        if kind in ("record", "error"):
            record: list[Any] = [_RECORD, (), False]
            if "name" in node:
                done.setdefault(node["name"], record)
            record[1] = tuple(build(f["type"]) for f in reversed(node["fields"]))
            return record
        if kind in ("array", "map"):
            items = node["items"] if kind == "array" else node["values"]
            code = _ARRAY if kind == "array" else _MAP
            return [code, build(items), _zero_width(items, named, frozenset())]
        raise ValueError(f"unknown Avro type {kind!r}")

    return build(schema)


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= end:
            raise EOFError("the bytes end inside a number")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 10 bytes")


def guard(schema: Any) -> Callable[[memoryview, int], None]:
    """A check of one record's bytes from ``start`` on, against ``schema``'s limits.

    Raises:
        HostileRecord: Nested deeper than :data:`MAX_DEPTH`, or more than
            :data:`MAX_EMPTY_ITEMS` zero-width items.
        EOFError: The bytes end inside the record (fastavro would say the same).
        ValueError: A negative length or a branch or symbol index out of range.
    """
    root = _compile(schema)

    def check(data: memoryview, start: int) -> None:
        end = len(data)
        pos = start
        empties = 0
        # Entries: (node, depth, -1) for one value, (node, depth, left) for
        # the rest of an array or map block: iterative, so the check itself
        # never recurses however deep the bytes nest.
        stack: list[tuple[list[Any], int, int]] = [(root, 0, -1)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth, left = pop()
            code = node[0]
            if left >= 0:  # inside an array or map
                if left == 0:
                    left, pos = _varint(data, pos, end)
                    if left == 0:
                        continue
                    if left < 0:
                        left = -left
                        _, pos = _varint(data, pos, end)  # the block's byte size
                    if node[2]:
                        # Map entries keep their key's bytes; counted all the same,
                        # as a dict of millions of entries is a stall of its own.
                        empties += left
                        if empties > MAX_EMPTY_ITEMS:
                            raise HostileRecord(
                                f"more than {MAX_EMPTY_ITEMS:,} items that take no bytes"
                            )
                        if code == _ARRAY:
                            push((node, depth, 0))
                            continue
                push((node, depth, left - 1))
                if code == _MAP:
                    size, pos = _varint(data, pos, end)
                    if size < 0 or pos + size > end:
                        raise EOFError(f"a map key of {size} bytes runs past the end")
                    pos += size
                if depth + 1 > MAX_DEPTH:
                    raise HostileRecord(f"nested deeper than {MAX_DEPTH} levels")
                push((node[1], depth + 1, -1))
                continue
            if code == _SKIP:
                pos += node[1]
                if pos > end:
                    raise EOFError("the bytes end inside a value")
            elif code == _VARINT:
                _, pos = _varint(data, pos, end)
            elif code == _SIZED:
                size, pos = _varint(data, pos, end)
                if size < 0 or pos + size > end:
                    raise EOFError(f"a length of {size} runs past the end")
                pos += size
            elif code == _UNION:
                branch, pos = _varint(data, pos, end)
                if not 0 <= branch < len(node[1]):
                    raise ValueError(f"union branch {branch} of {len(node[1])}")
                push((node[1][branch], depth, -1))
            elif code == _RECORD:
                if depth + 1 > MAX_DEPTH:
                    raise HostileRecord(f"nested deeper than {MAX_DEPTH} levels")
                for field in node[1]:
                    push((field, depth + 1, -1))
            elif code == _ENUM:
                index, pos = _varint(data, pos, end)
                if not 0 <= index < node[1]:
                    raise ValueError(f"enum index {index} of {node[1]}")
            else:  # _ARRAY, _MAP: their first block
                push((node, depth, 0))

    return check
