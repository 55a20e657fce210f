"""Apps the benchmarks run as workers (``python -m streamkit run bench.apps.<name>:app``)."""
