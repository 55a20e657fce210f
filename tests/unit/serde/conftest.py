from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamkit.serde import SchemaStore

SCHEMA_DIR = Path(__file__).parent / "schemas"


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    """The test schemas: shop.Address, shop.Order (v1 and latest), graph.Node."""
    return SchemaStore(SCHEMA_DIR)


@pytest.fixture
def registry_url(request: pytest.FixtureRequest) -> str:
    """A mock:// URL no other test uses, so registries never leak between tests."""
    return f"mock://{request.node.name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def write_schemas(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write {file name: schema JSON text} into a fresh directory and return it."""

    def write(files: dict[str, Any]) -> Path:
        directory = tmp_path / f"schemas-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
        return directory

    return write
