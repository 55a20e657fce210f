"""How a worker's stop is told: one log line, and the process exit code.

Split from :mod:`streamkit.runtime.worker` (kept under 600 lines). The
worker decides *that* it stopped and why; this module decides what an
operator reads about it.
"""

from __future__ import annotations

import structlog

from streamkit.errors import RecordError, StreamkitError

log = structlog.get_logger("streamkit.worker")


def report_stop(failure: BaseException | None, group: str, records: int) -> int:
    """Log why the worker stopped; return the exit code (0 clean, 1 after a failure)."""
    if isinstance(failure, RecordError):
        log.error(
            "stopped: a record failed; its offset stays uncommitted",
            error=str(failure),
            topic=failure.topic,
            partition=failure.partition,
            offset=failure.offset,
        )
        return 1
    if isinstance(failure, StreamkitError):
        # Our own errors say what happened and what to do in their message
        # (a tripped dead-letter limit, a fatal client error): one line, with
        # the traceback only at debug level.
        log.error("stopped after an error", error=str(failure), kind=type(failure).__name__)
        log.debug("traceback of the error that stopped the worker", exc_info=failure)
        return 1
    if failure is not None:
        log.error("stopped after an error", error=repr(failure), exc_info=failure)
        return 1
    log.info("stopped", group=group, records=records)
    return 0
