from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema

from streamkit.errors import DeclarationError
from streamkit.serde import SchemaStore

WriteSchemas = Callable[[dict[str, Any]], Path]

ADDRESS = (
    '{"type":"record","name":"Address","namespace":"shop",'
    '"fields":[{"name":"city","type":"string"}]}'
)
ORDER = (
    '{"type":"record","name":"Order","namespace":"shop",'
    '"fields":[{"name":"id","type":"string"},{"name":"ship_to","type":"Address"}]}'
)


def rabin(data: bytes) -> int:
    """CRC-64-AVRO written from the Avro spec, independent of fastavro: the test oracle."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    result = empty
    for byte in data:
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@pytest.mark.parametrize(
    ("canonical", "expected"),
    # Published in the Avro project's share/test/data/schema-tests.txt, as Java longs.
    [('"null"', 7195948357588979594), ('"int"', 8247732601305521295)],
)
def test_oracle_matches_the_specs_published_fingerprints(canonical: str, expected: int) -> None:
    assert signed(rabin(canonical.encode())) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"type":"record","name":"foo","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
        ('{"type":"fixed","name":"foo","size":15}', 1756455273707447556),
    ],
)
def test_fingerprint_matches_published_values(
    write_schemas: WriteSchemas, text: str, expected: int
) -> None:
    schema = SchemaStore(write_schemas({"foo.avsc": text})).get("foo")
    # Little-endian on the wire, as the single-object encoding requires.
    assert int.from_bytes(schema.fingerprint, "little", signed=True) == expected


def test_every_stored_fingerprint_matches_the_oracle(store: SchemaStore) -> None:
    for schema in store:
        assert schema.fingerprint == rabin(schema.canonical_form.encode()).to_bytes(8, "little")


def test_store_indexes_every_file_by_full_name(store: SchemaStore) -> None:
    assert store.names == ["graph.Node", "shop.Address", "shop.Order"]
    assert len(store) == 4
    assert [s.version for s in store.versions("shop.Order")] == ["v1", "latest"]


def test_newest_is_the_unversioned_file_and_versions_can_be_pinned(store: SchemaStore) -> None:
    assert store.get("shop.Order").path.name == "order.avsc"
    assert store.get("shop.Order", "v1").path.name == "order.v1.avsc"


def test_without_unversioned_file_the_highest_version_is_newest(
    write_schemas: WriteSchemas,
) -> None:
    # v10 sorts before v9 as text: the versions must compare as numbers.
    directory = write_schemas(
        {"address.v9.avsc": ADDRESS, "address.v10.avsc": ADDRESS, "address.v2.avsc": ADDRESS}
    )
    store = SchemaStore(directory)
    assert store.get("shop.Address").version == "v10"
    assert [s.version for s in store.versions("shop.Address")] == ["v2", "v9", "v10"]


def test_unknown_name_lists_known_names(store: SchemaStore) -> None:
    with pytest.raises(DeclarationError, match=r"'shop\.Ordr'.*graph\.Node, shop\.Address"):
        store.get("shop.Ordr")


def test_unknown_version_lists_versions(store: SchemaStore) -> None:
    with pytest.raises(DeclarationError, match=r"no version 'v7'; versions: v1, latest"):
        store.get("shop.Order", "v7")


def test_references_across_files_are_inlined_at_first_use(store: SchemaStore) -> None:
    order = store.get("shop.Order")
    ship_to = order.definition["fields"][2]["type"]
    assert ship_to["name"] == "shop.Address"
    assert [f["name"] for f in ship_to["fields"]] == ["street", "city"]
    # Self-contained: fastavro parses it with no other schema at hand.
    parse_schema(order.definition)
    assert '"name":"shop.Address","type":"record"' in order.canonical_form


def test_references_resolve_whatever_the_file_order(write_schemas: WriteSchemas) -> None:
    # "a_order" sorts before "z_address", the type it needs.
    directory = write_schemas({"a_order.avsc": ORDER, "z_address.avsc": ADDRESS})
    assert SchemaStore(directory).get("shop.Order").definition["fields"][1]["type"]["fields"]


def test_a_reference_resolves_to_the_newest_version(write_schemas: WriteSchemas) -> None:
    newer = ADDRESS.replace('"fields":[', '"fields":[{"name":"zip","type":"string"},')
    directory = write_schemas(
        {"order.avsc": ORDER, "address.v1.avsc": ADDRESS, "address.avsc": newer}
    )
    ship_to = SchemaStore(directory).get("shop.Order").definition["fields"][1]["type"]
    assert [f["name"] for f in ship_to["fields"]] == ["zip", "city"]


def test_second_reference_stays_a_name(write_schemas: WriteSchemas) -> None:
    order = ORDER.replace("}]}", '},{"name":"bill_to","type":"Address"}]}')
    directory = write_schemas({"order.avsc": order, "address.avsc": ADDRESS})
    fields = SchemaStore(directory).get("shop.Order").definition["fields"]
    assert isinstance(fields[1]["type"], dict)
    assert fields[2]["type"] == "shop.Address"


def test_null_namespace_types_stay_in_the_null_namespace(write_schemas: WriteSchemas) -> None:
    money = '{"type":"fixed","name":"Money","size":8}'
    # Plain sits inside the acct namespace but declares the null namespace:
    # the stored copy must keep saying so, or it would become acct.Plain.
    invoice = (
        '{"type":"record","name":"Invoice","fields":[{"name":"total","type":"Money"},'
        '{"name":"line","type":{"type":"record","name":"Line","namespace":"acct",'
        '"fields":[{"name":"p","type":{"type":"enum","name":"Plain","namespace":"",'
        '"symbols":["A"]}}]}}]}'
    )
    store = SchemaStore(write_schemas({"invoice.avsc": invoice, "money.avsc": money}))
    parsed = store.get("Invoice").parsed
    assert parsed["fields"][0]["type"]["name"] == "Money"
    line = parsed["fields"][1]["type"]
    assert line["name"] == "acct.Line"
    assert line["fields"][0]["type"]["name"] == "Plain"


def test_unknown_reference_names_the_file_and_the_type(write_schemas: WriteSchemas) -> None:
    directory = write_schemas({"order.avsc": ORDER})
    with pytest.raises(DeclarationError, match=r"order\.avsc.*unknown type 'shop\.Address'"):
        SchemaStore(directory)


def test_same_name_and_version_twice_is_an_error(write_schemas: WriteSchemas) -> None:
    directory = write_schemas({"address.avsc": ADDRESS, "place.avsc": ADDRESS})
    with pytest.raises(DeclarationError, match=r"address\.avsc and .*place\.avsc.*'latest'"):
        SchemaStore(directory)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read"),
        ('"string"', "must be a record, enum or fixed"),
        ('[{"type":"record","name":"A","fields":[]}]', "must be a record, enum or fixed"),
        ('{"type":"record","fields":[]}', "non-empty string name"),
        ('{"type":"record","name":"A","fields":[{"name":"x","type":"nope"}]}', "unknown type"),
        ('{"type":"record","name":"A","fields":[{"name":"x"}]}', "invalid Avro schema"),
        ('{"type":"enum","name":"E","symbols":["a","a"]}', "invalid Avro schema"),
    ],
)
def test_invalid_files_name_the_file(write_schemas: WriteSchemas, text: str, problem: str) -> None:
    with pytest.raises(DeclarationError, match=rf"broken\.avsc.*{problem}|{problem}.*broken\.avsc"):
        SchemaStore(write_schemas({"broken.avsc": text}))


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match=r"nowhere does not exist"):
        SchemaStore(tmp_path / "nowhere")


def test_default_directory_is_schemas_under_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "schemas" / "nested").mkdir(parents=True)
    (tmp_path / "schemas" / "nested" / "address.avsc").write_text(ADDRESS)
    monkeypatch.chdir(tmp_path)
    assert SchemaStore().names == ["shop.Address"]


def test_files_and_directories_can_be_mixed(write_schemas: WriteSchemas) -> None:
    first = write_schemas({"address.avsc": ADDRESS})
    second = write_schemas({"order.avsc": ORDER, "ignored.json": "{}"})
    store = SchemaStore([first / "address.avsc", second])
    assert store.names == ["shop.Address", "shop.Order"]


def test_empty_store_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match=rf"none: no \*\.avsc files under {tmp_path}"):
        SchemaStore(tmp_path).get("shop.Order")
