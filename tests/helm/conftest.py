"""Fixtures that drive the real ``helm`` and ``kubeconform`` against the chart.

The tools are built once from the Go module proxy into ``~/.cache/streamkit/tools`` (see
``tools.py``; ``make helm`` does the same ahead of time). The only reason to
skip is a machine without ``go`` and without the cached tools.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .k8s_schemas import LOCATION_TEMPLATE
from .tools import ROOT, GoMissingError, Tools, ensure_tools

CHART = ROOT / "helm" / "streamkit"
VALUES_DIR = Path(__file__).parent / "values"
RELEASE = "rel"
NAMESPACE = "streaming"

Obj = dict[str, Any]
Values = Path | Mapping[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Rendered:
    """The output of one ``helm template``: the text and the parsed objects."""

    text: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> Obj:
        matches = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind}/{name}, got {len(matches)}"
        return matches[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}


@dataclass(frozen=True)
class Helm:
    """Runs the pinned helm on the chart with values files or inline values."""

    tools: Tools

    def _run(self, args: list[str], values: tuple[Values, ...]) -> subprocess.CompletedProcess[str]:
        command = [str(self.tools.helm), *args]
        stdin: str | None = None
        for item in values:
            if isinstance(item, Path):
                command += ["--values", str(item)]
            else:
                # At most one inline set; helm reads it from stdin.
                assert stdin is None, "pass at most one inline values mapping"
                stdin = yaml.safe_dump(dict(item))
                command += ["--values", "-"]
        return subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, timeout=120
        )

    def template_text(self, *values: Values, chart: Path = CHART) -> str:
        result = self._run(["template", RELEASE, str(chart), "--namespace", NAMESPACE], values)
        if result.returncode != 0:
            raise HelmError(result.stderr)
        return result.stdout

    def template(self, *values: Values) -> Rendered:
        text = self.template_text(*values)
        objects = [obj for obj in yaml.safe_load_all(text) if obj is not None]
        return Rendered(text=text, objects=objects)

    def template_error(self, *values: Values) -> str:
        """Render expecting failure; returns helm's error text."""
        result = self._run(["template", RELEASE, str(CHART), "--namespace", NAMESPACE], values)
        assert result.returncode != 0, "helm template succeeded; expected it to reject the values"
        assert result.stdout == "", "a failed render must not print manifests"
        return result.stderr

    def lint(self, *values: Values) -> str:
        result = self._run(["lint", "--strict", str(CHART)], values)
        if result.returncode != 0:
            raise HelmError(result.stdout + result.stderr)
        return result.stdout


@dataclass(frozen=True)
class Kubeconform:
    """Validates manifests against the offline Kubernetes (and CRD) schemas."""

    tools: Tools

    def validate(self, manifests: str) -> list[Obj]:
        """Every resource's result, once per schema version; raises on tool errors."""
        results: list[Obj] = []
        for schema_dir in self.tools.schema_dirs:
            result = subprocess.run(
                [
                    str(self.tools.kubeconform),
                    "-strict",
                    "-verbose",
                    "-output",
                    "json",
                    "-schema-location",
                    f"{schema_dir}/{LOCATION_TEMPLATE}",
                    "-",
                ],
                input=manifests,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            # Exit status 1 means "some resource invalid"; the JSON says which.
            assert result.returncode in (0, 1), result.stderr
            for resource in json.loads(result.stdout)["resources"]:
                resource["schemas"] = schema_dir.name
                results.append(resource)
        return results


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return ensure_tools()
    except GoMissingError as exc:
        pytest.skip(f"helm chart tests need Go to build helm and kubeconform once: {exc}")


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Helm:
    return Helm(tools)


@pytest.fixture(scope="session")
def kubeconform(tools: Tools) -> Kubeconform:
    return Kubeconform(tools)


def value_sets() -> list[Path]:
    """The valid value sets under tests/helm/values, each linted and validated."""
    return sorted(VALUES_DIR.glob("*.yaml"))


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, leaf) in a parsed object, paths like ``spec.template.spec.containers[0]``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")
    else:
        yield path, node
