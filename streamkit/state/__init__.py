"""Tables: per-key state for agents, kept in local stores and changelog topics.

The layering, lowest first: :mod:`~streamkit.state.store` (the local store
interface) and :mod:`~streamkit.state.stores` (its backends);
:mod:`~streamkit.state.table` (the declaration agents use);
:mod:`~streamkit.state.partition` (one table's slice of one partition);
:mod:`~streamkit.state.changelog` (changelog records) and
:mod:`~streamkit.state.restore` (reading them back). The runtime ties them to
partitions (:mod:`streamkit.runtime.tables`) and to the checkpoint order
(:mod:`streamkit.runtime.checkpoint`).
"""
