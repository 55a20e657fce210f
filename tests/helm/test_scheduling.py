"""Where a pipeline's pods land: the default spread over nodes and zones."""

from __future__ import annotations

from .conftest import VALUES_DIR, Helm, Obj

SPREAD_KEYS = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]


def spread_of(workload: Obj) -> list[Obj]:
    constraints: list[Obj] = workload["spec"]["template"]["spec"].get(
        "topologySpreadConstraints", []
    )
    return constraints


def test_pipelines_spread_over_nodes_and_zones_by_default(helm: Helm) -> None:
    rendered = helm.template(VALUES_DIR / "statefulset.yaml")
    workloads = rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    assert {obj["kind"] for obj in workloads} == {"Deployment", "StatefulSet"}
    for workload in workloads:
        constraints = spread_of(workload)
        assert [c["topologyKey"] for c in constraints] == SPREAD_KEYS
        for constraint in constraints:
            # Soft: a single-zone cluster, or one node, still schedules every pod.
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert constraint["maxSkew"] == 1
            # Only this pipeline's own pods count, not the release's others.
            assert constraint["labelSelector"] == {
                "matchLabels": workload["spec"]["selector"]["matchLabels"]
            }
            # A Deployment's rollout spreads its new ReplicaSet on its own
            # (pod-template-hash); StatefulSet pods have no such label.
            expected = ["pod-template-hash"] if workload["kind"] == "Deployment" else None
            assert constraint.get("matchLabelKeys") == expected


def test_backfill_pods_are_not_spread(helm: Helm) -> None:
    (job, *_) = helm.template(VALUES_DIR / "backfill.yaml").of_kind("Job")
    assert spread_of(job) == []


def test_the_default_spread_can_be_replaced_or_turned_off(helm: Helm) -> None:
    off = helm.template({"topologySpreadConstraints": []})
    assert spread_of(off.of_kind("Deployment")[0]) == []
    own = {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"team": "data"}}}  # fmt: skip
    replaced = helm.template({"topologySpreadConstraints": [own]})
    assert spread_of(replaced.of_kind("Deployment")[0]) == [own]  # kept as given


def test_a_constraint_missing_its_required_fields_is_refused(helm: Helm) -> None:
    error = helm.template_error({"topologySpreadConstraints": [{"topologyKey": "rack"}]})
    assert "values don't meet the specifications of the schema" in error
    assert "topologySpreadConstraints/0" in error
