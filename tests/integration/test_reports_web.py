"""The reports example through its web app, on a real broker with a real worker.

``pipelines.reports_web`` runs in this process, driven by Starlette's
TestClient as a browser would drive it; the worker runs
``streamkit run pipelines.reports:app`` in a subprocess. Both are imported
with names of this test (``REPORTS_APP``, ``REPORTS_TOPIC``), and days of
0.15 s, so a 20-day report runs for 3 s.

Where a headless Chromium is installed, one more test loads the page in it
and measures the progress bar in its screenshots.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from pipelines import reports_page
from streamkit.localkafka import free_ports
from tests.integration.helpers import WorkerProcess

APP = "pipelines.reports:app"
MODULES = ("pipelines.reports", "pipelines.reports_web")
STEP_S = 0.15
FINAL = ("done", "failed")
# Ceilings, not expectations: a worker joins in about a second, a report
# here runs 1-9 s.
_JOIN_S = 60.0
_FINISH_S = 60.0
_POLL_S = 0.1
# Chromium's own start takes about 1.5 s; a loaded CI machine takes longer.
_BROWSER_S = 60.0

Http = httpx.Client | TestClient


@pytest.fixture
def reports(
    new_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    fresh_import: Callable[..., ModuleType],
    topics_to_delete: list[str],
) -> tuple[ModuleType, dict[str, str]]:
    """``pipelines.reports_web`` imported with fresh names, and the env for its worker."""
    name = unique_name("reports")
    env = {
        "REPORTS_APP": name,
        "REPORTS_TOPIC": new_topic(partitions=4),
        "REPORTS_STEP_S": str(STEP_S),
        "STREAMKIT_GROUP_ID": name,
    }
    # In order: importing pipelines.reports anew also rebinds the package's
    # `reports` attribute, which `from pipelines import reports` would
    # otherwise find and use, names of an earlier test and all.
    web = fresh_import(env, *MODULES)
    assert web.reports.app.name == name
    topics_to_delete += [f"{name}.replies", f"{name}.tasks", f"{name}.build_report.dlq"]
    return web, env


@pytest.fixture
def worker(
    reports: tuple[ModuleType, dict[str, str]], start_member: Callable[..., WorkerProcess]
) -> WorkerProcess:
    """The reports worker, once it owns the requests topic's partitions."""
    _, env = reports
    return start_member(APP, **env)


def follow(
    http: Http, task_id: str, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Poll ``GET /reports/{id}`` as the page does until ``until(status)``; every status seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + _FINISH_S
    while time.monotonic() < deadline:
        response = http.get(f"/reports/{task_id}")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if until(seen[-1]):
            return seen
        time.sleep(_POLL_S)
    raise AssertionError(f"task {task_id} never got there in {_FINISH_S:.0f}s; last {seen[-1:]}")


def final(status: dict[str, Any]) -> bool:
    return status["state"] in FINAL


def test_a_report_is_accepted_at_once_shows_its_progress_and_ends_done(
    reports: tuple[ModuleType, dict[str, str]], worker: WorkerProcess
) -> None:
    web, _ = reports
    days = 20
    with TestClient(web.web) as http:
        started = time.monotonic()
        response = http.post("/reports", json={"region": "west", "days": days})
        took = time.monotonic() - started
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        assert response.headers["location"] == f"/reports/{task_id}"
        seen = follow(http, task_id, final)

    # Accepted before the work could be done, and it was not done yet.
    assert took < days * STEP_S, took
    assert seen[0]["state"] in ("queued", "running"), seen[0]
    running = [s["progress"] for s in seen if s["state"] == "running" and s["progress"]]
    assert running and all(0 < p < 1 for p in running[:-1]), running
    assert running == sorted(running), "progress went back"
    assert any(s["message"] and s["message"].startswith("day ") for s in seen)
    done = seen[-1]
    assert done["state"] == "done" and done["progress"] == 1.0 and done["error"] is None
    result = done["result"]
    assert (result["region"], result["days"]) == ("west", days)
    assert result["orders"] == sum(
        web.reports._day_figures("west", d)[0] for d in range(1, days + 1)
    )
    assert 1 <= result["busiest_day"] <= days and result["revenue_eur"] > 0


def test_a_report_with_a_bad_parameter_ends_failed_with_the_error(
    reports: tuple[ModuleType, dict[str, str]], worker: WorkerProcess
) -> None:
    web, env = reports
    with TestClient(web.web) as http:
        ids = [
            http.post("/reports", json=parameters).json()["task_id"]
            for parameters in ({"region": "atlantis"}, {"region": "north", "days": 0})
        ]
        region, days = (follow(http, task_id, final)[-1] for task_id in ids)

    assert region["state"] == "failed" and region["result"] is None
    assert region["error"]["message"] == (
        "unknown region 'atlantis': choose one of east, north, south, west"
    )
    # Not retried: the same parameter would fail the same way again.
    assert region["error"]["type"] == "builtins.ValueError" and region["error"]["attempts"] == 1
    assert region["error"]["dead_letter_topic"] == f"{env['REPORTS_APP']}.build_report.dlq"
    assert days["state"] == "failed"
    assert days["error"]["message"] == "days must be a whole number from 1 to 60, not 0"


def test_an_unknown_report_is_404_and_a_body_that_is_not_an_object_is_400(
    reports: tuple[ModuleType, dict[str, str]],
) -> None:
    web, _ = reports
    with TestClient(web.web) as http:
        unknown = http.get(f"/reports/{uuid.uuid4().hex}")
        not_json = http.post("/reports", content=b"days=3")
        a_list = http.post("/reports", json=[1, 2])
        page = http.get("/")
    assert unknown.status_code == 404 and unknown.json()["error"].startswith("no task ")
    assert not_json.status_code == 400 and a_list.status_code == 400
    assert page.status_code == 200 and 'role="progressbar"' in page.text


# -- the page in a browser ---------------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


@pytest.fixture
def served(reports: tuple[ModuleType, dict[str, str]]) -> Iterator[str]:
    """The web app on a free port under uvicorn in a thread: its base URL."""
    web, _ = reports
    (port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(web.web, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + _JOIN_S
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, f"uvicorn not started within {_JOIN_S:.0f}s"
        time.sleep(_POLL_S)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.mark.skipif(
    chromium() is None,
    reason="no headless Chromium (chromium, chromium-browser or google-chrome) on PATH",
)
def test_the_page_shows_the_progress_bar_filling_then_done_in_chromium(
    served: str, worker: WorkerProcess, tmp_path: Path
) -> None:
    with httpx.Client(base_url=served, timeout=30) as http:
        task_id = http.post("/reports", json={"region": "east", "days": 60}).json()["task_id"]
        before = follow(http, task_id, lambda s: bool(s["progress"]))[-1]
        running = screenshot(f"{served}/reports/{task_id}/page", tmp_path / "running.png")
        after = http.get(f"/reports/{task_id}").json()
        assert after["state"] == "running", f"the report ended before the screenshot: {after}"
        follow(http, task_id, final)
        done = screenshot(f"{served}/reports/{task_id}/page", tmp_path / "done.png")

    # The bar shows what the page read between the two lookups around it.
    filled = bar(running, reports_page.FILL)
    assert before["progress"] - 0.01 <= filled <= after["progress"] + 0.01, (before, filled, after)
    assert 0 < filled < 1
    # Full, but for a few anti-aliased pixels in its rounded corners.
    assert bar(done, reports_page.DONE) > 0.99


def screenshot(url: str, path: Path) -> list[list[tuple[int, int, int]]]:
    """Load ``url`` in headless Chromium, let its polls run for 1 s, and return the pixels."""
    browser = chromium()
    assert browser is not None
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # the tests may run as root, where the sandbox refuses to start
        "--hide-scrollbars",
        "--force-color-profile=srgb",  # so the bar's colours come out exactly as declared
        f"--user-data-dir={path.parent / 'chromium-profile'}",
        "--window-size=900,400",
        # Page time runs 1 s (pausing while a fetch is out): three polls.
        "--virtual-time-budget=1000",
        f"--screenshot={path}",
        url,
    ]
    done = subprocess.run(command, capture_output=True, timeout=_BROWSER_S, check=False)
    assert done.returncode == 0 and path.exists(), done.stderr.decode(errors="replace")[-2000:]
    return png_pixels(path.read_bytes())


def bar(pixels: list[list[tuple[int, int, int]]], fill: tuple[int, int, int]) -> float:
    """How full the progress bar is: its ``fill`` pixels over all its pixels."""
    filled = sum(row.count(fill) for row in pixels)
    empty = sum(row.count(reports_page.TRACK) for row in pixels)
    assert filled + empty > 0, "no progress bar in the screenshot"
    return filled / (filled + empty)


def png_pixels(data: bytes) -> list[list[tuple[int, int, int]]]:
    """The RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(kind, line, previous, channels)
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)])
        previous = line
    return rows


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    """Undo one scanline's PNG filter in place."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((x + b) & 0xFF for x, b in zip(line, previous, strict=True))
        return
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = previous[i]
        c = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + predictor) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter {kind}")
