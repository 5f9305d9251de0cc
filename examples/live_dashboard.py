"""Live dashboard: the server pushes (fake) metrics to every open page at a fixed period.

    python examples/live_dashboard.py --host 127.0.0.1 --port 8000 [--interval 0.5]

Open http://127.0.0.1:8000/. Each page's WebSocket (/ws/metrics) is served by a generator that
sends a JSON snapshot, then ``yield ws.sleep(interval)``, forever; when the page goes away the
sleep raises ``pyws.ConnectionClosed`` in the generator and its ``finally`` block runs. A
snapshot looks like:

    {"seq": 12, "ts": 1700000000.0, "cpu": 37.5, "memory_mb": 512.3, "requests_per_s": 812,
     "latency_ms": 4.2, "clients": 3, "uptime_s": 6.0}

``seq`` counts the snapshots sent on that connection, from 0. ``cpu`` etc. are a random walk,
``clients`` is the number of open dashboards. GET /api/metrics returns one snapshot as JSON.
SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with 1001 and exits.
"""
from __future__ import annotations

import argparse
import random
import time
from typing import Any, Dict

import pyws

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyws live dashboard</title>
<style>
  :root { font-family: system-ui, sans-serif; color-scheme: light dark; }
  body { margin: 0 auto; max-width: 60em; padding: 1em; }
  h1 { font-size: 1.3em; }
  #status.off { color: #c33; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(10em, 1fr));
           gap: .8em; }
  .card { border: 1px solid #8884; border-radius: .5em; padding: .7em; }
  .card .label { color: #888; font-size: .85em; }
  .card .value { font-size: 1.6em; font-variant-numeric: tabular-nums; }
  canvas { width: 100%; height: 140px; border: 1px solid #8884; border-radius: .5em;
           margin-top: 1em; }
</style>
</head>
<body>
<h1>pyws live dashboard <small id="status" class="off">connecting...</small></h1>
<div class="cards">
  <div class="card"><div class="label">CPU %</div><div class="value" id="cpu">-</div></div>
  <div class="card"><div class="label">Memory MB</div>
    <div class="value" id="memory_mb">-</div></div>
  <div class="card"><div class="label">Requests/s</div>
    <div class="value" id="requests_per_s">-</div></div>
  <div class="card"><div class="label">Latency ms</div>
    <div class="value" id="latency_ms">-</div></div>
  <div class="card"><div class="label">Dashboards open</div>
    <div class="value" id="clients">-</div></div>
  <div class="card"><div class="label">Server uptime s</div>
    <div class="value" id="uptime_s">-</div></div>
</div>
<canvas id="chart" width="600" height="140" aria-label="CPU history"></canvas>
<script>
"use strict";
const $ = id => document.getElementById(id);
const cpu = [];
let retry = 500;

function draw() {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#2d6cdf"; g.lineWidth = 2; g.beginPath();
  cpu.forEach((v, i) => {
    const x = i * c.width / 119, y = c.height - v / 100 * c.height;
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/metrics`);
  ws.onopen = () => { retry = 500; $("status").textContent = "live"; $("status").className = ""; };
  ws.onmessage = ev => {
    const m = JSON.parse(ev.data);
    for (const k of ["cpu", "memory_mb", "requests_per_s", "latency_ms", "clients", "uptime_s"])
      $(k).textContent = m[k];
    cpu.push(m.cpu); if (cpu.length > 120) cpu.shift();
    draw();
  };
  ws.onclose = () => {
    $("status").textContent = "reconnecting..."; $("status").className = "off";
    setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
  };
}
connect();
</script>
</body>
</html>
"""


class Metrics:
    """A random walk that looks like a busy server."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.started = time.monotonic()
        self.cpu = 30.0
        self.memory = 512.0
        self.rps = 800.0

    def snapshot(self, clients: int) -> Dict[str, Any]:
        r = self.rng
        self.cpu = min(100.0, max(0.0, self.cpu + r.uniform(-5, 5)))
        self.memory = max(64.0, self.memory + r.uniform(-8, 8))
        self.rps = max(0.0, self.rps + r.uniform(-50, 50))
        return {"ts": round(time.time(), 3), "cpu": round(self.cpu, 1),
                "memory_mb": round(self.memory, 1), "requests_per_s": int(self.rps),
                "latency_ms": round(1 + self.cpu / 20 + r.uniform(0, 1), 1),
                "clients": clients, "uptime_s": round(time.monotonic() - self.started, 1)}


def make_app(interval: float = 0.5) -> pyws.App:
    app = pyws.App()
    metrics = Metrics()

    @app.websocket("/ws/metrics")
    def dashboard(ws: pyws.WebSocket) -> Any:
        ws.accept()  # now it counts in app.connections
        seq = 0
        try:
            while True:
                ws.send_json(dict(metrics.snapshot(len(app.connections)), seq=seq))
                seq += 1
                yield ws.sleep(interval)  # raises ConnectionClosed once the page is gone
        finally:
            print(f"dashboard {ws.remote_addr} left after {seq} update(s)", flush=True)

    @app.route("/")
    def index(request: pyws.Request) -> pyws.Response:
        return pyws.Response(PAGE, headers={"Cache-Control": "no-cache"})

    @app.route("/api/metrics")
    def api(request: pyws.Request) -> Dict[str, Any]:
        return metrics.snapshot(len(app.connections))

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between updates")
    args = ap.parse_args()
    app = make_app(args.interval)
    host = f"[{args.host}]" if ":" in args.host else args.host

    def started(lst: pyws.Listener) -> None:
        print(f"live dashboard on http://{host}:{lst.port}/ (every {args.interval:g} s, "
              f"{app.mgr.backend})", flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
