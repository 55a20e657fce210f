"""The Helm chart in helm/streamkit, rendered and checked with the real helm.

Each test states one property operators rely on: probes and ports wired to
the worker's HTTP server, a grace period longer than the drain deadline,
static membership from the pod name, hardened pods, KEDA never scaling past
the partition count, backfill Jobs running the right replay, and credentials
only ever referenced from Secrets. Every rendered object is also validated
against the Kubernetes API schemas (oldest and newest supported release) and
the KEDA / prometheus-operator CRDs, offline.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from .conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES_DIR,
    Helm,
    Kubeconform,
    Obj,
    Rendered,
    value_sets,
    walk,
)
from .tools import ROOT

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
FULLNAME = f"{RELEASE}-streamkit"


def values_file(name: str) -> Path:
    return VALUES_DIR / f"{name}.yaml"


def workloads(rendered: Rendered) -> list[Obj]:
    return [obj for obj in rendered.objects if obj["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Obj) -> Obj:
    containers: list[Obj] = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(workload: Obj) -> dict[str, Obj]:
    entries: list[Obj] = container(workload).get("env", [])
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {entry["name"]: entry for entry in entries}


def backfill_job(rendered: Rendered, entry: str) -> Obj:
    """The Job of one `backfills` entry (its name ends in a hash of its template)."""
    (job,) = [
        obj
        for obj in rendered.of_kind("Job")
        if obj["metadata"]["labels"]["streamkit.io/backfill"] == entry
    ]
    assert job["metadata"]["name"].startswith(f"{FULLNAME}-backfill-{entry}-")
    return job


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- lint and offline schema validation -------------------------------------


def test_value_sets_cover_the_modes() -> None:
    assert {path.stem for path in value_sets()} >= {
        "statefulset",
        "keda",
        "backfill",
        "secure",
        "observability",
        "state",
    }


def test_lint_default_values(helm: Helm) -> None:
    assert "0 chart(s) failed" in helm.lint()


@pytest.mark.parametrize("values", value_sets(), ids=lambda path: path.stem)
def test_lint_value_set(helm: Helm, values: Path) -> None:
    assert "0 chart(s) failed" in helm.lint(values)


@pytest.mark.parametrize("values", [None, *value_sets()], ids=lambda p: p.stem if p else "default")
def test_every_object_is_valid_kubernetes(
    helm: Helm, kubeconform: Kubeconform, values: Path | None
) -> None:
    rendered = helm.template(*([values] if values else []))
    results = kubeconform.validate(rendered.text)
    invalid = [r for r in results if r["status"] != "statusValid"]
    assert not invalid, "\n".join(
        f"{r['schemas']}: {r['kind']}/{r['name']}: {r['msg']}" for r in invalid
    )
    # Every object was checked against every schema set (none skipped for a missing schema).
    assert len(results) == len(rendered.objects) * len(kubeconform.tools.schema_dirs)


def test_schema_validation_is_strict(kubeconform: Kubeconform) -> None:
    """The generated schemas catch unknown fields and wrong types, in core kinds and CRDs."""
    bad = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicaz: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, ports: [{containerPort: "8080"}]}]
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: bad}
spec:
  scaleTargetRef: {name: bad}
  maxReplicaCount: "4"
  triggers: [{type: kafka, metadata: {lagThreshold: 10}}]
"""
    results = kubeconform.validate(bad)
    assert len(results) == 2 * len(kubeconform.tools.schema_dirs)
    expected = {
        "Deployment": ["additional properties 'replicaz'", "/containerPort"],
        "ScaledObject": ["/spec/maxReplicaCount", "/lagThreshold"],
    }
    for result in results:
        assert result["status"] == "statusInvalid", result
        for fragment in expected[result["kind"]]:
            assert fragment in result["msg"]


# --- defaults ----------------------------------------------------------------


def test_defaults_render_only_the_core_objects(helm: Helm) -> None:
    rendered = helm.template()
    assert rendered.kinds() == {"ServiceAccount", "Service", "Deployment", "PodDisruptionBudget"}
    deployment = rendered.one("Deployment", f"{FULLNAME}-example")
    assert deployment["spec"]["replicas"] == 2
    assert container(deployment)["args"] == ["run", "pipelines.example:app", "--http-port", "8080"]
    assert container(deployment)["image"] == "streamkit-pipelines:0.1.0"


def test_rolling_update_replaces_one_pod_at_a_time(helm: Helm) -> None:
    rendered = helm.template()
    deployment = rendered.one("Deployment", f"{FULLNAME}-example")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pdb = rendered.one("PodDisruptionBudget", f"{FULLNAME}-example")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


# --- probes, ports, shutdown -------------------------------------------------


@pytest.mark.parametrize("port", [8080, 9400])
def test_probes_hit_the_worker_http_server(helm: Helm, port: int) -> None:
    rendered = helm.template(values_file("statefulset"), {"worker": {"httpPort": port}})
    pipelines = [obj for obj in workloads(rendered) if obj["kind"] != "Job"]
    assert {obj["kind"] for obj in pipelines} == {"Deployment", "StatefulSet"}
    for workload in pipelines:
        worker = container(workload)
        assert worker["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        http_port = worker["args"].index("--http-port")
        assert worker["args"][http_port + 1] == str(port)
        assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert worker["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        # The worker binds 127.0.0.1 by default; the kubelet probes the pod IP.
        assert env_of(workload)["STREAMKIT_HTTP_HOST"] == {
            "name": "STREAMKIT_HTTP_HOST",
            "value": "0.0.0.0",
        }
    for service in rendered.of_kind("Service"):
        assert service["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]


def test_startup_probe_allows_the_configured_startup_time(helm: Helm) -> None:
    rendered = helm.template({"worker": {"probes": {"startupTimeoutSeconds": 300}}})
    probe = container(rendered.one("Deployment", f"{FULLNAME}-example"))["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 300


@pytest.mark.parametrize(
    ("values", "timeout", "grace"),
    [(None, 30, 45), (values_file("statefulset"), 50, 70)],
    ids=["default", "statefulset"],
)
def test_grace_period_outlasts_the_drain_deadline(
    helm: Helm, values: Path | None, timeout: int, grace: int
) -> None:
    rendered = helm.template(*([values] if values else []), values_file("backfill"))
    assert {obj["kind"] for obj in workloads(rendered)} >= {"Deployment", "Job"}
    for workload in workloads(rendered):
        assert pod_spec(workload)["terminationGracePeriodSeconds"] == grace
        assert env_of(workload)["STREAMKIT_SHUTDOWN_TIMEOUT"] == {
            "name": "STREAMKIT_SHUTDOWN_TIMEOUT",
            "value": str(timeout),
        }


# --- static membership -------------------------------------------------------


def test_static_membership_uses_a_statefulset_and_the_pod_name(helm: Helm) -> None:
    rendered = helm.template(values_file("statefulset"))
    orders = rendered.one("StatefulSet", f"{FULLNAME}-orders")
    env = env_of(orders)
    assert env["STREAMKIT_GROUP_INSTANCE_ID"] == {
        "name": "STREAMKIT_GROUP_INSTANCE_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert env["STREAMKIT_GROUP_ID"]["value"] == "orders"
    # Exactly once with static membership: the transactional.id is the pod's.
    assert env["STREAMKIT_PROCESSING_GUARANTEE"]["value"] == "exactly_once"
    assert env["STREAMKIT_GROUP_PROTOCOL"]["value"] == "consumer"
    assert env["STREAMKIT_SESSION_TIMEOUT_MS"]["value"] == "60000"
    assert orders["spec"]["replicas"] == 6
    assert orders["spec"]["podManagementPolicy"] == "Parallel"
    assert container(orders)["args"] == [
        "run", "pipelines.orders:app", "--agent", "enrich", "--agent", "audit",
        "--http-port", "8080", "--agent", "notify",
    ]  # fmt: skip
    service = rendered.one("Service", orders["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    # The other pipeline stays a Deployment without an instance id.
    example = rendered.one("Deployment", f"{FULLNAME}-example")
    assert "STREAMKIT_GROUP_INSTANCE_ID" not in env_of(example)
    assert "STREAMKIT_PROCESSING_GUARANTEE" not in env_of(example)
    assert env_of(example)["STREAMKIT_SESSION_TIMEOUT_MS"]["value"] == "30000"
    assert not rendered.of_kind("StatefulSet")[1:]


def test_selectors_pick_only_their_own_pipeline(helm: Helm) -> None:
    rendered = helm.template(values_file("statefulset"), values_file("backfill"))
    pods = {
        f"{obj['kind']}/{obj['metadata']['name']}": obj["spec"]["template"]["metadata"]["labels"]
        for obj in workloads(rendered)
    }
    selectors = [(svc, svc["spec"]["selector"]) for svc in rendered.of_kind("Service")] + [
        (pdb, pdb["spec"]["selector"]["matchLabels"])
        for pdb in rendered.of_kind("PodDisruptionBudget")
    ]
    assert len(selectors) == 4
    for obj, selector in selectors:
        selected = [name for name, labels in pods.items() if matches(selector, labels)]
        name = obj["metadata"]["name"]
        assert selected in ([f"Deployment/{name}"], [f"StatefulSet/{name}"]), (
            obj["kind"],
            selected,
        )


# --- pod hardening -----------------------------------------------------------


@pytest.mark.parametrize("values", [None, *value_sets()], ids=lambda p: p.stem if p else "default")
def test_pods_are_hardened(helm: Helm, values: Path | None) -> None:
    rendered = helm.template(*([values] if values else []))
    assert workloads(rendered)
    for workload in workloads(rendered):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        worker = container(workload)
        assert worker["securityContext"] == {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        tmp = [m for m in worker["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1
        volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"])
        assert "emptyDir" in volume


def test_dockerfile_user_matches_the_chart(helm: Helm) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["streamkit"\]$', dockerfile, re.MULTILINE)
    spec = pod_spec(helm.template().one("Deployment", f"{FULLNAME}-example"))
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["runAsGroup"] == 10001


# --- autoscaling -------------------------------------------------------------


def test_keda_never_scales_past_the_partition_count(helm: Helm) -> None:
    rendered = helm.template(values_file("keda"))
    orders = rendered.one("ScaledObject", f"{FULLNAME}-orders")
    assert orders["spec"]["maxReplicaCount"] == 6  # maxReplicas 20, partitions 6
    assert orders["spec"]["minReplicaCount"] == 1
    assert orders["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULLNAME}-orders",
    }
    payments = rendered.one("ScaledObject", f"{FULLNAME}-payments")
    assert payments["spec"]["maxReplicaCount"] == 4  # maxReplicas 4, partitions 8
    assert payments["spec"]["minReplicaCount"] == 0  # an explicit 0 survives
    assert payments["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    rendered.one("StatefulSet", f"{FULLNAME}-payments")
    for scaled in rendered.of_kind("ScaledObject"):
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
        assert set(trigger["metadata"]) >= {"consumerGroup", "topic", "lagThreshold"}
        assert (
            scaled["spec"]["maxReplicaCount"]
            <= {"orders": 6, "payments": 8}[scaled["metadata"]["labels"]["streamkit.io/pipeline"]]
        )
    assert orders["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "5000"
    assert orders["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "orders"
    # KEDA owns the replica count: the workloads leave it unset.
    for workload in workloads(rendered):
        assert "replicas" not in workload["spec"]


def test_keda_fills_defaults_for_partial_entries(helm: Helm) -> None:
    scaled = helm.template(values_file("secure")).one("ScaledObject", f"{FULLNAME}-orders")
    assert scaled["spec"]["pollingInterval"] == 30
    assert scaled["spec"]["cooldownPeriod"] == 300
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_maxreplicas_defaults_to_the_partition_count(helm: Helm) -> None:
    pipeline = {
        "name": "orders", "module": "pipelines.orders:app", "groupId": "orders",
        "partitions": 9, "replicas": 1, "autoscaling": {"enabled": True, "topic": "orders"},
    }  # fmt: skip
    scaled = helm.template({"pipelines": [pipeline]}).one("ScaledObject", f"{FULLNAME}-orders")
    assert scaled["spec"]["maxReplicaCount"] == 9


# --- backfills ---------------------------------------------------------------


def test_backfill_jobs_run_streamkit_replay(helm: Helm) -> None:
    rendered = helm.template(values_file("backfill"))
    full = backfill_job(rendered, "orders-2024-06-01")
    assert container(full)["args"] == [
        "replay", "pipelines.orders:app",
        "--agent", "enrich",
        "--from", "2024-06-01T00:00:00Z",
        "--to", "2024-06-02T00:00:00Z",
        "--yes",
        "--partitions", "0,3",
        "--redirect", "orders.audit=orders.audit.backfill",
        "--redirect", "orders.enriched=orders.enriched.backfill",
        "--group", "orders-backfill",
        "--rate", "500/s",
    ]  # fmt: skip
    assert full["spec"]["backoffLimit"] == 0  # an explicit 0 is kept
    assert full["spec"]["activeDeadlineSeconds"] == 7200
    assert pod_spec(full)["restartPolicy"] == "Never"
    assert env_of(full)["STREAMKIT_FETCH_BATCH"]["value"] == "1000"
    assert container(full)["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}

    minimal = backfill_job(rendered, "example-replay")
    assert container(minimal)["args"] == [
        "replay", "pipelines.example:app", "--agent", "double",
        "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-01T01:00:00Z",
        "--yes", "--to-live-topics",  # no redirect: the Job emits to the live outputs
    ]  # fmt: skip
    assert minimal["spec"]["backoffLimit"] == 2
    assert "activeDeadlineSeconds" not in minimal["spec"]


def test_a_backfill_fails_at_once_on_a_usage_error_and_retries_an_interruption(
    helm: Helm,
) -> None:
    job = backfill_job(helm.template(values_file("backfill")), "orders-2024-06-01")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {
        "containerName": "replay", "operator": "In", "values": [2, 4],
    }} in rules  # fmt: skip
    # Exit 3 (interrupted) is not in any rule: it counts against backoffLimit
    # and the retry resumes the window.
    assert all(3 not in r.get("onExitCodes", {}).get("values", []) for r in rules)


def test_the_rendered_backfill_command_is_one_the_cli_accepts(helm: Helm) -> None:
    """The chart and the CLI must agree: every rendered Job's arguments parse
    with streamkit's own parser (options, types and the --rate form), so a
    backfill never fails on a usage error at 3 a.m."""
    from streamkit.cli import main

    rendered = helm.template(values_file("backfill"))
    for name in ("orders-2024-06-01", "example-replay"):
        args = container(backfill_job(rendered, name))["args"]
        with main.make_context("streamkit", list(args), resilient_parsing=False) as ctx:
            command = main.get_command(ctx, args[0])
            assert command is not None, args[0]
            sub = command.make_context(args[0], list(args[1:]), parent=ctx)
            assert sub.params["agent_name"] and sub.params["target"], name
            if "--rate" in args:
                assert sub.params["rate"] == 500.0
            # A Job cannot answer a confirmation: without --yes it would do nothing, exit 4.
            assert sub.params["yes"] is True, name
            assert sub.params["start"] and sub.params["end"], "never a --whole-topic replay"


def test_a_backfill_without_redirect_passes_the_cli_checks_for_live_topics(helm: Helm) -> None:
    """The rendered Job gets past every check `streamkit replay` makes before
    connecting (no refusal, exit 2): with nobody listening at the broker
    address it ends at connecting, exit 1. Without --to-live-topics the same
    command is refused and names the flag."""
    from click.testing import CliRunner

    from streamkit.cli import main

    args = container(backfill_job(helm.template(values_file("backfill")), "example-replay"))["args"]
    env = {"STREAMKIT_BROKERS": "127.0.0.1:1"}
    # The command configures logging for the whole process (info level,
    # loggers cached): put it back, or later tests lose their debug lines.
    saved = structlog.get_config()
    try:
        ran = CliRunner().invoke(main, [*args, "--timeout", "1"], env=env)
        assert ran.exit_code == 1, ran.output
        assert "cannot reach Kafka" in ran.output
        refused = [a for a in args if a != "--to-live-topics"]
        result = CliRunner().invoke(main, [*refused, "--timeout", "1"], env=env)
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 2, result.output
    assert "pass --to-live-topics" in result.output and "example.out" in result.output


def test_backfills_share_the_pipeline_kafka_connection(helm: Helm) -> None:
    rendered = helm.template(values_file("secure"))
    pipeline_env = env_of(rendered.one("Deployment", f"{FULLNAME}-orders"))
    job = backfill_job(rendered, "orders-replay")
    job_env = env_of(job)
    connection = ("STREAMKIT_KAFKA_", "STREAMKIT_B", "STREAMKIT_S")  # SASL_, SSL_, SECURITY_
    shared = {name for name in pipeline_env if name.startswith(connection)}
    assert shared >= {"STREAMKIT_BROKERS", "STREAMKIT_SASL_PASSWORD_FILE", "STREAMKIT_SSL_KEY"}
    assert {name: job_env.get(name) for name in shared} == {
        name: pipeline_env[name] for name in shared
    }
    assert "STREAMKIT_GROUP_ID" not in job_env  # the replay's group comes from --group
    assert (
        pod_spec(job)["volumes"]
        == pod_spec(rendered.one("Deployment", f"{FULLNAME}-orders"))["volumes"]
    )


# --- secrets -----------------------------------------------------------------

SECRET_NAMES = {"kafka-credentials", "kafka-client-tls", "enrichment-api"}
# Where a Secret's name may appear: as a reference, never as a value.
REFERENCE_PATH = re.compile(
    r"(valueFrom\.secretKeyRef\.name|volumes\[\d+\]\.secret\.secretName|secretTargetRef\[\d+\]\.name)$"
)


def test_credentials_are_only_referenced(helm: Helm) -> None:
    rendered = helm.template(values_file("secure"))
    assert "Secret" not in rendered.kinds()
    seen = set()
    for obj in rendered.objects:
        for path, leaf in walk(obj):
            if leaf in SECRET_NAMES:
                assert REFERENCE_PATH.search(path), f"{obj['kind']}: {path} = {leaf!r}"
                seen.add(leaf)
    assert seen == SECRET_NAMES
    # No field anywhere is itself a password (e.g. `password: ...` in a trigger).
    fields = [path for obj in rendered.objects for path, _ in walk(obj)]
    assert not [path for path in fields if re.search("password", path.rsplit(".", 1)[-1], re.I)]

    workloads_seen = {obj["kind"] for obj in workloads(rendered)}
    assert workloads_seen == {"Deployment", "Job"}
    for workload in workloads(rendered):
        env = env_of(workload)
        for name, entry in env.items():
            if name.endswith("_FILE"):
                # A path into a Secret mounted read-only (below), never the secret.
                assert entry["value"].startswith("/etc/streamkit/kafka-"), name
            elif re.search("PASSWORD|USERNAME|TOKEN|SECRET", name):
                assert "value" not in entry, name
                assert "secretKeyRef" in entry["valueFrom"], name
        assert {name: env[name]["value"] for name in env if name.startswith("STREAMKIT_S")} == {
            "STREAMKIT_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMKIT_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMKIT_SASL_USERNAME_FILE": "/etc/streamkit/kafka-sasl/user",
            "STREAMKIT_SASL_PASSWORD_FILE": "/etc/streamkit/kafka-sasl/pass",
            "STREAMKIT_SSL_CA": "/etc/streamkit/kafka-tls/ca.crt",
            "STREAMKIT_SSL_CERTIFICATE": "/etc/streamkit/kafka-tls/tls.crt",
            "STREAMKIT_SSL_KEY": "/etc/streamkit/kafka-tls/tls.key",
            "STREAMKIT_SSL_KEY_PASSWORD_FILE": "/etc/streamkit/kafka-tls/tls.key.password",
            "STREAMKIT_SESSION_TIMEOUT_MS": env["STREAMKIT_SESSION_TIMEOUT_MS"]["value"],
            "STREAMKIT_SCHEMA_REGISTRY_URL": "https://schema-registry:8081",
            "STREAMKIT_SHUTDOWN_TIMEOUT": env["STREAMKIT_SHUTDOWN_TIMEOUT"]["value"],
        }
        # Both Secrets are mounted read-only; of the SASL one, only its two keys.
        mounts = {m["name"]: m for m in container(workload)["volumeMounts"]}
        assert mounts["kafka-tls"] == {
            "name": "kafka-tls",
            "mountPath": "/etc/streamkit/kafka-tls",
            "readOnly": True,
        }
        assert mounts["kafka-sasl"] == {
            "name": "kafka-sasl",
            "mountPath": "/etc/streamkit/kafka-sasl",
            "readOnly": True,
        }
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["kafka-sasl"]["secret"] == {
            "secretName": "kafka-credentials",
            "items": [{"key": "user", "path": "user"}, {"key": "pass", "path": "pass"}],
            "defaultMode": 0o440,
        }
        assert volumes["kafka-tls"]["secret"]["defaultMode"] == 0o440

    auth = rendered.one("TriggerAuthentication", f"{FULLNAME}-kafka")
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {
        "username", "password", "ca", "cert", "key", "keyPassword",
    }  # fmt: skip
    (trigger,) = rendered.one("ScaledObject", f"{FULLNAME}-orders")["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"


PASSWORD = "hunter2-do-not-render"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (
            {"kafka": {"sasl": {"password": PASSWORD}}},
            "'/kafka/sasl': additional properties 'password'",
        ),
        (
            {"kafka": {"sasl": {"username": PASSWORD}}},
            "'/kafka/sasl': additional properties 'username'",
        ),
        (
            {"kafka": {"tls": {"keyPassword": PASSWORD}}},
            "'/kafka/tls': additional properties 'keyPassword'",
        ),
        (
            {"kafka": {"extraConfig": {"sasl.password": PASSWORD}}},
            "'/kafka/extraConfig/sasl.password'",
        ),
        (
            {"kafka": {"extraConfig": {"ssl.key.password": PASSWORD}}},
            "'/kafka/extraConfig/ssl.key.password'",
        ),
        ({"kafka": {"extraConfig": {"ssl.key.pem": PASSWORD}}}, "'/kafka/extraConfig/ssl.key.pem'"),
        (
            {"extraEnv": [{"name": "STREAMKIT_KAFKA_SASL_PASSWORD", "value": PASSWORD}]},
            "'/extraEnv/0': missing property 'valueFrom'",
        ),
        (
            {
                "backfills": [
                    {
                        "name": "b",
                        "module": "m:app",
                        "agent": "a",
                        "from": "1",
                        "to": "2",
                        "env": [{"name": "API_TOKEN", "value": PASSWORD}],
                    }
                ]
            },
            "'/backfills/0/env/0': missing property 'valueFrom'",
        ),
    ],
    ids=[
        "sasl-password",
        "sasl-username",
        "tls-key-password",
        "extra-sasl-password",
        "extra-ssl-key-password",
        "extra-pem",
        "env-password",
        "backfill-env-token",
    ],
)
def test_inline_credentials_are_rejected(helm: Helm, values: dict[str, Any], field: str) -> None:
    error = helm.template_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert field in error
    assert PASSWORD not in error


# --- values validation -------------------------------------------------------

PIPELINE = {"name": "orders", "module": "pipelines.orders:app", "partitions": 4, "replicas": 2}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka": {"securityProtocol": "TLS"}},
            "at '/kafka/securityProtocol': value must be one of",
        ),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "at '/kafka/sasl/existingSecret': minLength"),
        ({"kafka": {"brokers": "kafka"}}, "at '/kafka/brokers': 'kafka' does not match pattern"),
        (
            {"kafka": {"extraConfig": {"bootstrap.servers": "x:1"}}},
            "at '/kafka/extraConfig/bootstrap.servers'",
        ),
        (
            {"worker": {"shutdownTimeoutSeconds": "30"}},
            "at '/worker/shutdownTimeoutSeconds': got string, want integer",
        ),
        (
            {"pipelines": [{**PIPELINE, "module": "orders"}]},
            "at '/pipelines/0/module': 'orders' does not match",
        ),
        (
            {"pipelines": [{**PIPELINE, "replicas": "2"}]},
            "at '/pipelines/0/replicas': got string, want integer",
        ),
        (
            {"pipelines": [{"name": "orders", "partitions": 4, "replicas": 2}]},
            "at '/pipelines/0': missing property 'module'",
        ),
        ({"pipelines": [{**PIPELINE, "name": "Orders"}]}, "at '/pipelines/0/name'"),
        (
            {"pipelines": [{**PIPELINE, "partitions": 0}]},
            "at '/pipelines/0/partitions': minimum: got 0, want 1",
        ),
        (
            {"pipelines": [{**PIPELINE, "replicaCount": 3}]},
            "at '/pipelines/0': additional properties 'replicaCount' not allowed",
        ),
        (
            {"pipelines": [{**PIPELINE, "autoscaling": {"enabled": True, "topic": "orders"}}]},
            "at '/pipelines/0': missing property 'groupId'",
        ),
        (
            {"pipelines": [{**PIPELINE, "groupId": "g", "autoscaling": {"enabled": True}}]},
            "at '/pipelines/0/autoscaling': missing property 'topic'",
        ),
        (
            {"backfills": [{"name": "b", "module": "m:app", "agent": "a", "from": "1"}]},
            "at '/backfills/0': missing property 'to'",
        ),
        (
            {"pipelines": [{**PIPELINE, "processingGuarantee": "exactly-once"}]},
            "at '/pipelines/0/processingGuarantee': value must be one of",
        ),
        (
            {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
            "at '/metrics/serviceMonitor/enabled': got string, want boolean",
        ),
    ],
    ids=[
        "security-protocol-enum",
        "sasl-needs-secret",
        "brokers-host-port",
        "extra-config-reserved",
        "timeout-type",
        "module-format",
        "replicas-type",
        "module-required",
        "name-format",
        "partitions-minimum",
        "unknown-pipeline-key",
        "autoscaling-needs-group",
        "autoscaling-needs-topic",
        "backfill-needs-to",
        "guarantee-enum",
        "boolean-type",
    ],
)
def test_schema_rejects_bad_values(helm: Helm, values: dict[str, Any], message: str) -> None:
    error = helm.template_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(
    ("pipelines", "message"),
    [
        ([{**PIPELINE, "replicas": 5}], "pipelines[orders]: replicas (5) exceeds partitions (4)"),
        ([PIPELINE, {**PIPELINE, "module": "x:app"}], 'the name "orders" is used twice'),
        (
            [
                {
                    **PIPELINE,
                    "groupId": "g",
                    "autoscaling": {"enabled": True, "topic": "t", "minReplicas": 5},
                }
            ],
            "minReplicas (5) exceeds the effective maxReplicas (4",
        ),
    ],
    ids=["replicas-over-partitions", "duplicate-name", "min-over-cap"],
)
def test_template_rejects_inconsistent_pipelines(
    helm: Helm, pipelines: list[dict[str, Any]], message: str
) -> None:
    assert message in helm.template_error({"pipelines": pipelines})


def test_a_backfill_in_a_pipelines_live_group_is_refused_at_render(helm: Helm) -> None:
    # The CLI refuses it too, but only once the Job runs; helm says it first.
    backfill: dict[str, Any] = {
        "name": "june",
        "module": "pipelines.orders:app",
        "agent": "enrich",
        "from": "2024-06-01T00:00:00Z",
        "to": "2024-06-02T00:00:00Z",
        "redirect": {"orders.enriched": "orders.enriched.backfill"},
        "group": "orders-live",
    }
    values = {"pipelines": [{**PIPELINE, "groupId": "orders-live"}], "backfills": [backfill]}
    error = helm.template_error(values)
    assert 'backfills[june]: group "orders-live" is pipelines[orders]\'s consumer group' in error
    backfill["group"] = "orders-june"
    assert helm.template(values).of_kind("Job")


def test_truncated_names_must_not_collide(helm: Helm) -> None:
    values = {
        "fullnameOverride": "a" * 40,
        "pipelines": [
            {**PIPELINE, "name": "orders-enrichment-eu"},
            {**PIPELINE, "name": "orders-enrichment-us"},
        ],
    }
    error = helm.template_error(values)
    assert "pipelines[orders-enrichment-us]: its resource name" in error
    assert "collides with another pipeline's" in error


def test_replicas_may_exceed_partitions_only_when_keda_decides(helm: Helm) -> None:
    pipeline = {**PIPELINE, "replicas": 9, "groupId": "g",
                "autoscaling": {"enabled": True, "topic": "orders"}}  # fmt: skip
    rendered = helm.template({"pipelines": [pipeline]})
    assert rendered.one("ScaledObject", f"{FULLNAME}-orders")["spec"]["maxReplicaCount"] == 4


# --- monitoring and network policy ------------------------------------------


def test_service_monitor_scrapes_every_pipeline(helm: Helm) -> None:
    rendered = helm.template(values_file("observability"))
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    (service,) = rendered.of_kind("Service")
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_network_policy_covers_pipelines_and_backfills(helm: Helm) -> None:
    rendered = helm.template(values_file("observability"))
    (policy,) = rendered.of_kind("NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert {obj["kind"] for obj in workloads(rendered)} == {"Deployment", "Job"}
    for workload in workloads(rendered):
        assert matches(selector, workload["spec"]["template"]["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    dns, kafka, registry = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert kafka == {
        "ports": [{"port": 9092, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    }
    assert registry["ports"] == [{"port": 8081, "protocol": "TCP"}]


def test_scheduling_values_reach_every_pod(helm: Helm) -> None:
    rendered = helm.template(values_file("observability"))
    for workload in workloads(rendered):
        template = workload["spec"]["template"]
        assert template["metadata"]["annotations"] == {"example.com/team": "data"}
        assert template["metadata"]["labels"]["team"] == "data"
        assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert template["spec"]["serviceAccountName"] == "pipelines"
    deployment = rendered.one("Deployment", f"{FULLNAME}-example")
    (spread,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert rendered.one("ServiceAccount", "pipelines")["automountServiceAccountToken"] is False


# --- values.yaml and NOTES.txt -----------------------------------------------


def test_every_value_has_a_comment() -> None:
    """House style: each key in values.yaml is documented by a comment."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    key = re.compile(r"^\s*(- )?[A-Za-z][\w.-]*:")
    undocumented = []
    for number, line in enumerate(lines):
        if not key.match(line) or "#" in line:
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#"):
            undocumented.append(f"{number + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


def test_values_yaml_matches_its_schema_defaults() -> None:
    """values.yaml is complete: every top-level key the schema requires is present."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(schema["required"]) <= set(values)
    assert set(values) <= set(schema["properties"])


def test_notes_explain_how_to_watch_the_rollout(helm: Helm, tmp_path: Path) -> None:
    # helm 3 cannot render NOTES.txt without a cluster (`install --dry-run`
    # still connects), so render it through tpl in a copy of the chart.
    chart = tmp_path / "streamkit"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n', encoding="utf-8"
    )
    text = helm.template_text(values_file("statefulset"), values_file("backfill"), chart=chart)
    notes: str = yaml.safe_load(text.split("zz-notes.yaml")[1])["notes"]
    assert f"rollout status statefulset/{FULLNAME}-orders" in notes
    assert f"rollout status deployment/{FULLNAME}-example" in notes
    assert f"-n {NAMESPACE} " in notes
    assert (
        "kafka-consumer-groups.sh --bootstrap-server kafka:9092 --describe --group orders" in notes
    )
    jobs = helm.template(values_file("statefulset"), values_file("backfill"))
    full, minimal = backfill_job(jobs, "orders-2024-06-01"), backfill_job(jobs, "example-replay")
    # A wait on `complete` alone would sit out its whole timeout on a failed
    # Job: bound it by the Job's own deadline, and say how to see a failure.
    name, other = full["metadata"]["name"], minimal["metadata"]["name"]
    assert f"wait --for=condition=complete job/{name} --timeout=7260s" in notes  # 7200 + 60
    assert f"wait --for=condition=complete job/{other} --timeout=24h" in notes
    assert f"wait --for=condition=failed job/{name} --timeout=7260s" in notes
    assert f"get job {name} -w" in notes


# --- topic replication -------------------------------------------------------


def test_replication_reaches_every_pod_and_job_only_when_set(helm: Helm) -> None:
    # Empty (the default): the brokers' default.replication.factor, and no env
    # var at all, so upgrading the chart changes no existing pod or Job spec.
    for workload in workloads(helm.template(values_file("backfill"))):
        assert "STREAMKIT_REPLICATION" not in env_of(workload)
    rendered = helm.template(values_file("backfill"), {"kafka": {"replication": 3}})
    kinds = {workload["kind"] for workload in workloads(rendered)}
    assert kinds >= {"Deployment", "Job"}  # pipelines and backfills alike
    for workload in workloads(rendered):
        assert env_of(workload)["STREAMKIT_REPLICATION"] == {
            "name": "STREAMKIT_REPLICATION",
            "value": "3",
        }


@pytest.mark.parametrize("replication", [0, "3", "three", 2.5])
def test_schema_rejects_a_bad_replication(helm: Helm, replication: object) -> None:
    error = helm.template_error({"kafka": {"replication": replication}})
    assert "values don't meet the specifications of the schema" in error
    assert "at '/kafka/replication'" in error


# --- Schema Registry credentials (issue 20, review 1.5) ----------------------

REGISTRY_SECRET = "sr-do-not-render"  # a password that must never reach a manifest or an error
REGISTRY = {
    "kafka": {
        "schemaRegistryUrl": "https://psrc-123.confluent.cloud",
        "schemaRegistry": {"existingSecret": "schema-registry", "userInfoKey": "api-key-secret"},
    }
}


def test_registry_credentials_are_a_secret_key_ref_in_every_pod_and_job(helm: Helm) -> None:
    for workload in workloads(helm.template(values_file("backfill"))):
        assert "STREAMKIT_SCHEMA_REGISTRY_USER_INFO" not in env_of(workload)
    rendered = helm.template(values_file("backfill"), REGISTRY)
    assert {workload["kind"] for workload in workloads(rendered)} >= {"Deployment", "Job"}
    for workload in workloads(rendered):
        env = env_of(workload)
        assert env["STREAMKIT_SCHEMA_REGISTRY_URL"]["value"] == "https://psrc-123.confluent.cloud"
        assert env["STREAMKIT_SCHEMA_REGISTRY_USER_INFO"] == {
            "name": "STREAMKIT_SCHEMA_REGISTRY_USER_INFO",
            "valueFrom": {"secretKeyRef": {"name": "schema-registry", "key": "api-key-secret"}},
        }
    # The default key, and the Secret's name only ever as a reference.
    secure = helm.template(
        values_file("secure"), {"kafka": {"schemaRegistry": {"existingSecret": "schema-registry"}}}
    )
    for workload in workloads(secure):
        ref = env_of(workload)["STREAMKIT_SCHEMA_REGISTRY_USER_INFO"]["valueFrom"]
        assert ref["secretKeyRef"] == {"name": "schema-registry", "key": "user-info"}
    for obj in secure.objects:
        for path, leaf in walk(obj):
            if leaf == "schema-registry":
                assert REFERENCE_PATH.search(path), f"{obj['kind']}: {path}"


def test_registry_credentials_without_a_registry_url_are_refused(helm: Helm) -> None:
    error = helm.template_error({"kafka": {"schemaRegistry": {"existingSecret": "sr"}}})
    assert "existingSecret is set but kafka.schemaRegistryUrl is empty" in error


@pytest.mark.parametrize(
    "url",
    [
        f"https://SRKEY:{REGISTRY_SECRET}@psrc-123.confluent.cloud",
        f"http://{REGISTRY_SECRET}@schema-registry:8081/",
        f"https://registry-a:8081,https://SRKEY:{REGISTRY_SECRET}@registry-b:8081",
    ],
)
def test_schema_refuses_credentials_in_the_registry_url(helm: Helm, url: str) -> None:
    error = helm.template_error({"kafka": {"schemaRegistryUrl": url}})
    assert "values don't meet the specifications of the schema" in error
    assert "at '/kafka/schemaRegistryUrl'" in error
    assert "kafka.schemaRegistry.existingSecret" in error  # says what to do instead
    assert REGISTRY_SECRET not in error


@pytest.mark.parametrize(
    "name",
    [
        "ENRICHMENT_API_KEY",
        "DB_PASS",
        "Db_Pass",
        "db_pass",
        "GCP_CREDENTIALS",
        "HTTP_AUTH_HEADER",
        "STREAMKIT_SCHEMA_REGISTRY_USER_INFO",
    ],
)
def test_credential_looking_env_must_come_from_a_secret(helm: Helm, name: str) -> None:
    inline = {"name": name, "value": REGISTRY_SECRET}
    by_ref = {"name": name, "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": "k"}}}
    backfill = {"name": "b", "module": "m:app", "agent": "a", "from": "1", "to": "2"}

    def values(where: str, env: list[Obj]) -> Obj:
        if where == "extraEnv":
            return {"extraEnv": env}
        if where == "pipelines/0/env":
            return {"pipelines": [{**PIPELINE, "env": env}]}
        return {"backfills": [{**backfill, "env": env}]}

    for where in ("extraEnv", "pipelines/0/env", "backfills/0/env"):
        error = helm.template_error(values(where, [inline]))
        assert f"'/{where}/0': missing property 'valueFrom'" in error
        assert REGISTRY_SECRET not in error
        carrying = [env_of(w).get(name) for w in workloads(helm.template(values(where, [by_ref])))]
        assert by_ref in carrying and all(entry in (None, by_ref) for entry in carrying)
