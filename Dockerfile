# A pipeline image: streamkit plus this repository's pipelines, run by the
# Helm chart in helm/streamkit. Build from the repository root:
#   docker build -t streamkit-pipelines:0.1.0 .
#   docker build --build-arg STREAMKIT_EXTRAS=registry ...   # with Schema Registry support
FROM python:3.11-slim

# Optional extras of the streamkit package, comma-separated (e.g. "registry").
ARG STREAMKIT_EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    # The root filesystem is read-only in the cluster: never try to write .pyc.
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Pipelines are imported as `pipelines.<name>`; schemas/ is found from the working directory.
    PYTHONPATH=/app \
    # Anything that writes under $HOME lands on the /tmp emptyDir.
    HOME=/tmp

# A fixed numeric uid/gid: the chart's runAsUser/fsGroup (10001) must match,
# and runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 streamkit \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin streamkit

WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamkit ./streamkit
# pip byte-compiles what it installs; pipelines are compiled below.
RUN pip install ".${STREAMKIT_EXTRAS:+[$STREAMKIT_EXTRAS]}" && rm -rf /src

WORKDIR /app
COPY pipelines ./pipelines
COPY schemas ./schemas
RUN python -m compileall -q pipelines

USER 10001:10001
ENTRYPOINT ["streamkit"]
CMD ["--help"]
