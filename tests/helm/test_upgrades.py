"""What a ``helm upgrade`` changes in a running release, rendered with the real helm.

An upgrade that changes a Deployment's or StatefulSet's pod template rolls
every pod of the pipeline (one rebalance per pod); one that changes a Job's
pod template is refused by the API server (``spec.template`` is immutable)
and fails the whole upgrade. These tests render the chart before and after a
change and compare what the API server would be asked to patch. Where the
answer depends on what is running (the replica count under KEDA, a kind
change, a StatefulSet's immutable volume claim template), the chart's cluster
read is replaced by canned live objects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, NAMESPACE, RELEASE, Helm, HelmError, Obj, Rendered, Values

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
VALUES_DIR = Path(__file__).parent / "values"
# A value set with every workload kind: Deployments, a StatefulSet, Jobs.
ALL_WORKLOADS = (VALUES_DIR / "statefulset.yaml", VALUES_DIR / "backfill.yaml")


def chart_at(tmp_path: Path, version: str, app_version: str) -> Path:
    """A copy of the chart with another version and appVersion in Chart.yaml."""
    chart = tmp_path / f"streamkit-{version}"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    meta["version"], meta["appVersion"] = version, app_version
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    return chart


def render(helm: Helm, *values: Values, chart: Path = CHART) -> Rendered:
    text = helm.template_text(*values, chart=chart)
    objects = [obj for obj in yaml.safe_load_all(text) if obj is not None]
    return Rendered(text=text, objects=objects)


def pod_templates(rendered: Rendered) -> dict[str, str]:
    """Each workload's pod template, canonically serialized, by kind and name."""
    return {
        f"{obj['kind']}/{obj['metadata']['name']}": json.dumps(
            obj["spec"]["template"], sort_keys=True
        )
        for obj in rendered.objects
        if obj["kind"] in WORKLOAD_KINDS
    }


def workload_names(rendered: Rendered, kind: str) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in rendered.of_kind(kind))


def test_a_chart_version_bump_changes_no_pod_template(helm: Helm, tmp_path: Path) -> None:
    # The image tag is pinned: with an empty tag the image follows appVersion,
    # and a new image is a real reason to roll.
    pinned = {"image": {"tag": "1.4.0"}}
    before = render(helm, *ALL_WORKLOADS, pinned, chart=chart_at(tmp_path, "0.1.0", "0.1.0"))
    after = render(helm, *ALL_WORKLOADS, pinned, chart=chart_at(tmp_path, "0.2.0", "0.2.0"))
    templates = pod_templates(before)
    assert {name.split("/")[0] for name in templates} == set(WORKLOAD_KINDS)
    assert pod_templates(after) == templates
    # The version labels are still on the workloads themselves.
    for obj in after.objects:
        if obj["kind"] in WORKLOAD_KINDS:
            labels: Obj = obj["metadata"]["labels"]
            assert labels["helm.sh/chart"] == "streamkit-0.2.0"
            assert labels["app.kubernetes.io/version"] == "0.2.0"


# --- backfill Jobs across upgrades -------------------------------------------

BACKFILL = VALUES_DIR / "backfill.yaml"
PREVIOUS: dict[str, object] = {
    "image": {"tag": "1.4.0"},
    "extraEnv": [{"name": "ENRICHMENT_URL", "value": "http://enrichment"}],
}
CHANGES: dict[str, dict[str, object]] = {
    "image-tag": {**PREVIOUS, "image": {"tag": "1.4.1"}},
    "extra-env": {**PREVIOUS, "extraEnv": [{"name": "ENRICHMENT_URL", "value": "http://v2"}]},
    "kafka": {**PREVIOUS, "kafka": {"brokers": "kafka-0.kafka:9092"}},
    "drain-deadline": {**PREVIOUS, "worker": {"shutdownTimeoutSeconds": 40}},
}


# spec.template is immutable; so are the selector and completions (which the
# chart leaves to the API server), and podFailurePolicy is treated as such.
IMMUTABLE_JOB_FIELDS = ("template", "podFailurePolicy", "selector", "completions")


def jobs(rendered: Rendered) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in rendered.of_kind("Job")}


def assert_no_job_is_patched(before: Rendered, after: Rendered) -> None:
    """A Job name in both renders has the same immutable fields: helm never patches them."""
    old, new = jobs(before), jobs(after)
    assert old and new
    for name in old.keys() & new.keys():
        for field in IMMUTABLE_JOB_FIELDS:
            assert new[name]["spec"].get(field) == old[name]["spec"].get(field), (
                f"Job/{name}: spec.{field} would be patched"
            )


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_backfill_template_is_a_new_job(helm: Helm, change: str) -> None:
    before = render(helm, BACKFILL, PREVIOUS)
    after = render(helm, BACKFILL, CHANGES[change])
    assert pod_templates(before) != pod_templates(after)  # the change reaches the pods
    assert_no_job_is_patched(before, after)
    assert not jobs(before).keys() & jobs(after).keys()


def test_a_chart_version_bump_with_a_default_image_is_a_new_job(helm: Helm, tmp_path: Path) -> None:
    # No image tag: the image follows appVersion, so the template changes.
    before = render(helm, BACKFILL, chart=chart_at(tmp_path, "0.1.0", "0.1.0"))
    after = render(helm, BACKFILL, chart=chart_at(tmp_path, "0.2.0", "0.2.0"))
    assert_no_job_is_patched(before, after)
    assert not jobs(before).keys() & jobs(after).keys()


def test_a_job_keeps_its_name_while_its_template_is_unchanged(helm: Helm, tmp_path: Path) -> None:
    pinned = {"image": {"tag": "1.4.0"}}
    before = render(helm, BACKFILL, pinned, chart=chart_at(tmp_path, "0.1.0", "0.1.0"))
    # A chart bump and a pipeline change, neither of which reaches the Jobs.
    pipelines = {**pinned, "pipelines": [{"name": "orders", "module": "pipelines.orders:app",
                                          "partitions": 8, "replicas": 8}]}  # fmt: skip
    after = render(helm, BACKFILL, pipelines, chart=chart_at(tmp_path, "0.2.0", "0.2.0"))
    assert jobs(after).keys() == jobs(before).keys()
    assert_no_job_is_patched(before, after)


def test_backfill_jobs_are_named_after_their_entry_and_kept_by_helm(helm: Helm) -> None:
    rendered = render(helm, BACKFILL)
    by_entry = {
        job["metadata"]["labels"]["streamkit.io/backfill"]: job for job in jobs(rendered).values()
    }
    assert set(by_entry) == {"orders-2024-06-01", "example-replay"}
    for entry, job in by_entry.items():
        name: str = job["metadata"]["name"]
        prefix, _, digest = name.rpartition("-")
        assert prefix == f"rel-streamkit-backfill-{entry}"
        assert len(digest) == 10 and int(digest, 16) >= 0
        assert len(name) <= 63
        # Removing or renaming the entry must not delete a Job that may be running.
        assert job["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert job["spec"]["template"]["metadata"]["labels"]["streamkit.io/backfill"] == entry


def test_long_backfill_names_keep_the_hash(helm: Helm) -> None:
    entry = {"name": "b" * 30, "module": "m:app", "agent": "a", "from": "0", "to": "1"}
    (job,) = render(helm, {"fullnameOverride": "a" * 40, "backfills": [entry]}).of_kind("Job")
    name: str = job["metadata"]["name"]
    assert len(name) == 63
    assert name.startswith(f"{'a' * 40}-backfill-b")
    assert len(name.rpartition("-")[2]) == 10


# --- switching autoscaling on for a running pipeline -------------------------

KEDA = VALUES_DIR / "keda.yaml"
LOOKUP_TEMPLATE = "_lookup.tpl"


def chart_with_live_objects(tmp_path: Path, live: list[Obj]) -> Path:
    """A copy of the chart whose cluster lookups answer with ``live``.

    ``helm template`` has no cluster, so ``lookup`` returns nothing. The
    chart keeps its one ``lookup`` call in templates/_lookup.tpl; the copy
    replaces that file with one that reads the objects from a chart file.
    """
    chart = tmp_path / "streamkit-live"
    shutil.copytree(CHART, chart)
    (chart / "live.json").write_text(json.dumps(live), encoding="utf-8")
    original = (chart / "templates" / LOOKUP_TEMPLATE).read_text(encoding="utf-8")
    assert original.count('lookup "apps/v1"') == 1
    others = [p.name for p in (chart / "templates").iterdir() if p.name != LOOKUP_TEMPLATE]
    assert not [name for name in others if "lookup " in (chart / "templates" / name).read_text()]
    (chart / "templates" / LOOKUP_TEMPLATE).write_text(
        """{{- define "streamkit.lookupWorkload" -}}
{{- range (.root.Files.Get "live.json" | fromJsonArray) }}
{{- if and (eq .kind $.kind) (eq .metadata.namespace $.namespace) (eq .metadata.name $.name) }}
{{- toYaml . }}
{{- end }}
{{- end }}
{{- end }}
""",
        encoding="utf-8",
    )
    return chart


def live(kind: str, name: str, replicas: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas},
    }


def test_enabling_keda_keeps_the_running_replica_count(helm: Helm, tmp_path: Path) -> None:
    # orders (a Deployment) runs 5 pods, payments (a StatefulSet) 3: the
    # upgrade that hands them to KEDA must render those counts, not drop the
    # field (which the API server would default to 1).
    chart = chart_with_live_objects(
        tmp_path,
        [
            live("Deployment", "rel-streamkit-orders", 5),
            live("StatefulSet", "rel-streamkit-payments", 3),
        ],
    )
    rendered = render(helm, KEDA, chart=chart)
    assert rendered.one("Deployment", "rel-streamkit-orders")["spec"]["replicas"] == 5
    assert rendered.one("StatefulSet", "rel-streamkit-payments")["spec"]["replicas"] == 3


def test_a_pipeline_keda_scaled_to_zero_stays_at_zero(helm: Helm, tmp_path: Path) -> None:
    chart = chart_with_live_objects(tmp_path, [live("StatefulSet", "rel-streamkit-payments", 0)])
    rendered = render(helm, KEDA, chart=chart)
    assert rendered.one("StatefulSet", "rel-streamkit-payments")["spec"]["replicas"] == 0


def test_keda_on_a_new_pipeline_leaves_replicas_to_keda(helm: Helm, tmp_path: Path) -> None:
    # Nothing live with that name (a fresh install, or `helm template`): no field.
    chart = chart_with_live_objects(tmp_path, [live("Deployment", "rel-streamkit-other", 5)])
    for rendered in (render(helm, KEDA, chart=chart), render(helm, KEDA)):
        for kind in ("Deployment", "StatefulSet"):
            (workload,) = rendered.of_kind(kind)
            assert "replicas" not in workload["spec"]


def test_without_keda_the_values_decide_the_replica_count(helm: Helm, tmp_path: Path) -> None:
    chart = chart_with_live_objects(tmp_path, [live("Deployment", "rel-streamkit-example", 5)])
    rendered = render(helm, chart=chart)
    assert rendered.one("Deployment", "rel-streamkit-example")["spec"]["replicas"] == 2


# --- stateful pipelines: kind changes and the immutable claim template -------

ORDERS = f"{RELEASE}-streamkit-orders"
PIPELINE: dict[str, object] = {
    "name": "orders", "module": "pipelines.orders:app", "groupId": "orders",
    "partitions": 4, "replicas": 2,
}  # fmt: skip
CLAIM: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}


def with_claim(statefulset: Obj, spec: Obj) -> Obj:
    """A live StatefulSet with a ``state`` claim template, as the API server returns it
    (quantities canonical, volumeMode and status filled in)."""
    statefulset["spec"]["volumeClaimTemplates"] = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "state", "labels": {"streamkit.io/pipeline": "orders"}},
            "spec": {**spec, "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"},
        }
    ]
    return statefulset


def pipelines(**fields: object) -> dict[str, object]:
    return {"pipelines": [{**PIPELINE, **fields}]}


REFUSED: dict[str, tuple[list[Obj], dict[str, object], list[str]]] = {
    "deployment-to-state": (
        [live("Deployment", ORDERS, 2)],
        pipelines(state={"enabled": True}),
        [
            f"pipelines[orders]: it runs as Deployment/{ORDERS} and these values make it a"
            " StatefulSet (state.enabled: true)",
            "every new pod starts on an empty state volume and restores its tables",
            "set pipelines[orders].allowKindChange: true for this upgrade",
        ],
    ),
    "deployment-to-static": (
        [live("Deployment", ORDERS, 2)],
        pipelines(staticMembership=True),
        ["it runs as Deployment/", "a StatefulSet (staticMembership: true)", "allowKindChange"],
    ),
    "state-to-deployment": (
        [with_claim(live("StatefulSet", ORDERS, 2), CLAIM)],
        pipelines(state={"enabled": False}),
        [
            f"it runs as StatefulSet/{ORDERS} and these values make it a Deployment"
            " (staticMembership and state.enabled are false)",
            f"state volume claims (state-{ORDERS}-<ordinal>) stay until you delete them",
            "allowKindChange",
        ],
    ),
    "add-state-to-static": (
        [live("StatefulSet", ORDERS, 2)],
        pipelines(staticMembership=True, state={"enabled": True}),
        [
            f"pipelines[orders].state.enabled: StatefulSet/{ORDERS} runs without a state volume",
            "refuses any change of a StatefulSet's volumeClaimTemplates",
            f"kubectl -n {NAMESPACE} delete statefulset {ORDERS} --cascade=orphan",
        ],
    ),
    "drop-state-from-static": (
        [with_claim(live("StatefulSet", ORDERS, 2), CLAIM)],
        pipelines(staticMembership=True, state={"enabled": False}),
        [f"pipelines[orders].state.enabled: StatefulSet/{ORDERS} has a state volume per pod"],
    ),
    "size": (
        [with_claim(live("StatefulSet", ORDERS, 2), CLAIM)],
        pipelines(state={"enabled": True, "size": "20Gi"}),
        [
            f"pipelines[orders].state.size: StatefulSet/{ORDERS}'s volume claims were made"
            " with 10Gi, not 20Gi",
            "Keep size: 10Gi",
            "--cascade=orphan",
        ],
    ),
    "storage-class-set": (
        [with_claim(live("StatefulSet", ORDERS, 2), CLAIM)],
        pipelines(state={"enabled": True, "storageClassName": "fast-ssd"}),
        [
            "pipelines[orders].state.storageClassName:",
            'use the cluster default (""), not "fast-ssd"',
        ],
    ),
    "storage-class-cleared": (
        [with_claim(live("StatefulSet", ORDERS, 2), {**CLAIM, "storageClassName": "fast-ssd"})],
        pipelines(state={"enabled": True}),
        ['use "fast-ssd", not the cluster default ("")', 'Keep storageClassName: "fast-ssd"'],
    ),
    "access-modes": (
        [with_claim(live("StatefulSet", ORDERS, 2), CLAIM)],
        pipelines(state={"enabled": True, "accessModes": ["ReadWriteOncePod"]}),
        ["pipelines[orders].state.accessModes:", 'use ["ReadWriteOnce"], not ["ReadWriteOncePod"]'],
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_upgrade_the_live_statefulset_cannot_take_is_refused_at_render(
    helm: Helm, tmp_path: Path, case: str
) -> None:
    objects, values, fragments = REFUSED[case]
    with pytest.raises(HelmError) as refused:
        render(helm, values, chart=chart_with_live_objects(tmp_path, objects))
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_an_unchanged_stateful_pipeline_upgrades(helm: Helm, tmp_path: Path) -> None:
    # The API server returns 10240Mi as 10Gi and adds volumeMode/status: no change.
    claim = {**CLAIM, "storageClassName": "fast-ssd"}
    chart = chart_with_live_objects(tmp_path, [with_claim(live("StatefulSet", ORDERS, 2), claim)])
    state = {"enabled": True, "size": "10240Mi", "storageClassName": "fast-ssd"}
    for values in (pipelines(state=state), pipelines(staticMembership=True, state=state)):
        (statefulset,) = render(helm, values, chart=chart).of_kind("StatefulSet")
        (template,) = statefulset["spec"]["volumeClaimTemplates"]
        assert template["spec"]["storageClassName"] == "fast-ssd"


def test_allow_kind_change_lets_a_deployment_become_stateful(helm: Helm, tmp_path: Path) -> None:
    # With KEDA the new StatefulSet starts with the Deployment's live count, not 1.
    chart = chart_with_live_objects(tmp_path, [live("Deployment", ORDERS, 3)])
    values = pipelines(
        state={"enabled": True},
        allowKindChange=True,
        autoscaling={"enabled": True, "topic": "orders"},
    )
    rendered = render(helm, values, chart=chart)
    assert not rendered.of_kind("Deployment")
    assert rendered.one("StatefulSet", ORDERS)["spec"]["replicas"] == 3
    assert rendered.one("ScaledObject", ORDERS)["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_state_claims_do_not_change_with_the_chart_version(helm: Helm, tmp_path: Path) -> None:
    """volumeClaimTemplates are immutable: a chart bump must render them unchanged."""
    state = VALUES_DIR / "state.yaml"
    claims = [
        {
            obj["metadata"]["name"]: obj["spec"]["volumeClaimTemplates"]
            for obj in render(helm, state, chart=chart_at(tmp_path, version, version)).of_kind(
                "StatefulSet"
            )
        }
        for version in ("0.1.0", "0.2.0")
    ]
    assert claims[0] == claims[1]
    assert len(claims[0]) == 2
