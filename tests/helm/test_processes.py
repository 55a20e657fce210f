"""Several worker processes per pod (``worker.processes``, ``pipelines[].processes``).

``STREAMKIT_PROCESSES`` above one makes the container's main process a
supervisor of that many workers, each a member of the pipeline's consumer
group. So the chart renders the setting only when it is given (an unset
value changes no pod spec), refuses what the worker would refuse at start,
counts members instead of pods against the partitions (replicas, KEDA's
maxReplicaCount), refuses ``auto`` where it would mean every core of the node,
and keeps the pod's grace period past the supervisor's own kill deadline.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RELEASE, VALUES_DIR, Helm, Obj, Rendered

FULLNAME = f"{RELEASE}-streamkit"
PROCESSES = VALUES_DIR / "processes.yaml"
BACKFILL = VALUES_DIR / "backfill.yaml"
PIPELINE: dict[str, Any] = {
    "name": "orders", "module": "pipelines.orders:app", "partitions": 8, "replicas": 2,
}  # fmt: skip
LIMITED = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
SUPERVISOR_KILL_AFTER_S = 5  # streamkit.processes.supervisor: past shutdown_timeout


def workloads(rendered: Rendered) -> list[Obj]:
    return rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")


def env_of(workload: Obj) -> dict[str, Obj]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {entry["name"]: entry for entry in container["env"]}


def processes_of(workload: Obj) -> str | None:
    entry = env_of(workload).get("STREAMKIT_PROCESSES")
    if entry is None:
        return None
    assert set(entry) == {"name", "value"}
    value = entry["value"]
    assert isinstance(value, str), "env values are strings"
    return value


def workload(rendered: Rendered, name: str) -> Obj:
    (match,) = [w for w in workloads(rendered) if w["metadata"]["name"] == f"{FULLNAME}-{name}"]
    return match


# --- the env var -------------------------------------------------------------


def test_unset_renders_no_env(helm: Helm) -> None:
    # The default changes no pod spec: upgrading the chart rolls no pod.
    rendered = helm.template(BACKFILL)
    assert workloads(rendered) and rendered.of_kind("Job")
    for obj in [*workloads(rendered), *rendered.of_kind("Job")]:
        assert processes_of(obj) is None


@pytest.mark.parametrize(("given", "rendered"), [(2, "2"), ("3", "3"), (1, "1")])
def test_the_worker_value_reaches_every_pipeline(helm: Helm, given: object, rendered: str) -> None:
    values = {
        "worker": {"processes": given},
        "pipelines": [PIPELINE, {**PIPELINE, "name": "payments", "staticMembership": True}],
    }
    result = helm.template(values)
    assert {w["kind"] for w in workloads(result)} == {"Deployment", "StatefulSet"}
    for obj in workloads(result):
        assert processes_of(obj) == rendered


def test_a_pipeline_value_overrides_the_worker_value(helm: Helm) -> None:
    rendered = helm.template(PROCESSES)
    assert processes_of(workload(rendered, "orders")) == "2"  # worker.processes
    assert processes_of(workload(rendered, "payments")) == "4"
    assert processes_of(workload(rendered, "audit")) == "auto"
    assert processes_of(workload(rendered, "alerts")) == "1"  # back to one, explicitly


def test_a_pipeline_value_without_a_worker_value(helm: Helm) -> None:
    values = {"pipelines": [{**PIPELINE, "processes": 4}, {**PIPELINE, "name": "payments"}]}
    rendered = helm.template(values)
    assert processes_of(workload(rendered, "orders")) == "4"
    assert processes_of(workload(rendered, "payments")) is None


def test_an_empty_pipeline_value_falls_back_to_the_worker_value(helm: Helm) -> None:
    values = {"worker": {"processes": 2}, "pipelines": [{**PIPELINE, "processes": ""}]}
    assert processes_of(workload(helm.template(values), "orders")) == "2"


def test_backfills_run_one_process(helm: Helm) -> None:
    # `streamkit replay` is one process: the setting is for `streamkit run`.
    rendered = helm.template(PROCESSES)
    (job,) = rendered.of_kind("Job")
    assert processes_of(job) is None


def test_static_members_keep_the_pod_name_for_the_supervisor_to_suffix(helm: Helm) -> None:
    # The supervisor makes child i "<pod name>-<i>"; the chart still passes the pod name.
    payments = workload(helm.template(PROCESSES), "payments")
    assert payments["kind"] == "StatefulSet"
    assert env_of(payments)["STREAMKIT_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }


# --- bad values --------------------------------------------------------------

BAD = [0, -1, "0", "-2", "four", "Auto", " 2", "2 ", "1.5", "02"]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_bad_worker_value_is_refused_by_name(helm: Helm, value: object) -> None:
    error = helm.template_error({"worker": {"processes": value}})
    assert f'worker.processes: "{value}" is not a number of processes' in error
    assert 'use a positive integer (e.g. 4) or "auto"' in error


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_bad_pipeline_value_is_refused_by_name(helm: Helm, value: object) -> None:
    error = helm.template_error({"pipelines": [{**PIPELINE, "processes": value}]})
    assert f'pipelines[orders].processes: "{value}" is not a number of processes' in error


def test_a_bad_worker_value_is_refused_even_where_every_pipeline_overrides_it(
    helm: Helm,
) -> None:
    values = {"worker": {"processes": "many"}, "pipelines": [{**PIPELINE, "processes": 2}]}
    assert 'worker.processes: "many" is not a number of processes' in helm.template_error(values)


@pytest.mark.parametrize("value", [2.5, True, [2]], ids=repr)
def test_the_schema_refuses_other_types(helm: Helm, value: object) -> None:
    error = helm.template_error({"worker": {"processes": value}})
    assert "values don't meet the specifications of the schema" in error
    assert "at '/worker/processes'" in error
    error = helm.template_error({"pipelines": [{**PIPELINE, "processes": value}]})
    assert "at '/pipelines/0/processes'" in error


# --- auto ---------------------------------------------------------------------


def test_auto_without_a_cpu_limit_is_refused(helm: Helm) -> None:
    # No quota: the usable cores are the node's, each process with its own memory.
    error = helm.template_error({"pipelines": [{**PIPELINE, "processes": "auto"}]})
    assert 'pipelines[orders]: processes "auto" starts one process per usable core' in error
    assert "without a CPU limit" in error
    assert "set resources.limits.cpu" in error


def test_auto_with_a_cpu_limit_renders(helm: Helm) -> None:
    own = {"pipelines": [{**PIPELINE, "processes": "auto", "resources": LIMITED}]}
    assert processes_of(workload(helm.template(own), "orders")) == "auto"
    default = {
        "worker": {"processes": "auto"},
        "defaultResources": LIMITED,
        "pipelines": [PIPELINE],
    }
    assert processes_of(workload(helm.template(default), "orders")) == "auto"


# --- members against partitions ----------------------------------------------


def test_replicas_times_processes_may_not_exceed_partitions(helm: Helm) -> None:
    over = {"pipelines": [{**PIPELINE, "replicas": 3, "processes": 3}]}  # 9 > 8
    error = helm.template_error(over)
    assert "pipelines[orders]: replicas * processes (3 * 3 = 9) exceeds partitions (8)" in error
    worker_level = {"worker": {"processes": 5}, "pipelines": [PIPELINE]}  # 2 * 5 = 10 > 8
    assert "replicas * processes (2 * 5 = 10) exceeds partitions (8)" in helm.template_error(
        worker_level
    )
    exact = {"pipelines": [{**PIPELINE, "replicas": 2, "processes": 4}]}  # 8 = 8
    assert processes_of(workload(helm.template(exact), "orders")) == "4"


def test_one_pod_of_more_processes_than_partitions_is_refused(helm: Helm) -> None:
    for replicas in (0, 1):
        values = {"pipelines": [{**PIPELINE, "replicas": replicas, "processes": 9}]}
        error = helm.template_error(values)
        assert "pipelines[orders]: processes (9) exceeds partitions (8)" in error


def test_replicas_alone_over_partitions_keeps_its_message(helm: Helm) -> None:
    values = {"pipelines": [{**PIPELINE, "replicas": 9, "processes": 1}]}
    assert "pipelines[orders]: replicas (9) exceeds partitions (8)" in helm.template_error(values)


def test_auto_is_not_counted_against_partitions(helm: Helm) -> None:
    # The count is only known in the pod; docs/deploy.md asks for the arithmetic.
    values = {"pipelines": [{**PIPELINE, "replicas": 8, "processes": "auto", "resources": LIMITED}]}
    assert processes_of(workload(helm.template(values), "orders")) == "auto"


# --- KEDA counts pods ----------------------------------------------------------


def keda(**pipeline: Any) -> dict[str, Any]:
    autoscaling = {"enabled": True, "topic": "orders", **pipeline.pop("autoscaling", {})}
    entry = {**PIPELINE, "groupId": "orders", "partitions": 12, **pipeline}
    return {"pipelines": [{**entry, "autoscaling": autoscaling}]}


def max_replicas(helm: Helm, values: dict[str, Any]) -> int:
    scaled = helm.template(values).one("ScaledObject", f"{FULLNAME}-orders")
    count: int = scaled["spec"]["maxReplicaCount"]
    return count


@pytest.mark.parametrize(
    ("processes", "given", "expected"),
    [
        (None, None, 12),  # no processes: the partition count
        (3, None, 4),  # the default is partitions / processes
        (3, 20, 4),  # and so is the cap
        (5, None, 2),  # rounded down: a third pod would have 3 idle members
        (3, 2, 2),  # a lower maxReplicas stands
        (12, None, 1),
    ],
)
def test_keda_caps_pods_at_partitions_over_processes(
    helm: Helm, processes: int | None, given: int | None, expected: int
) -> None:
    values = keda(
        **({"processes": processes} if processes else {}),
        autoscaling={"maxReplicas": given} if given else {},
    )
    assert max_replicas(helm, values) == expected


def test_keda_ignores_replicas_times_processes(helm: Helm) -> None:
    # KEDA owns the count: the values' replicas are not checked against partitions.
    assert max_replicas(helm, keda(replicas=12, processes=3)) == 4


def test_keda_with_auto_caps_at_the_partitions(helm: Helm) -> None:
    assert max_replicas(helm, keda(processes="auto", resources=LIMITED)) == 12


def test_keda_min_replicas_over_the_cap_names_the_processes(helm: Helm) -> None:
    error = helm.template_error(keda(processes=4, autoscaling={"minReplicas": 4}))
    assert (
        "pipelines[orders].autoscaling: minReplicas (4) exceeds the effective maxReplicas "
        "(3 = min(maxReplicas, partitions / processes = 12 / 4))"
    ) in error


def test_the_values_file_caps_keda_at_partitions_over_processes(helm: Helm) -> None:
    scaled = helm.template(PROCESSES).one("ScaledObject", f"{FULLNAME}-payments")
    assert scaled["spec"]["maxReplicaCount"] == 3  # maxReplicas 10, 12 partitions / 4


# --- shutdown -------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "margin"), [(30, 15), (120, 15), (30, 5)])
def test_the_grace_period_outlasts_the_supervisors_kill(
    helm: Helm, timeout: int, margin: int
) -> None:
    # The supervisor kills children still running 5 s past shutdown_timeout;
    # the kubelet's SIGKILL must not come before that.
    values = {
        "worker": {
            "processes": 2,
            "shutdownTimeoutSeconds": timeout,
            "shutdownMarginSeconds": margin,
        },
        "pipelines": [PIPELINE],
    }
    orders = workload(helm.template(values), "orders")
    grace = orders["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == timeout + margin
    assert grace >= timeout + SUPERVISOR_KILL_AFTER_S
    assert env_of(orders)["STREAMKIT_SHUTDOWN_TIMEOUT"]["value"] == str(timeout)
