"""Peer contenders for ``bench.run``: each runs in its own venv under bench/.venvs/."""
