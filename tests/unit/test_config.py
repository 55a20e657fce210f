from collections.abc import Mapping
from typing import Any

import pytest

from streamkit.config import AppConfig, is_secret
from streamkit.errors import ConfigError

BROKERS = {"brokers": "127.0.0.1:9092"}


def load(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> AppConfig:
    return AppConfig.load("orders", {**BROKERS, **(overrides or {})}, env=env or {})


def test_defaults_and_derived_values() -> None:
    config = load()
    assert config.group_id == "orders"
    assert config.client_id.startswith("orders-")
    assert config.commit_every == 1000
    assert config.auto_offset_reset == "earliest"


def test_code_beats_environment_beats_default() -> None:
    env = {"STREAMKIT_COMMIT_EVERY": "50", "STREAMKIT_FETCH_BATCH": "7"}
    config = load({"commit_every": 10}, env=env)
    assert config.commit_every == 10
    assert config.fetch_batch == 7
    assert config.commit_interval == 1.0


def test_brokers_from_environment() -> None:
    config = AppConfig.load("orders", {}, env={"STREAMKIT_BROKERS": "a:1,b:2"})
    assert config.brokers == "a:1,b:2"


def test_missing_brokers_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="STREAMKIT_BROKERS"):
        AppConfig.load("orders", {}, env={})


@pytest.mark.parametrize(
    ("overrides", "env", "setting"),
    [
        ({"commit_every": 0}, {}, "commit_every="),
        ({}, {"STREAMKIT_COMMIT_EVERY": "lots"}, "STREAMKIT_COMMIT_EVERY"),
        ({}, {"STREAMKIT_AUTO_OFFSET_RESET": "middle"}, "STREAMKIT_AUTO_OFFSET_RESET"),
        ({"brokers": "localhost"}, {}, "brokers="),
        ({}, {"STREAMKIT_CREATE_TOPICS": "maybe"}, "STREAMKIT_CREATE_TOPICS"),
        ({"group_protocol": "eager"}, {}, "group_protocol="),
        ({"shutdown_timeout": -1}, {}, "shutdown_timeout="),
        ({"comit_every": 5}, {}, "comit_every="),
        ({"kafka": {"enable.auto.commit": "true"}}, {}, "kafka="),
        ({}, {"STREAMKIT_PRODUCER_TRANSACTIONAL_ID": "t-1"}, "STREAMKIT_PRODUCER_TRANSACTIONAL_ID"),
        ({"session_timeout_ms": 400_000}, {}, "session_timeout_ms"),
    ],
)
def test_bad_values_name_the_setting(
    overrides: dict[str, Any], env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides, env=env)
    assert info.value.setting.startswith(setting)
    assert str(info.value).startswith(f"invalid setting {info.value.setting}")


def test_passthrough_properties_from_env_and_code() -> None:
    env = {"STREAMKIT_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAMKIT_CONSUMER_FETCH_MIN_BYTES": "10"}
    config = load({"producer": {"compression.type": "zstd"}}, env=env)
    consumer = config.librdkafka("consumer")
    producer = config.librdkafka("producer")
    assert consumer["security.protocol"] == "SSL" == producer["security.protocol"]
    assert consumer["fetch.min.bytes"] == "10" and "fetch.min.bytes" not in producer
    assert producer["compression.type"] == "zstd" and "compression.type" not in consumer
    assert config.origins["fetch.min.bytes"] == "STREAMKIT_CONSUMER_FETCH_MIN_BYTES"


def test_delivery_settings_cannot_be_weakened() -> None:
    consumer = load().librdkafka("consumer")
    producer = load().librdkafka("producer")
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["partition.assignment.strategy"] == "cooperative-sticky"
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"


def test_consumer_protocol_leaves_assignment_to_the_broker() -> None:
    consumer = load({"group_protocol": "consumer"}).librdkafka("consumer")
    assert consumer["group.protocol"] == "consumer"
    assert "partition.assignment.strategy" not in consumer
    assert "session.timeout.ms" not in consumer
    assert "heartbeat.interval.ms" not in consumer


@pytest.mark.parametrize(
    ("session_ms", "given", "heartbeat_ms"),
    [(45_000, None, 3000), (6000, None, 2000), (1500, None, 500), (6000, "1000", "1000")],
)
def test_heartbeats_come_three_times_a_session_unless_set(
    session_ms: int, given: str | None, heartbeat_ms: int | str
) -> None:
    consumer = {"heartbeat.interval.ms": given} if given else None
    config = load({"session_timeout_ms": session_ms, "consumer": consumer})
    assert config.librdkafka("consumer")["heartbeat.interval.ms"] == heartbeat_ms


def test_a_revoke_budget_at_the_poll_deadline_is_refused() -> None:
    with pytest.raises(ConfigError, match="revoke_timeout"):
        load({"revoke_timeout": 300, "max_poll_interval_ms": 300_000})
    assert load().revoke_timeout == 5.0


def test_static_membership_from_environment() -> None:
    config = load(env={"STREAMKIT_GROUP_INSTANCE_ID": "orders-0"})
    assert config.librdkafka("consumer")["group.instance.id"] == "orders-0"


def test_secrets_never_in_repr() -> None:
    env = {"STREAMKIT_KAFKA_SASL_PASSWORD": "hunter2"}
    config = load({"kafka": {"ssl.key.password": "s3cret"}}, env=env)
    text = repr(config)
    assert "hunter2" not in text and "s3cret" not in text
    assert "sasl.password" in text
    assert config.librdkafka("producer")["sasl.password"] == "hunter2"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.jaas.config", True),
        ("ssl.key.pem", True),
        ("security.protocol", False),
        ("linger.ms", False),
    ],
)
def test_is_secret(key: str, secret: bool) -> None:
    assert is_secret(key) is secret


def test_bad_app_name() -> None:
    with pytest.raises(ConfigError, match="App"):
        AppConfig.load("bad name!", BROKERS, env={})


def test_unknown_setting_shows_the_value_and_the_closest_name() -> None:
    with pytest.raises(ConfigError) as info:
        load({"comit_every": 5})
    assert str(info.value) == (
        "invalid setting comit_every=5: unknown setting; did you mean commit_every?"
    )
    assert info.value.setting == "comit_every=5"


def test_unknown_setting_with_no_close_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load({"zzz": "on"})
    assert str(info.value).startswith("invalid setting zzz='on': unknown setting; known: ")
    assert "commit_every" in str(info.value)
    assert "did you mean" not in str(info.value)


def test_unknown_secret_looking_setting_hides_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        load({"sasl_passwd": "hunter2"})
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("invalid setting sasl_passwd=***: unknown setting")


def test_exactly_once_checkpoints_default_to_100_ms_and_read_committed() -> None:
    alo = load({})
    eos = AppConfig.load("orders", BROKERS, env={"STREAMKIT_PROCESSING_GUARANTEE": "exactly-once"})
    assert (alo.processing_guarantee, alo.commit_interval, alo.commit_every) == (
        "at_least_once",
        1.0,
        1000,
    )
    # A quarter of max_buffered_records (10,000): held records count against it.
    assert (eos.exactly_once, eos.commit_interval, eos.commit_every) == (True, 0.1, 2_500)
    roomy = load({"processing_guarantee": "exactly_once", "max_buffered_records": 100_000})
    assert roomy.commit_every == 10_000
    assert eos.librdkafka("consumer")["isolation.level"] == "read_committed"
    assert eos.librdkafka("producer")["transaction.timeout.ms"] == 10_000
    assert "transaction.timeout.ms" not in alo.librdkafka("producer")
    # Given ones win over the guarantee's defaults.
    assert load({"processing_guarantee": "exactly_once", "commit_interval": 2}).commit_interval == 2


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"processing_guarantee": "exactly_twice"}, "processing_guarantee="),
        ({"processing_guarantee": "exactly_once", "commit_interval": 6}, "commit_interval="),
        ({"processing_guarantee": "exactly_once", "revoke_timeout": 10}, "revoke_timeout="),
        (
            {
                "processing_guarantee": "exactly_once",
                "consumer": {"isolation.level": "read_uncommitted"},
            },
            "consumer={'isolation.level': ...}",
        ),
        ({"producer": {"enable.idempotence": False}}, "producer={'enable.idempotence': ...}"),
        ({"producer": {"transactional.id": "mine"}}, "producer={'transactional.id': ...}"),
    ],
)
def test_exactly_once_settings_that_cannot_work_stop_at_start_naming_the_setting(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(settings)
    assert info.value.setting == named


def test_replication_defaults_to_the_brokers_own_default() -> None:
    assert load().replication is None
    # An empty variable (a chart value left blank) means the same as unset.
    assert load(env={"STREAMKIT_REPLICATION": ""}).replication is None


def test_replication_from_code_beats_the_environment() -> None:
    assert load(env={"STREAMKIT_REPLICATION": "3"}).replication == 3
    assert load({"replication": 2}, env={"STREAMKIT_REPLICATION": "3"}).replication == 2


@pytest.mark.parametrize(
    ("overrides", "env", "named"),
    [
        ({"replication": 0}, {}, "replication="),
        ({"replication": -1}, {}, "replication="),
        ({"replication": True}, {}, "replication="),
        ({"replication": 2.5}, {}, "replication="),
        ({}, {"STREAMKIT_REPLICATION": "three"}, "STREAMKIT_REPLICATION"),
        ({}, {"STREAMKIT_REPLICATION": "0"}, "STREAMKIT_REPLICATION"),
    ],
)
def test_a_bad_replication_names_the_setting(
    overrides: dict[str, Any], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match="positive integer") as info:
        load(overrides, env=env)
    assert info.value.setting == named


# --- Schema Registry credentials (issue 20, review 1.5) ----------------------

USER_INFO = "SRKEY:sr-secret-do-not-show"


def test_registry_user_info_from_code_or_environment() -> None:
    assert load().schema_registry_user_info is None
    from_env = load(env={"STREAMKIT_SCHEMA_REGISTRY_USER_INFO": USER_INFO})
    assert from_env.schema_registry_user_info == USER_INFO
    assert load({"schema_registry_user_info": USER_INFO}).schema_registry_user_info == USER_INFO


@pytest.mark.parametrize(
    ("overrides", "env", "setting"),
    [
        ({"schema_registry_user_info": "no-colon-secret"}, {}, "schema_registry_user_info="),
        (
            {},
            {"STREAMKIT_SCHEMA_REGISTRY_USER_INFO": "no-colon-secret"},
            "STREAMKIT_SCHEMA_REGISTRY_USER_INFO",
        ),
    ],
)
def test_bad_registry_user_info_names_the_setting_not_the_value(
    overrides: dict[str, Any], env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides, env=env)
    assert info.value.setting == setting
    assert "user:password" in info.value.problem
    assert "no-colon-secret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://SRKEY:sr-secret-do-not-show@psrc-123.confluent.cloud",
        "https://sr-secret-do-not-show@registry:8081/",
        "http://registry-a:8081,https://SRKEY:sr-secret-do-not-show@registry-b",
    ],
)
def test_registry_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env={"STREAMKIT_SCHEMA_REGISTRY_URL": url})
    assert info.value.setting == "STREAMKIT_SCHEMA_REGISTRY_URL"
    assert "schema_registry_user_info" in info.value.problem
    assert "sr-secret-do-not-show" not in str(info.value)


def test_registry_user_info_is_masked_in_repr_and_redacted() -> None:
    url = "https://registry:8081/path@v1,http://other:8081"  # '@' in a path is no userinfo
    config = load(
        {"schema_registry_url": url, "group_instance_id": "orders-0"},
        env={"STREAMKIT_SCHEMA_REGISTRY_USER_INFO": USER_INFO},
    )
    assert "sr-secret-do-not-show" not in repr(config)
    assert "SRKEY" not in repr(config)
    assert "schema_registry_user_info='***'" in repr(config)
    redacted = config.redacted()
    assert redacted["schema_registry_user_info"] == "***"
    assert redacted["schema_registry_url"] == url
    # Only the credential: no plain setting is masked by the wider rule.
    assert {name for name, value in redacted.items() if value == "***"} == {
        "schema_registry_user_info"
    }
    # Unset stays visibly unset.
    assert load().redacted()["schema_registry_user_info"] is None


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("schema_registry_user_info", True),
        ("basic.auth.user.info", True),
        ("userinfo", True),
        ("api_key", True),
        ("api.key", True),
        ("enrichment.api.key", True),
        ("private_key", True),
        ("db_pass", True),
        ("db.passwd", True),
        ("gcp.credentials.json", True),
        ("http_auth", True),
        ("authorization", True),
        # Plain settings that only look close.
        ("key_serde", False),
        ("ssl.keystore.location", False),
        ("sasl.kerberos.keytab", False),
        ("sasl.oauthbearer.method", False),
        ("sasl.oauthbearer.client.id", False),
        ("passthrough", False),
        ("schema_registry_url", False),
    ],
)
def test_is_secret_covers_keys_passes_credentials_and_auth(key: str, secret: bool) -> None:
    assert is_secret(key) is secret
