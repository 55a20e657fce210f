"""The reports page: a form, and a progress bar that polls ``GET /reports/{id}``.

Plain HTML and a little JavaScript, no build step. Submitting the form
posts to ``/reports``, moves the address to ``/reports/{id}/page`` (so a
reload or a shared link follows the same task) and polls the status every
300 ms until the task is done or failed, showing its state, progress,
message, and then its result or error. The bar's colours are fixed
(``FILL``, ``DONE``, ``TRACK``) so a screenshot test can measure how full it is.
"""

from __future__ import annotations

import json

POLL_MS = 300
# The bar's colours as RGB: its filled part while running, once done, and its empty part.
FILL = (0x15, 0x65, 0xC0)
DONE = (0x2E, 0x7D, 0x32)
TRACK = (0xDD, 0xDD, 0xDD)


def _css(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>streamkit reports</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 40rem;
         padding: 0 1rem; color: #222; }
  form { display: flex; gap: 1rem; align-items: end; margin-bottom: 1.5rem; }
  label { display: flex; flex-direction: column; font-size: 0.9rem; }
  input, select, button { font: inherit; padding: 0.2rem 0.4rem; }
  input { width: 5rem; }
  #track { height: 28px; background: __TRACK__; border-radius: 4px; overflow: hidden; }
  #fill { height: 100%; width: 0; background: __FILL__; }
  #fill.done { background: __DONE__; }
  #fill.failed { background: #c62828; }
  #state { text-transform: uppercase; }
  #error { color: #c62828; }
  pre { background: #f5f5f5; padding: 0.75rem; }
</style>
</head>
<body>
<h1>Reports</h1>
<form id="form">
  <label>Region
    <select id="region">
      <option>north</option><option>south</option><option>east</option><option>west</option>
      <option value="atlantis">atlantis (fails)</option>
    </select>
  </label>
  <label>Days <input id="days" type="number" value="10"></label>
  <button>Build report</button>
</form>
<section id="task" hidden>
  <p>Task <code id="task-id"></code></p>
  <div id="track" role="progressbar" aria-valuemin="0" aria-valuemax="100">
    <div id="fill"></div>
  </div>
  <p><strong id="state"></strong> <span id="percent"></span> <span id="message"></span></p>
  <pre id="result" hidden></pre>
  <p id="error" hidden></p>
</section>
<script>
const TASK = __TASK__;
const POLL_MS = __POLL_MS__;
const $ = (id) => document.getElementById(id);
let timer = null;

function show(s) {
  const fraction = s.state === "done" ? 1 : (s.progress ?? 0);
  $("fill").style.width = (fraction * 100).toFixed(1) + "%";
  $("fill").className = s.state;
  $("track").setAttribute("aria-valuenow", Math.round(fraction * 100));
  $("state").textContent = s.state;
  $("percent").textContent = Math.round(fraction * 100) + "%";
  $("message").textContent = s.message ?? "";
  $("result").hidden = s.state !== "done";
  $("result").textContent = s.state === "done" ? JSON.stringify(s.result, null, 2) : "";
  $("error").hidden = s.state !== "failed";
  $("error").textContent = s.error ? s.error.type + ": " + s.error.message : "";
}

async function poll(id) {
  let response;
  try {
    response = await fetch("/reports/" + encodeURIComponent(id));
  } catch (e) {
    timer = setTimeout(() => poll(id), POLL_MS);  // the server restarted: try again
    return;
  }
  if (response.status === 404) {
    show({state: "unknown", progress: 0, message: "no task " + id});
    return;
  }
  const s = await response.json();
  show(s);
  if (s.state !== "done" && s.state !== "failed") {
    timer = setTimeout(() => poll(id), POLL_MS);
  }
}

function follow(id) {
  clearTimeout(timer);
  $("task").hidden = false;
  $("task-id").textContent = id;
  show({state: "queued", progress: 0});
  poll(id);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {region: $("region").value, days: Number($("days").value)};
  const response = await fetch("/reports", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify(body),
  });
  const {task_id} = await response.json();
  history.replaceState(null, "", "/reports/" + encodeURIComponent(task_id) + "/page");
  follow(task_id);
});

if (TASK !== null) follow(TASK);
</script>
</body>
</html>
"""


def page(task_id: str | None) -> str:
    """The page, following ``task_id`` from the start if one is given."""
    # json.dumps quotes it for JavaScript; escaping "<" keeps "</script>" out.
    task = json.dumps(task_id).replace("<", "\\u003c")
    return (
        _PAGE.replace("__TRACK__", _css(TRACK))
        .replace("__FILL__", _css(FILL))
        .replace("__DONE__", _css(DONE))
        .replace("__POLL_MS__", str(POLL_MS))
        .replace("__TASK__", task)
    )
