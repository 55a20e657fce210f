"""Windowed aggregations: tumbling, hopping, sliding and session windows over keyed streams.

Declared with :meth:`streamkit.App.window`; the pieces:

* :mod:`~streamkit.windows.kinds`: which windows a record belongs to;
* :mod:`~streamkit.windows.aggregations`: what a window computes;
* :mod:`~streamkit.windows.declaration`: the declaration, and when a window closes;
* :mod:`~streamkit.windows.logic`: each kind's rules over one key's stored windows;
* :mod:`~streamkit.windows.slice`: one partition's stream time and close index;
* :mod:`~streamkit.windows.runner`: the compiled agent and its idle hook.
"""

from streamkit.windows.aggregations import (
    Aggregation,
    aggregate,
    count,
    max_of,
    min_of,
    reduce,
    sum_of,
)
from streamkit.windows.declaration import Windowed
from streamkit.windows.kinds import Hopping, Session, Sliding, Tumbling, Window

__all__ = [
    "Aggregation",
    "Hopping",
    "Session",
    "Sliding",
    "Tumbling",
    "Window",
    "Windowed",
    "aggregate",
    "count",
    "max_of",
    "min_of",
    "reduce",
    "sum_of",
]
