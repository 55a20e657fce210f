"""Where a bench's numbers came from: the opening words of its markdown report.

A run takes minutes to hours while others may commit: the report names the
commit it started on and says so when the code the workers ran (the tree of
``streamkit/``, ``code`` and ``code_end`` in the result) changed under it.
"""

from __future__ import annotations

from typing import Any


def provenance(r: dict[str, Any]) -> str:
    """``"<started>, commit <commit>"``, and a bold warning if ``streamkit/`` changed meanwhile."""
    opening = f"{r['started']}, commit {r['commit']}"
    if r.get("code_end") == r.get("code"):
        return opening
    return opening + f" (**{r['code_end']} at the end: streamkit/ changed during the run**)"
