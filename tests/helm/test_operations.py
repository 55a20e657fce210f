"""Chart values an operator reaches for on day two, rendered with the real helm.

Each test is one finding of the Kubernetes review (issue 20, section 4 and
1.8): a budget that would block every drain, rollouts that wait for a new pod
to survive its first records, where the worker listens, the session timeout
of static members, the liveness timeout, the NetworkPolicy's way to the
Schema Registry, KEDA's activation threshold, scale to zero with static
members, and annotations for a controller that restarts pods on a credential
rotation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import RELEASE, VALUES_DIR, Helm, Obj, Rendered

FULLNAME = f"{RELEASE}-streamkit"
PIPELINE: dict[str, Any] = {
    "name": "orders",
    "module": "pipelines.orders:app",
    "partitions": 4,
    "replicas": 2,
}
STATIC = {**PIPELINE, "name": "payments", "staticMembership": True}
BACKFILL = VALUES_DIR / "backfill.yaml"


def pipelines(rendered: Rendered) -> list[Obj]:
    return rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")


def env_of(workload: Obj) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


def pod_templates(rendered: Rendered) -> dict[str, str]:
    return {
        f"{obj['kind']}/{obj['metadata']['name']}": json.dumps(
            obj["spec"]["template"], sort_keys=True
        )
        for obj in rendered.objects
        if obj["kind"] in ("Deployment", "StatefulSet", "Job")
    }


# --- 4.5: a budget of 0 blocks every voluntary drain ------------------------


@pytest.mark.parametrize("budget", [0, "0%"])
def test_a_disruption_budget_of_zero_is_refused(helm: Helm, budget: object) -> None:
    error = helm.template_error(
        {"podDisruptionBudget": {"enabled": True, "maxUnavailable": budget}}
    )
    assert "at '/podDisruptionBudget/maxUnavailable'" in error


@pytest.mark.parametrize("budget", [2, "25%"])
def test_a_disruption_budget_above_zero_is_rendered(helm: Helm, budget: object) -> None:
    rendered = helm.template({"podDisruptionBudget": {"enabled": True, "maxUnavailable": budget}})
    (pdb,) = rendered.of_kind("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == budget


# --- 4.6: a pod counts as available only after it survived a while ---------


def test_workloads_wait_min_ready_seconds_before_the_next_pod(helm: Helm) -> None:
    values = {"pipelines": [PIPELINE, STATIC]}
    rendered = helm.template(values)
    assert {obj["kind"] for obj in pipelines(rendered)} == {"Deployment", "StatefulSet"}
    for workload in pipelines(rendered):
        assert workload["spec"]["minReadySeconds"] == 30
    shorter = helm.template({**values, "minReadySeconds": 5})
    for workload in pipelines(shorter):
        assert workload["spec"]["minReadySeconds"] == 5
    # A workload field, not a pod field: changing it restarts no pod.
    assert pod_templates(shorter) == pod_templates(rendered)


def test_min_ready_seconds_must_be_a_whole_number_of_seconds(helm: Helm) -> None:
    error = helm.template_error({"minReadySeconds": -1})
    assert "at '/minReadySeconds'" in error


# --- 4.11: where the worker listens ------------------------------------------


def test_the_http_host_defaults_to_every_ipv4_address_and_can_be_ipv6(helm: Helm) -> None:
    for workload in pipelines(helm.template({"pipelines": [PIPELINE, STATIC]})):
        assert env_of(workload)["STREAMKIT_HTTP_HOST"] == "0.0.0.0"
    ipv6 = helm.template({"pipelines": [PIPELINE, STATIC], "worker": {"httpHost": "::"}})
    for workload in pipelines(ipv6):
        assert env_of(workload)["STREAMKIT_HTTP_HOST"] == "::"


@pytest.mark.parametrize("host", ["", "localhost:8080"])
def test_the_http_host_must_be_an_address(helm: Helm, host: str) -> None:
    assert "at '/worker/httpHost'" in helm.template_error({"worker": {"httpHost": host}})


# --- 4.12: static members get a session timeout of their own ----------------


def test_static_members_get_their_own_session_timeout(helm: Helm) -> None:
    rendered = helm.template({"pipelines": [PIPELINE, STATIC]}, BACKFILL)
    static = rendered.one("StatefulSet", f"{FULLNAME}-payments")
    dynamic = rendered.one("Deployment", f"{FULLNAME}-orders")
    # A rescheduled StatefulSet pod (drain, image pull) often needs over 45 s.
    assert env_of(static)["STREAMKIT_SESSION_TIMEOUT_MS"] == "75000"
    assert env_of(dynamic)["STREAMKIT_SESSION_TIMEOUT_MS"] == "45000"
    jobs = rendered.of_kind("Job")
    assert jobs and all(env_of(job)["STREAMKIT_SESSION_TIMEOUT_MS"] == "45000" for job in jobs)
    tuned = helm.template(
        {"pipelines": [PIPELINE, STATIC], "kafka": {"staticSessionTimeoutMs": 90000}}, BACKFILL
    )
    assert (
        env_of(tuned.one("StatefulSet", f"{FULLNAME}-payments"))["STREAMKIT_SESSION_TIMEOUT_MS"]
        == "90000"
    )
    # Only the static pods change: no Deployment restarts and no backfill is a new Job.
    before, after = pod_templates(rendered), pod_templates(tuned)
    assert {name for name in before if before[name] != after.get(name)} == {
        f"StatefulSet/{FULLNAME}-payments"
    }


def test_the_static_session_timeout_is_bounded_like_the_other(helm: Helm) -> None:
    error = helm.template_error({"kafka": {"staticSessionTimeoutMs": 500}})
    assert "at '/kafka/staticSessionTimeoutMs'" in error


# --- 4.14: the liveness timeout is a chart value ----------------------------


def test_the_liveness_timeout_reaches_pipelines_only_when_set(helm: Helm) -> None:
    # Unset, nothing is rendered: the worker's 60 s applies and no pod changes.
    for workload in helm.template(BACKFILL).objects:
        if workload["kind"] in ("Deployment", "Job"):
            assert "STREAMKIT_LIVENESS_TIMEOUT" not in env_of(workload)
    rendered = helm.template(
        {"pipelines": [PIPELINE, STATIC], "worker": {"livenessTimeoutSeconds": 150}}, BACKFILL
    )
    for workload in pipelines(rendered):
        assert env_of(workload)["STREAMKIT_LIVENESS_TIMEOUT"] == "150"
    # A replay Job serves no probes.
    for job in rendered.of_kind("Job"):
        assert "STREAMKIT_LIVENESS_TIMEOUT" not in env_of(job)


@pytest.mark.parametrize("timeout", [0, "60"])
def test_the_liveness_timeout_is_whole_positive_seconds(helm: Helm, timeout: object) -> None:
    error = helm.template_error({"worker": {"livenessTimeoutSeconds": timeout}})
    assert "at '/worker/livenessTimeoutSeconds'" in error


# --- 4.9: the NetworkPolicy lets pods reach the Schema Registry -------------


def egress(rendered: Rendered) -> list[Obj]:
    (policy,) = rendered.of_kind("NetworkPolicy")
    rules: list[Obj] = policy["spec"]["egress"]
    return rules


@pytest.mark.parametrize(
    ("url", "ports"),
    [
        ("https://psrc-123.confluent.cloud", [443]),
        ("http://schema-registry.registry:8081", [8081]),
        ("http://sr-0:8081,http://sr-1:8082/ , http://sr-2:8081", [8081, 8082]),
        ("http://[fd00::5]:8085", [8085]),
        ("http://schema-registry", [80]),
    ],
    ids=["https-default", "port", "several", "ipv6", "http-default"],
)
def test_the_schema_registry_port_is_allowed_out(helm: Helm, url: str, ports: list[int]) -> None:
    policy: dict[str, Any] = {"enabled": True}
    values = {"networkPolicy": policy, "kafka": {"schemaRegistryUrl": url}}
    _dns, _kafka, registry = egress(helm.template(values))
    assert registry == {"ports": [{"port": port, "protocol": "TCP"} for port in ports]}
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "registry"}}}]
    policy["schemaRegistryTo"] = peers
    *_, narrowed = egress(helm.template(values))
    assert narrowed["to"] == peers


def test_without_a_registry_no_registry_rule(helm: Helm) -> None:
    assert len(egress(helm.template({"networkPolicy": {"enabled": True}}))) == 2  # DNS, Kafka


# --- 4.10: KEDA's activation threshold ---------------------------------------


def keda_pipeline(**autoscaling: Any) -> dict[str, Any]:
    scaling = {"enabled": True, "topic": "orders", **autoscaling}
    return {**PIPELINE, "groupId": "orders", "autoscaling": scaling}


def trigger(rendered: Rendered) -> Obj:
    (scaled,) = rendered.of_kind("ScaledObject")
    (kafka,) = scaled["spec"]["triggers"]
    metadata: Obj = kafka["metadata"]
    return metadata


def test_keda_activation_lag_threshold(helm: Helm) -> None:
    # KEDA's default: one record wakes a group at zero.
    assert trigger(helm.template({"pipelines": [keda_pipeline()]}))["activationLagThreshold"] == "0"
    woken = helm.template({"pipelines": [keda_pipeline(minReplicas=0, activationLagThreshold=50)]})
    assert trigger(woken)["activationLagThreshold"] == "50"
    error = helm.template_error({"pipelines": [keda_pipeline(activationLagThreshold=-1)]})
    assert "at '/pipelines/0/autoscaling/activationLagThreshold'" in error


# --- 1.8: scale to zero with static members ----------------------------------


def test_static_members_scale_to_zero_only_when_acknowledged(helm: Helm) -> None:
    static = {**keda_pipeline(minReplicas=0), "staticMembership": True}
    error = helm.template_error({"pipelines": [static]})
    assert "pipelines[orders].autoscaling: minReplicas 0 with staticMembership" in error
    assert "allowStaticScaleToZero: true" in error
    static["autoscaling"]["allowStaticScaleToZero"] = True
    (scaled,) = helm.template({"pipelines": [static]}).of_kind("ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0
    # Dynamic members leave the group on their way out: nothing to acknowledge.
    (plain,) = helm.template({"pipelines": [keda_pipeline(minReplicas=0)]}).of_kind("ScaledObject")
    assert plain["spec"]["minReplicaCount"] == 0


# --- 4.7: a controller may restart the pods when a credential rotates -------


def test_workload_annotations_reach_the_workloads_only(helm: Helm) -> None:
    notes = {"secret.reloader.stakater.com/reload": "kafka-credentials,kafka-client-tls"}
    plain = helm.template({"pipelines": [PIPELINE, STATIC]}, BACKFILL)
    rendered = helm.template(
        {"pipelines": [PIPELINE, STATIC], "workloadAnnotations": notes}, BACKFILL
    )
    for workload in pipelines(rendered):
        assert workload["metadata"]["annotations"] == notes
    # Not on pods, not on Jobs: setting them restarts no pod and starts no backfill again.
    assert pod_templates(rendered) == pod_templates(plain)
    for job in rendered.of_kind("Job"):
        assert not set(notes) & set(job["metadata"].get("annotations", {}))
