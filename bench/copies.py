"""Run N copies of one contender's command as one contender: a peer at N processes.

Usage: python -m bench.copies N ARGV...

Quix Streams and faust have no process supervisor of their own; their
users run one process per core, in one consumer group, which is what this
does, so ``bench.run`` can put them next to ``streamkit run --processes N``.
SIGTERM is forwarded to every copy; the exit status is the first non-zero
one, else 0. ``bench.run`` samples the CPU and peak RSS of this process and
its children together.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType


def main() -> int:
    count, argv = int(sys.argv[1]), sys.argv[2:]
    copies = [subprocess.Popen(argv) for _ in range(count)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for copy in copies:
            if copy.poll() is None:
                copy.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    codes = [copy.wait() for copy in copies]
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
