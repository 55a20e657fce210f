"""Stateful pipelines (``state.enabled``): a StatefulSet with a volume per pod.

A pipeline whose App declares tables keeps each table partition's local
store in ``STREAMKIT_STATE_DIR``. The store is a cache of the changelog
topic, so it lives on a PersistentVolumeClaim per pod (the StatefulSet's
``state`` claim template): a pod that comes back to its volume restores only
the changelog's tail. The upgrade guards (kind change, immutable claim
template) are in test_upgrades.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, NAMESPACE, RELEASE, VALUES_DIR, Helm, Obj

FULLNAME = f"{RELEASE}-streamkit"
STATE = VALUES_DIR / "state.yaml"
STATIC = VALUES_DIR / "statefulset.yaml"
EXAMPLE = {"name": "example", "module": "pipelines.example:app", "partitions": 4, "replicas": 2}
PIPELINE: dict[str, Any] = {
    "name": "orders", "module": "pipelines.orders:app", "partitions": 4, "replicas": 2,
}  # fmt: skip


def stateful(**state: Any) -> dict[str, Any]:
    return {"pipelines": [{**PIPELINE, "state": {"enabled": True, **state}}]}


def worker(workload: Obj) -> Obj:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    result: Obj = container
    return result


def env_of(workload: Obj) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in worker(workload)["env"]}


def state_mounts(workload: Obj) -> list[Obj]:
    return [m for m in worker(workload)["volumeMounts"] if m["name"] == "state"]


def test_state_renders_a_statefulset_with_a_claim_per_pod(helm: Helm) -> None:
    rendered = helm.template(STATE)
    orders = rendered.one("StatefulSet", f"{FULLNAME}-orders")
    (claim,) = orders["spec"]["volumeClaimTemplates"]
    assert claim == {
        # Stable labels only: the template is immutable, a version label
        # would make every chart bump an upgrade the API server refuses.
        "metadata": {"name": "state", "labels": orders["spec"]["selector"]["matchLabels"]},
        "spec": {
            "accessModes": ["ReadWriteOncePod"],
            "storageClassName": "fast-ssd",
            "resources": {"requests": {"storage": "50Gi"}},
        },
    }
    assert env_of(orders)["STREAMKIT_STATE_DIR"] == {
        "name": "STREAMKIT_STATE_DIR",
        "value": "/var/lib/streamkit/state",
    }
    assert state_mounts(orders) == [{"name": "state", "mountPath": "/var/lib/streamkit/state"}]
    spec = orders["spec"]["template"]["spec"]
    # The claim template supplies the pod volume; a pod volume of the same name would clash.
    assert "state" not in {volume["name"] for volume in spec["volumes"]}
    # Writable by the worker (fsGroup), without re-owning a large store on every start.
    assert spec["securityContext"]["fsGroup"] == 10001
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # No Deployment for a stateful pipeline; the stateless one stays a Deployment.
    assert [obj["metadata"]["name"] for obj in rendered.of_kind("Deployment")] == [
        f"{FULLNAME}-example"
    ]
    assert {obj["metadata"]["name"] for obj in rendered.of_kind("StatefulSet")} == {
        f"{FULLNAME}-orders",
        f"{FULLNAME}-totals",
    }


def test_state_defaults_for_a_partial_entry(helm: Helm) -> None:
    # An entry of `pipelines` does not inherit values.yaml's defaults.
    statefulset = helm.template(stateful()).one("StatefulSet", f"{FULLNAME}-orders")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    # No storageClassName at all: "" would mean "no class", not the cluster default.
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "10Gi"}},
    }
    assert env_of(statefulset)["STREAMKIT_STATE_DIR"]["value"] == "/var/lib/streamkit/state"


def test_the_state_dir_follows_mount_path(helm: Helm) -> None:
    statefulset = helm.template(stateful(mountPath="/data/tables")).one(
        "StatefulSet", f"{FULLNAME}-orders"
    )
    assert env_of(statefulset)["STREAMKIT_STATE_DIR"]["value"] == "/data/tables"
    assert state_mounts(statefulset) == [{"name": "state", "mountPath": "/data/tables"}]


def test_state_without_static_membership_is_a_plain_statefulset(helm: Helm) -> None:
    rendered = helm.template(STATE)
    totals = rendered.one("StatefulSet", f"{FULLNAME}-totals")
    assert "STREAMKIT_GROUP_INSTANCE_ID" not in env_of(totals)
    assert "STREAMKIT_STATE_DIR" in env_of(totals)
    # StatefulSet pods carry no pod-template-hash to spread a rollout by.
    for constraint in totals["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert "matchLabelKeys" not in constraint
    orders = rendered.one("StatefulSet", f"{FULLNAME}-orders")
    assert "STREAMKIT_GROUP_INSTANCE_ID" in env_of(orders)


def test_keda_targets_the_statefulset_of_a_stateful_pipeline(helm: Helm) -> None:
    scaled = helm.template(STATE).one("ScaledObject", f"{FULLNAME}-totals")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": f"{FULLNAME}-totals",
    }
    assert scaled["spec"]["minReplicaCount"] == 0  # scale to zero: the claims stay


@pytest.mark.parametrize("values", [None, STATIC], ids=["default", "statefulset"])
def test_without_state_nothing_of_it_is_rendered(helm: Helm, values: Path | None) -> None:
    given = [values] if values else []
    rendered = helm.template(*given)
    for workload in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        assert "volumeClaimTemplates" not in workload["spec"]
        assert "STREAMKIT_STATE_DIR" not in env_of(workload)
        assert not state_mounts(workload)
        assert "fsGroupChangePolicy" not in workload["spec"]["template"]["spec"]["securityContext"]
    # Spelling the block out, disabled, renders exactly the same objects.
    pipelines = yaml.safe_load(values.read_text())["pipelines"] if values else [EXAMPLE]
    disabled = [{**p, "state": {"enabled": False, "size": "1Gi"}} for p in pipelines]
    assert helm.template(*given, {"pipelines": disabled}).objects == rendered.objects


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {**stateful(), "podSecurityContext": {"fsGroup": None}},
            "pipelines[orders].state: podSecurityContext.fsGroup is not set",
        ),
        (
            stateful(mountPath="/tmp"),
            "pipelines[orders].state.mountPath: /tmp is already the /tmp emptyDir",
        ),
        (
            {
                **stateful(mountPath="/etc/streamkit/kafka-tls"),
                "kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "kafka-client-tls"}},
            },
            "/etc/streamkit/kafka-tls is already kafka.tls.mountPath",
        ),
    ],
    ids=["no-fsgroup", "tmp", "tls"],
)
def test_a_state_volume_the_worker_cannot_use_is_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in helm.template_error(values)


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"size": "10GB"}, "/state/size"),
        ({"size": "1.5Gi"}, "/state/size"),  # integers only, so live sizes compare exactly
        ({"size": 10}, "/state/size"),
        ({"mountPath": "state"}, "/state/mountPath"),
        ({"mountPath": "/var/lib/state/"}, "/state/mountPath"),
        ({"accessModes": ["ReadOnlyMany"]}, "/state/accessModes/0"),
        ({"accessModes": []}, "/state/accessModes"),
        ({"storageClassName": "Fast SSD"}, "/state/storageClassName"),
        ({"sizeLimit": "1Gi"}, "/state': additional properties 'sizeLimit'"),
    ],
)
def test_schema_rejects_bad_state_values(helm: Helm, state: dict[str, Any], where: str) -> None:
    error = helm.template_error(stateful(**state))
    assert "values don't meet the specifications of the schema" in error
    assert f"at '/pipelines/0{where}" in error


def notes_by_pipeline(notes: str) -> dict[str, str]:
    """Each pipeline's block of the install notes, by pipeline name."""
    blocks = re.split(r"\n  (?=[a-z][-a-z0-9]*: \S+ as )", notes.split("\nBackfills:")[0])
    return {block.split(":", 1)[0]: block for block in blocks[1:]}


def test_notes_show_the_claims_and_ask_for_static_membership(helm: Helm, tmp_path: Path) -> None:
    # Rendered through tpl in a copy of the chart, as in test_chart.py.
    chart = tmp_path / "streamkit"
    shutil.copytree(CHART, chart)
    shutil.move(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n', encoding="utf-8"
    )
    text = helm.template_text(STATE, chart=chart)
    blocks = notes_by_pipeline(next(yaml.safe_load_all(text.split("zz-notes.yaml")[1]))["notes"])
    assert set(blocks) == {"orders", "totals", "example"}
    assert f"rollout status statefulset/{FULLNAME}-totals" in blocks["totals"]
    assert f"claims state-{FULLNAME}-orders-<ordinal>" in blocks["orders"]
    assert "a 50Gi volume per pod at /var/lib/streamkit/state" in blocks["orders"]
    selector = f"streamkit.io/pipeline=totals,app.kubernetes.io/instance={RELEASE}"
    assert f"-n {NAMESPACE} get pvc -l {selector}" in blocks["totals"]
    # Only the stateful pipeline without static membership gets the advice.
    assert "Set staticMembership: true" in blocks["totals"]
    assert "staticMembership" not in blocks["orders"]
    assert "State:" not in blocks["example"]
