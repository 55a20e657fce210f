"""Diagnostics behind the figures of ``bench.tables`` (not measurements of their own).

Usage:
    python -m bench.tables_diag reader [KEYS]          # RSS of the restore's changelog reader
    python -m bench.tables_diag profile [NAMES]        # cProfile of throughput workers
    python -m bench.tables_diag lost-updates [STORE [KEYS [RECORDS [HOT]]]]   # per-key outputs
    python -m bench.tables_diag memory [KEYS [KIB]]    # bench.tables' memory run, reader buffers
    python -m bench.tables_diag overlay-race           # the at-least-once overlay trim, replayed

``BENCH_BROKERS`` or a LocalKafka, as ``bench.tables`` (``overlay-race`` needs none).

* ``reader``: a KEYS-record changelog (default 5,000,000) read end to end, in
  a fresh process, by streamkit's own ``KafkaChangelogReader`` (the restore
  thread's reader: no store), once with its settings and once with its
  fetch and queue buffers cut to 8 MiB; RSS after each partition.
* ``profile``: the named contenders of ``bench.tables`` (default
  ``sk-table-sqlite-alo,sk-table-rocksdb-alo,sk-no-table-alo``) on 200,000
  records over 10,000 keys, each worker's main thread under cProfile
  (``bench.tables_timing``, ``BENCH_CPROFILE_MAIN``); prints the top
  functions by own time. Profiled runs are slower: read shares, not rates.
* ``lost-updates``: the count pipeline at least once (default rocksdb) on
  RECORDS records (default 200,000) over KEYS keys (default 10,000), or with
  HOT, every other record over HOT keys of their own (hot keys written in
  every checkpoint among many cold ones); prints the keys whose outputs are
  not 1, 2, 3... and, for the first, its changelog records with their
  ``streamkit-src`` header.
* ``overlay-race``: no broker; one ``TablePartition`` (memory store) driven
  through the at-least-once checkpoint order by hand: checkpoint 1 staged and
  waiting for its commit, a key written again, checkpoint 2 staged (its
  changelog in flight), then checkpoint 1's commit confirmed, with the
  overlay past its cache bound. Prints the next count of that key.
* ``memory``: the memory run of ``bench.tables`` (KEYS, default 5,000,000,
  rocksdb) twice: as streamkit is, and with the restore reader's buffers cut
  to KIB KiB (default 8192; ``bench.tables_timing``, ``BENCH_READER_BUFFER_KB``).
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient

from bench import tables as T
from bench.broker import bench_broker
from bench.run import output_size, reader
from streamkit.backends.kafka import ensure_topics
from streamkit.topics import Topic

N, KEYS = 200_000, 10_000


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, from the start to each partition's end."""
    consumer = reader(bootstrap, topic, committed=True, eof=True)
    out, ended = [], set()
    try:
        while len(ended) < T.PARTITIONS:
            for m in consumer.consume(10_000, timeout=0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
    finally:
        consumer.close()
    return out


def input_key(i: int, keys: int, hot: int) -> bytes:
    """Record i's key: ``k{i % keys}``; with ``hot``, every other record one of ``hot`` keys."""
    if hot and i % 2 == 0:
        return b"h%d" % (i // 2 % hot)
    return b"k%d" % (i % keys)


def count_input(
    bootstrap: str, admin: AdminClient, topic: str, n: int = N, keys: int = KEYS, hot: int = 0
) -> Counter[str]:
    ensure_topics(admin, [Topic(topic, partitions=T.PARTITIONS)])
    T.produce_all(
        bootstrap, topic, ((input_key(i, keys, hot), orjson.dumps({"id": i})) for i in range(n))
    )
    return Counter(input_key(i, keys, hot).decode() for i in range(n))


# -- reader -------------------------------------------------------------------------


def reader_child(bootstrap: str, app: str, small: bool) -> None:
    """In a fresh process: read the whole changelog with streamkit's reader; print RSS."""
    import streamkit.backends.kafka_reader as kr
    from streamkit.config import AppConfig

    if small:
        original = kr.Consumer

        def smaller(conf: dict[str, Any]) -> Any:
            conf = {
                **conf,
                "queued.max.messages.kbytes": 8192,
                "fetch.max.bytes": 8 << 20,
                "max.partition.fetch.bytes": 4 << 20,
            }
            return original(conf)

        kr.Consumer = smaller  # type: ignore[misc]
    config = AppConfig.load(app, {"brokers": bootstrap, "group_id": f"{app}-diag"})
    changelog = f"{app}.counts.changelog"
    proc = psutil.Process()
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    label = "buffers cut to 8 MiB" if small else "streamkit's reader settings"
    print(f"{label}: RSS before {proc.memory_info().rss / 2**20:.0f} MB", flush=True)
    r = kr.KafkaChangelogReader(config)
    t0, done = time.monotonic(), 0
    for p in range(T.PARTITIONS):
        low, high = r.bounds(changelog, p)
        for batch in r.read(changelog, p, low, high):
            done += len(batch)
        print(
            f"{label}: partition {p}, {done:,} records in {time.monotonic() - t0:.1f}s, "
            f"RSS {proc.memory_info().rss / 2**20:.0f} MB, peak {peak[0]:.0f} MB",
            flush=True,
        )
    r.close()


def reader_diag(bootstrap: str, admin: AdminClient, keys: int) -> None:
    app = f"diag{os.getpid()}"
    changelog = T.changelog_topic(app)
    ensure_topics(admin, [changelog])
    T.produce_all(
        bootstrap, changelog.name, ((b"m%d" % i, T.changelog_value(i)) for i in range(keys))
    )
    for small in ("", "small"):
        subprocess.run(
            [sys.executable, "-m", "bench.tables_diag", "reader-child", bootstrap, app, small],
            check=True,
            cwd=T.ROOT,
        )
    T.delete_topics(admin, app)


# -- profile ------------------------------------------------------------------------


def profile_diag(bootstrap: str, admin: AdminClient, names: list[str]) -> None:
    tag = f"pd{os.getpid()}"
    source = f"bt{tag}-count-in"
    per_key = count_input(bootstrap, admin, source)
    T.worker_argv = lambda: [sys.executable, "-m", "bench.tables_timing", "run", T.APP]
    plain_env = T.streamkit_env
    path = {"now": ""}

    def env(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**plain_env(*args, **kwargs), "BENCH_CPROFILE_MAIN": path["now"]}

    T.streamkit_env = env  # type: ignore[assignment]
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    work = Path(tempfile.mkdtemp(prefix="bench-tables-diag-"))
    for c in T.contenders(["sqlite", "rocksdb"]):
        if c["name"] not in names or c["kind"] != "streamkit":
            continue
        path["now"] = str(work / f"{c['name']}.prof")
        r = T.run_throughput(c, None, bootstrap, admin, probe, source, N, per_key, tag, work)
        print(
            f"\n=== {c['name']} (profiled): {r['records_per_s']:,} records/s, "
            f"{r['cpu_s_per_million']} CPU s / 1M, wrong keys {r['wrong_keys']}"
        )
        pstats.Stats(path["now"]).sort_stats("tottime").print_stats(15)
    probe.close()
    T.delete_topics(admin, source)


# -- lost updates --------------------------------------------------------------------


def lost_updates_diag(
    bootstrap: str, admin: AdminClient, store: str, keys: int, n: int, hot: int = 0
) -> None:
    app = f"lost{os.getpid()}"
    source, sink = f"{app}-in", f"{app}-out"
    ensure_topics(admin, [Topic(sink, partitions=T.PARTITIONS), T.changelog_topic(app)])
    count_input(bootstrap, admin, source, n, keys, hot)
    state = Path(tempfile.mkdtemp(prefix="bench-tables-diag-"))
    env = T.streamkit_env(bootstrap, app, source, sink, state, store)
    proc = T.Proc(T.worker_argv(), env, T.RESULTS / f"tables-diag-lost-{store}.log.tmp")
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    while output_size(probe, sink) < n:
        if proc.popen.poll() is not None:
            raise SystemExit(f"worker exited: {proc.tail()}")
        time.sleep(0.2)
    proc.stop()
    probe.close()
    outputs: dict[str, list[int]] = defaultdict(list)
    for m in read_all(bootstrap, sink):
        v = orjson.loads(m.value())
        outputs[v["key"]].append(v["n"])
    bad = [k for k, ns in outputs.items() if ns != list(range(1, len(ns) + 1))]
    print(
        f"{store}, at least once, {n:,} records over {keys:,} keys"
        + (f" and {hot:,} hot ones: " if hot else ": ")
        + f"{len(bad):,} of {len(outputs):,} keys with wrong counts"
    )
    for k in bad[:3]:
        print(f"  {k}: outputs n = {outputs[k]}")
    if bad:
        first = bad[0].encode()
        records = [m for m in read_all(bootstrap, f"{app}.counts.changelog") if m.key() == first]
        print(f"  changelog of {bad[0]} (offset, value, streamkit-src):")
        for m in records:
            src = dict(m.headers() or []).get("streamkit-src", b"")
            print(f"    {m.offset()}, {m.value().decode()}, {int.from_bytes(src, 'big')}")
    T.delete_topics(admin, app)


# -- memory --------------------------------------------------------------------------


def memory_diag(bootstrap: str, admin: AdminClient, keys: int, kib: int) -> None:
    os.environ["BENCH_MEMORY_KEYS"] = str(keys)
    T.worker_argv = lambda: [sys.executable, "-m", "bench.tables_timing", "run", T.APP]
    plain_env = T.streamkit_env
    for buffer in (None, kib):

        def env(*args: Any, buffer: int | None = buffer, **kwargs: Any) -> dict[str, str]:
            extra = {"BENCH_READER_BUFFER_KB": str(buffer)} if buffer else {}
            return {**plain_env(*args, **kwargs), **extra}

        T.streamkit_env = env  # type: ignore[assignment]
        work = Path(tempfile.mkdtemp(prefix="bench-tables-diag-"))
        row = T.memory_phase(bootstrap, admin, f"md{os.getpid()}{buffer or ''}", work, ["rocksdb"])
        label = f"reader buffers {buffer} KiB" if buffer else "streamkit's reader buffers"
        if "error" in row:
            print(f"{label}: {row['error']}")
            continue
        rt = row["restore"]
        print(
            f"{label}: restore {rt['wall_s']} s wall ({rt['seconds_sum']} s summed), "
            f"peak RSS at restored {rt['peak_rss_mb']:.0f} MB, after processing "
            f"{row['rss_after_processing_mb']:.0f} MB, peak {row['peak_rss_mb']:.0f} MB"
        )


# -- overlay race -------------------------------------------------------------------


def overlay_race() -> None:
    from types import SimpleNamespace

    from streamkit.serde import resolve_serde
    from streamkit.state import partition as P
    from streamkit.state.partitioner import crc32_partition
    from streamkit.state.store import open_store
    from streamkit.state.table import NO_VALUE, Table

    table = Table("app", "counts", default=0)
    part = P.TablePartition(
        table,
        0,
        1,
        open_store("memory", Path(".")),
        resolve_serde("str"),
        resolve_serde("json"),
        crc32_partition,
        False,
    )
    offset = [0]

    def count(key: str) -> int:
        """The bench's agent on one record of ``key``."""
        msg = SimpleNamespace(key=lambda: key.encode(), timestamp=lambda: (0, 0))
        P.CURRENT_RECORD.set(SimpleNamespace(msg=msg, offset=offset[0], writes=None))
        offset[0] += 1
        found = part.get(key)
        n = (0 if found is NO_VALUE else int(found)) + 1
        part.set(key, n)
        return n

    bound = int(getattr(P, "_CACHED_KEYS", 0))
    for i in range(bound + 10):  # cold keys: the overlay passes its cache bound
        count(f"cold{i}")
    count("hot")  # 1
    batch, _ = part.stage()  # checkpoint 1: staged, acknowledged, waiting for its commit
    part.wait_for_commit(offset[0], batch, 1)
    count("hot")  # 2
    part.stage()  # checkpoint 2: staged, its changelog records not acknowledged yet
    part.committed(offset[0])  # meanwhile checkpoint 1's commit is confirmed: persist, trim
    n = count("hot")
    print(
        f"overlay bound {bound:,} keys; the hot key's third count: {n} "
        f"({'correct' if n == 3 else 'WRONG: a lost update'})"
    )


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "reader-child":
        reader_child(args[1], args[2], bool(args[3:] and args[3]))
        return
    if args and args[0] == "overlay-race":
        overlay_race()
        return
    if not args or args[0] not in ("reader", "profile", "lost-updates", "memory"):
        raise SystemExit(__doc__)
    with bench_broker(os.environ.get("BENCH_BROKERS")) as (bootstrap, _):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        if args[0] == "reader":
            reader_diag(bootstrap, admin, int(args[1]) if args[1:] else 5_000_000)
        elif args[0] == "memory":
            keys = int(args[1]) if args[1:] else 5_000_000
            memory_diag(bootstrap, admin, keys, int(args[2]) if args[2:] else 8192)
        elif args[0] == "profile":
            names = (
                args[1] if args[1:] else "sk-table-sqlite-alo,sk-table-rocksdb-alo,sk-no-table-alo"
            )
            profile_diag(bootstrap, admin, names.split(","))
        else:
            store = args[1] if args[1:] else "rocksdb"
            keys = int(args[2]) if args[2:] else KEYS
            n = int(args[3]) if args[3:] else N
            lost_updates_diag(bootstrap, admin, store, keys, n, int(args[4]) if args[4:] else 0)
        del admin


if __name__ == "__main__":
    main()
