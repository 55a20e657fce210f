from __future__ import annotations

import streamkit.localkafka


def test_exports_are_exactly_the_documented_api() -> None:
    assert streamkit.localkafka.__all__ == [
        "KAFKA_VERSION",
        "TEST_FRIENDLY_DEFAULTS",
        "LocalKafka",
        "PropertyValue",
        "cache_root",
        "default_data_dir",
        "fetch_jars",
        "free_ports",
        "is_fetched",
    ]
    for name in streamkit.localkafka.__all__:
        assert hasattr(streamkit.localkafka, name)
    assert streamkit.localkafka.KAFKA_VERSION == "4.1.1"
