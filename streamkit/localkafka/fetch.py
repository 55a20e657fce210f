"""Fetching the pinned Kafka broker jars into the user cache, once.

Kafka is fetched as plain Maven artifacts rather than as the release tarball:
Maven already knows the mirrors, verifies checksums and keeps a local
repository, so a second project on the same machine downloads nothing. A tiny
generated ``pom.xml`` lists the broker plus a log4j2 binding, and
``mvn dependency:copy-dependencies`` flattens the runtime classpath into one
``libs`` directory (about 43 MB for Kafka 4.1.1).

The cache layout::

    <cache root>/kafka/<version>/libs/*.jar
    <cache root>/kafka/<version>/COMPLETE      marker: written last, inside the temp dir

A fetch runs in a temporary sibling directory and is renamed into place only
after Maven succeeded and the marker is written, so an interrupted fetch (Ctrl-C,
lost network) never leaves a half-filled cache that would later fail at class
loading time. Two processes fetching at once (pytest-xdist workers) both
download, the first rename wins and the loser throws its copy away.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamkit.errors import LocalKafkaError

KAFKA_VERSION = "4.1.1"
"""The Kafka version streamkit tests against and runs locally."""

SCALA_VERSION = "2.13"
"""Kafka 4 only ships for Scala 2.13; the artifact is ``kafka_2.13``."""

LOG4J_VERSION = "2.24.3"
"""log4j2 binding for the broker's slf4j 1.x logging, so its logs go to one file."""

MIN_JAVA_MAJOR = 17
"""Kafka 4 brokers need Java 17 or newer."""

CACHE_ENV_VAR = "STREAMKIT_CACHE_DIR"
COMPLETE_MARKER = "COMPLETE"

# A cold Maven repository downloads ~43 MB; ten minutes covers slow links
# without letting a hung proxy block a CI job forever.
_MVN_TIMEOUT_S = 600.0


def cache_root() -> Path:
    """Return the streamkit cache directory.

    ``$STREAMKIT_CACHE_DIR`` wins so CI can point the cache at a persisted
    volume; otherwise ``$XDG_CACHE_HOME/streamkit`` or ``~/.cache/streamkit``.
    """
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "streamkit"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Return the cache directory of one Kafka version (it may not exist yet)."""
    return cache_root() / "kafka" / version


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    """Return the directory holding every jar of the broker's classpath."""
    return kafka_home(version) / "libs"


def is_fetched(version: str = KAFKA_VERSION) -> bool:
    """Tell whether a complete copy of ``version`` is in the cache."""
    return (kafka_home(version) / COMPLETE_MARKER).is_file()


def render_pom(version: str = KAFKA_VERSION) -> str:
    """Return a ``pom.xml`` whose runtime dependencies are the broker's classpath.

    Packaging is ``pom`` so Maven builds nothing; the project exists only to
    drive ``dependency:copy-dependencies``.
    """
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.streamkit</groupId>
  <artifactId>streamkit-localkafka</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def java_executable() -> str:
    """Return the ``java`` to run, preferring ``$JAVA_HOME/bin/java``.

    Raises:
        LocalKafkaError: No Java is installed, or it is older than 17.

    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else None
    java = candidate if candidate and os.access(candidate, os.X_OK) else shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            f"java is needed to run the local Kafka broker; install a JDK {MIN_JAVA_MAJOR}+ "
            "(e.g. `apt-get install openjdk-17-jre-headless` or `brew install openjdk@17`)"
        )
    major = _java_major(java)
    if major is not None and major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer"
        )
    return java


def _java_major(java: str) -> int | None:
    """Parse the major version from ``java -version`` (printed on stderr)."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # 'openjdk version "17.0.15"' or, before Java 9, 'java version "1.8.0_402"'.
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Download the broker jars of ``version`` into the cache unless already there.

    Idempotent and cheap when the cache is complete (one ``stat``).

    Returns:
        The ``libs`` directory to put on the classpath.

    Raises:
        LocalKafkaError: Maven or Java is missing, or Maven failed (the error
            carries the tail of Maven's output).

    """
    home = kafka_home(version)
    if is_fetched(version):
        return home / "libs"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"Maven (mvn) is needed once to fetch the Kafka {version} jars; install it "
            "(e.g. `apt-get install maven` or `brew install maven`), then run "
            "`python -m streamkit.localkafka fetch`"
        )
    java_executable()  # Maven needs Java too; fail with the clearer message first.
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-fetch-", dir=home.parent))
    try:
        _run_maven(mvn, staging, version)
        _publish(staging, home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home / "libs"


def _run_maven(mvn: str, staging: Path, version: str) -> None:
    pom = staging / "pom.xml"
    pom.write_text(render_pom(version), encoding="utf-8")
    libs = staging / "libs"
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_MVN_TIMEOUT_S,
            check=False,
            cwd=staging,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(
            f"mvn did not finish fetching Kafka {version} within {_MVN_TIMEOUT_S:.0f}s"
        ) from exc
    broker_jar = libs / f"kafka_{SCALA_VERSION}-{version}.jar"
    if done.returncode != 0 or not broker_jar.is_file():
        output = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(output[-30:]) or "(no output)"
        raise LocalKafkaError(
            f"mvn failed to fetch Kafka {version} (exit {done.returncode}):\n{tail}"
        )
    jars = sorted(p.name for p in libs.glob("*.jar"))
    (staging / COMPLETE_MARKER).write_text(
        f"kafka {version}\n{len(jars)} jars\n" + "\n".join(jars) + "\n", encoding="utf-8"
    )


def _publish(staging: Path, home: Path) -> None:
    """Move a finished fetch into place; a concurrent winner's copy is kept."""
    if home.exists() and not (home / COMPLETE_MARKER).is_file():
        # Left by a streamkit older than the staging scheme, or by hand: unusable.
        shutil.rmtree(home, ignore_errors=True)
    try:
        staging.rename(home)
    except OSError as exc:
        if not (home / COMPLETE_MARKER).is_file():
            raise LocalKafkaError(f"could not move the fetched jars into {home}: {exc}") from exc
