from __future__ import annotations

import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streamkit.errors import LocalKafkaError
from streamkit.localkafka.fetch import (
    COMPLETE_MARKER,
    KAFKA_VERSION,
    cache_root,
    fetch_jars,
    is_fetched,
    java_executable,
    kafka_home,
    libs_dir,
    render_pom,
)

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

# Stands in for mvn: records each call, then copies "jars" into the
# -DoutputDirectory it was given, or fails when FAKE_MVN_FAIL is set.
FAKE_MVN = """\
import os, sys
with open(os.environ["FAKE_MVN_CALLS"], "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_MVN_FAIL"):
    print("[ERROR] Could not resolve dependencies: no network")
    sys.exit(1)
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory="))
os.makedirs(out)
for name in ("kafka_2.13-{version}.jar", "kafka-clients-{version}.jar"):
    open(os.path.join(out, name), "w").close()
"""

FAKE_JAVA = """\
import sys
print('openjdk version "{version}" 2025-04-15', file=sys.stderr)
"""


def _script(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STREAMKIT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the fake mvn and a fake Java 17."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir, "mvn", FAKE_MVN.replace("{version}", KAFKA_VERSION))
    _script(bin_dir, "java", FAKE_JAVA.replace("{version}", "17.0.15"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("FAKE_MVN_CALLS", str(tmp_path / "mvn-calls"))
    return bin_dir


def test_pom_asks_for_the_pinned_broker_and_a_log4j2_binding() -> None:
    root = ET.fromstring(render_pom("4.1.1"))
    assert root.findtext("m:packaging", namespaces=POM_NS) == "pom"
    deps = {
        (
            d.findtext("m:groupId", namespaces=POM_NS),
            d.findtext("m:artifactId", namespaces=POM_NS),
        ): d.findtext("m:version", namespaces=POM_NS)
        for d in root.iterfind("m:dependencies/m:dependency", POM_NS)
    }
    assert deps[("org.apache.kafka", "kafka_2.13")] == "4.1.1"
    assert ("org.apache.logging.log4j", "log4j-slf4j-impl") in deps


def test_cache_root_prefers_env_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STREAMKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "streamkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "streamkit"
    monkeypatch.setenv("STREAMKIT_CACHE_DIR", str(tmp_path / "sk"))
    assert cache_root() == tmp_path / "sk"
    assert kafka_home("9.9.9") == tmp_path / "sk" / "kafka" / "9.9.9"
    assert libs_dir("9.9.9") == tmp_path / "sk" / "kafka" / "9.9.9" / "libs"


def test_fetch_publishes_a_complete_cache_once(cache: Path, tools: Path, tmp_path: Path) -> None:
    libs = fetch_jars()
    assert libs == cache / "kafka" / KAFKA_VERSION / "libs"
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert is_fetched()
    assert "2 jars" in (libs.parent / COMPLETE_MARKER).read_text()
    # Nothing but the published version is left next to it.
    assert [p.name for p in (cache / "kafka").iterdir()] == [KAFKA_VERSION]

    assert fetch_jars() == libs
    calls = (tmp_path / "mvn-calls").read_text().splitlines()
    assert len(calls) == 1
    assert "dependency:copy-dependencies" in calls[0]
    assert "-DincludeScope=runtime" in calls[0]


def test_failed_fetch_leaves_no_cache_and_reports_maven_output(
    cache: Path, tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MVN_FAIL", "1")
    with pytest.raises(LocalKafkaError, match="no network"):
        fetch_jars()
    assert not is_fetched()
    assert list((cache / "kafka").iterdir()) == []


def test_fetch_replaces_a_cache_dir_without_marker(cache: Path, tools: Path) -> None:
    half = cache / "kafka" / KAFKA_VERSION / "libs"
    half.mkdir(parents=True)
    (half / "truncated.jar").write_text("")
    libs = fetch_jars()
    assert not (libs / "truncated.jar").exists()
    assert is_fetched()


def test_missing_maven_names_what_to_install(cache: Path, tools: Path, tmp_path: Path) -> None:
    (tools / "mvn").unlink()
    with pytest.raises(LocalKafkaError, match=r"Maven \(mvn\).*install"):
        fetch_jars()


def test_missing_java_names_what_to_install(tools: Path) -> None:
    (tools / "java").unlink()
    with pytest.raises(LocalKafkaError, match=r"java is needed.*JDK 17"):
        java_executable()


@pytest.mark.parametrize("version", ["11.0.2", "1.8.0_402"])
def test_old_java_is_rejected(tools: Path, version: str) -> None:
    _script(tools, "java", FAKE_JAVA.replace("{version}", version))
    with pytest.raises(LocalKafkaError, match="needs Java 17"):
        java_executable()


def test_java_home_wins_over_path(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_bin = tmp_path / "jdk" / "bin"
    home_bin.mkdir(parents=True)
    _script(home_bin, "java", FAKE_JAVA.replace("{version}", "21.0.1"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert java_executable() == str(home_bin / "java")
