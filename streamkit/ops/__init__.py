"""Operator tools: they work from an app's declarations and the cluster, never run agents.

Each module computes a plain report and leaves printing to the CLI, among them:

* :mod:`streamkit.ops.lag`: committed offset, end offset and owner per
  partition of a consumer group (``streamkit lag``).
* :mod:`streamkit.ops.describe`: declared topics against the broker
  (``streamkit topics describe``).
* :mod:`streamkit.ops.topology`: the pipeline as Mermaid or Graphviz DOT
  (``streamkit graph``), pure and deterministic.
* :mod:`streamkit.ops.dlq`: dead-letter topics counted, sampled and
  redriven to their source topics (``streamkit dlq show|redrive``).
* :mod:`streamkit.ops.render`: rich tables and JSON for the reports.

Nothing here is imported by the runtime: these modules sit beside the CLI,
at the top of the layer stack.
"""
