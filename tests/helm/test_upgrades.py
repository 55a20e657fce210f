"""What a ``helm upgrade`` changes in a running release, rendered with the real helm.

An upgrade that changes a Deployment's or StatefulSet's pod template rolls
every pod of the pipeline (one rebalance per pod); one that changes a Job's
pod template is refused by the API server (``spec.template`` is immutable)
and fails the whole upgrade. These tests render the chart before and after a
change and compare what the API server would be asked to patch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from .conftest import CHART, Helm, Obj, Rendered, Values

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
