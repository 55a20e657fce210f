"""``streamkit run``: validate, prepare and run an app's worker in this process.

Everything that can fail without a broker (settings, declarations, client
properties) fails before anything connects; then the worker waits for the
broker, creates the declared topics if asked to, and runs until stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from streamkit.app import App
from streamkit.backends.kafka import create_admin, ensure_topics, wait_for_broker
from streamkit.errors import ConfigError
from streamkit.logs import configure_logging
from streamkit.runtime.changelogs import ensure_changelogs
from streamkit.runtime.worker import Worker
from streamkit.topics import Topic


def run_app(app: App, agents: Sequence[str] = (), **overrides: Any) -> int:
    """Validate, prepare and run ``app``; the body of ``streamkit run``.

    Returns:
        The process exit code: 0 after a clean stop, 1 after a failure.

    Raises:
        ConfigError: A setting is invalid (before anything connects).
        DeclarationError: The app's declarations do not fit together.
    """
    config = app.config(**overrides)
    if config.processes != 1:
        raise ConfigError(
            "processes",
            f"{config.processes!r}: this runs one worker in this process; "
            f"`streamkit run MODULE:APP --processes {config.processes}` starts several",
        )
    configure_logging(config.log_format, config.log_level)
    structlog.contextvars.bind_contextvars(app=app.name, group=config.group_id)
    selected = app.select(agents)
    # Building the worker constructs every client, which is where librdkafka
    # validates pass-through properties: all of that fails before any I/O.
    worker = Worker(app, selected, config)
    if config.http_port is not None:
        # A higher layer, imported only when asked for (as App.run imports the
        # runtime). It listens before the broker wait, so probes answer
        # "live, not ready" while the worker waits for Kafka.
        from streamkit.observability import serve

        serve(worker, config)
    admin = create_admin(config)
    wait_for_broker(admin, config.brokers)
    if config.create_topics:
        wanted = {a.source.name: a.source for a in selected}
        for agent in selected:
            wanted.update({t.name: t for t in app.emit_targets(agent)})
            wanted.update({t.name: t for t in app.failure_topics(agent)})
            wanted.update({t.name: t for t in app.delay_topics(agent)})
        if app.timers:
            wanted[app.timers_topic.name] = app.timers_topic
            for timer in app.timers.values():
                wanted.update({t.name: t for t in app.resolve_emits(timer.name, timer.emits)})
        sized = sized_like_sources(admin, wanted, app.repartitions)
        ensure_topics(admin, sized, replication=config.replication)
    ensure_changelogs(admin, selected, config.create_topics, config.replication)
    return asyncio.run(worker.run())


def sized_like_sources(
    admin: Any, wanted: dict[str, Topic], repartitions: Mapping[str, Topic]
) -> list[Topic]:
    """``wanted``, with each repartition topic of no declared size as big as its source.

    A re-keyed stream keeps its parallelism: an undeclared source's actual
    partition count, read from the broker, not the broker's default.
    """
    undeclared = [n for n in wanted if n in repartitions and wanted[n].partitions is None]
    if not undeclared:
        return list(wanted.values())
    topics = admin.list_topics(timeout=30).topics
    out = dict(wanted)
    for name in undeclared:
        found = topics.get(repartitions[name].name)
        if found is not None:
            out[name] = dataclasses.replace(wanted[name], partitions=len(found.partitions))
    return list(out.values())
