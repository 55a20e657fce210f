"""``pipelines.launch``: how the demos' clients and workers reach a secure local broker."""

from __future__ import annotations

import stat
from pathlib import Path

from pipelines.launch import Connection
from streamkit.config import AppConfig
from streamkit.localkafka import LocalKafka, free_ports


def test_a_secure_connection_passes_the_password_by_file_never_in_the_environment(
    tmp_path: Path,
) -> None:
    # Certificates and passwords are made on first use, before any start.
    kafka = LocalKafka(free_ports(1)[0], data_dir=tmp_path, security=True)
    password = kafka.secure_cluster.password("alice")

    connection = Connection.secure(kafka, "alice")

    assert password not in repr(connection)
    assert password not in "".join(connection.env.values())
    path = Path(connection.env["STREAMKIT_SASL_PASSWORD_FILE"])
    assert path.read_text() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert connection.client["sasl.password"] == password
    assert connection.env["STREAMKIT_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_the_secure_settings_and_the_worker_env_load_as_the_same_config(tmp_path: Path) -> None:
    kafka = LocalKafka(free_ports(1)[0], data_dir=tmp_path, security=True)
    connection = Connection.secure(kafka, "alice")

    from_code = AppConfig.load(
        "orders", {"brokers": connection.bootstrap, **connection.settings}, env={}
    )
    from_env = AppConfig.load("orders", {}, env=dict(connection.env))

    assert from_code.librdkafka("consumer") == from_env.librdkafka("consumer")
    assert from_env.librdkafka("consumer")["sasl.password"] == connection.client["sasl.password"]
