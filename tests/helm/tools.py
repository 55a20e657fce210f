"""Pinned tools for the chart tests, built from the Go module proxy into a user cache.

- ``helm`` and ``kubeconform`` are built with ``go install`` into ``~/.cache/streamkit/tools/bin``.
- Kubernetes JSON Schemas for kubeconform are generated offline (see
  ``k8s_schemas``) from modules the proxy serves: ``k8s.io/kubernetes`` (its
  ``api/openapi-spec/swagger.json``) at the oldest and the newest Kubernetes
  version the chart supports, plus the KEDA and prometheus-operator CRDs.

Everything Go downloads or builds stays under ``~/.cache/streamkit/tools/go``
(``$STREAMKIT_CACHE_DIR/tools/go``) so a fresh clone needs only ``go`` and
network access to the proxy, and removing that directory resets it. A stamp
file next to each artifact records the pinned version it was built from, so
bumping a pin rebuilds. Run ``python -m tests.helm.tools`` to build
everything ahead of the tests (``make helm``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import k8s_schemas

ROOT = Path(__file__).resolve().parents[2]
# A per-user cache shared by every clone (the same root as the Kafka jars):
# building helm takes ~4 minutes on 2 cores, a fresh clone should not pay it again.
_ROOT_CACHE = os.environ.get("STREAMKIT_CACHE_DIR") or Path.home() / ".cache" / "streamkit"
CACHE = Path(_ROOT_CACHE) / "tools"
BIN = CACHE / "bin"
SCHEMAS = CACHE / "k8s-schemas"

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"
# helm's Makefile stamps these with -ldflags; a plain `go install` leaves
# helm believing the cluster is Kubernetes 1.20 (`helm template` then refuses
# the chart's kubeVersion). 1.37 follows from the k8s.io/client-go v0.37 that
# helm v3.22.0 builds with, exactly as the Makefile derives it.
_HELM_KUBE_MINOR = "37"
_HELM_LDFLAGS = " ".join(
    [
        "-s -w",
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={_HELM_KUBE_MINOR}",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={_HELM_KUBE_MINOR}",
    ]
)
KUBECONFORM_MODULE = "github.com/yannh/kubeconform"
KUBECONFORM_VERSION = "v0.8.0"
_KUBECONFORM_LDFLAGS = f"-s -w -X main.version={KUBECONFORM_VERSION}"
# The chart's kubeVersion floor (Chart.yaml) and the newest release; rendered
# objects must be valid on both.
KUBERNETES_VERSIONS = ("v1.27.16", "v1.37.2")
KEDA_VERSION = "v2.21.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"

_CRDS = (
    (f"github.com/kedacore/keda/v2@{KEDA_VERSION}", "config/crd/bases/keda.sh_scaledobjects.yaml"),
    (
        f"github.com/kedacore/keda/v2@{KEDA_VERSION}",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    ),
    (
        f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    ),
)


class GoMissingError(RuntimeError):
    """A tool has to be built and there is no ``go`` on PATH."""


@dataclass(frozen=True)
class Tools:
    """Paths of the built tools."""

    helm: Path
    kubeconform: Path
    schema_dirs: tuple[Path, ...]


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOMODCACHE"] = str(CACHE / "go" / "mod")
    env["GOCACHE"] = str(CACHE / "go" / "build")
    # Without -modcacherw the module cache is read-only and `rm -rf .cache` fails.
    env["GOFLAGS"] = " ".join(filter(None, [env.get("GOFLAGS", ""), "-modcacherw"]))
    return env


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoMissingError("`go` is not on PATH; it is needed once to build helm and kubeconform")
    return go


def _stamp(artifact: Path) -> Path:
    return artifact.with_name(f".{artifact.name}.version")


def _is_current(artifact: Path, version: str) -> bool:
    stamp = _stamp(artifact)
    return (
        artifact.exists()
        and stamp.exists()
        and stamp.read_text(encoding="utf-8").strip() == version
    )


def _log(message: str) -> None:
    print(f"[helm-tools] {message}", file=sys.stderr, flush=True)


def _install(name: str, package: str, version: str, ldflags: str) -> Path:
    target = BIN / name
    # The stamp covers the flags too, so changing them rebuilds.
    stamp = f"{version} {ldflags}"
    if _is_current(target, stamp):
        return target
    BIN.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _log(f"building {package}@{version} (the first build takes minutes)")
    # Build into a scratch GOBIN and move into place, so an interrupted build
    # never leaves a half-written binary that looks current.
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        env = _go_env() | {"GOBIN": scratch}
        subprocess.run(
            [_go(), "install", "-trimpath", f"-ldflags={ldflags}", f"{package}@{version}"],
            env=env,
            check=True,
        )
        os.replace(Path(scratch) / name, target)
    _stamp(target).write_text(stamp + "\n", encoding="utf-8")
    _log(f"built {target} in {time.monotonic() - started:.0f}s")
    return target


def _download(module_at_version: str) -> Path:
    result = subprocess.run(
        [_go(), "mod", "download", "-json", module_at_version],
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(result.stdout)
    if "Error" in info:
        raise RuntimeError(f"go mod download {module_at_version}: {info['Error']}")
    return Path(info["Dir"])


def _schemas(kubernetes_version: str) -> Path:
    key = " ".join((kubernetes_version, KEDA_VERSION, PROMETHEUS_OPERATOR_VERSION))
    target = SCHEMAS / kubernetes_version
    if _is_current(target, key):
        return target
    started = time.monotonic()
    _log(f"generating Kubernetes {kubernetes_version} JSON schemas")
    swagger = _download(f"k8s.io/kubernetes@{kubernetes_version}") / "api/openapi-spec/swagger.json"
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCHEMAS) as scratch:
        out = Path(scratch) / "schemas"
        k8s_schemas.write_builtin_schemas(swagger, out)
        definitions = k8s_schemas.load_definitions(swagger)
        for module, path in _CRDS:
            k8s_schemas.write_crd_schemas(_download(module) / path, definitions, out)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
    _stamp(target).write_text(key + "\n", encoding="utf-8")
    _log(f"generated {target} in {time.monotonic() - started:.1f}s")
    return target


def ensure_tools() -> Tools:
    """Build whatever is missing or stale; return the paths.

    Raises:
        GoMissingError: something has to be built and ``go`` is not installed.
    """
    return Tools(
        helm=_install("helm", f"{HELM_MODULE}/cmd/helm", HELM_VERSION, _HELM_LDFLAGS),
        kubeconform=_install(
            "kubeconform",
            f"{KUBECONFORM_MODULE}/cmd/kubeconform",
            KUBECONFORM_VERSION,
            _KUBECONFORM_LDFLAGS,
        ),
        schema_dirs=tuple(_schemas(version) for version in KUBERNETES_VERSIONS),
    )


def main() -> None:
    """Build the tools and print where they are."""
    tools = ensure_tools()
    print(f"helm         {tools.helm}")
    print(f"kubeconform  {tools.kubeconform}")
    for directory in tools.schema_dirs:
        print(f"schemas      {directory}")


if __name__ == "__main__":
    main()
