"""Chat rooms with the generator-style App and C topics, with its web page on the same port.

    python examples/rooms_chat.py --host 127.0.0.1 --port 8000

Open http://127.0.0.1:8000/ in a few browser tabs, pick a room and a name. Each room is a topic:
a member subscribes to it when it joins, and every message is one ``app.publish(room, ...)``
(framed once in C, queued to every member). The WebSocket is at /ws/rooms/{room}?name=NAME and
speaks JSON:

    client -> server   {"type": "message", "text": "..."}
    server -> client   {"type": "welcome", "room": R, "name": N, "members": K,
                        "history": [message, ...]}                    (to the newcomer)
                       {"type": "join", "name": N, "members": K}       (to the others)
                       {"type": "message", "name": N, "text": T, "ts": UNIX_TIME}
                       {"type": "leave", "name": N, "members": K}
                       {"type": "error", "error": "..."}               (to the sender)

A room name is 1 to 32 letters, digits, "-" or "_" (anything else is refused with HTTP 400);
names are cut to 32 characters and messages to 2000. GET /api/rooms lists the rooms in use.
SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with 1001 and exits.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import re
import time
from typing import Any, Deque, Dict

import pyws

ROOM = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_NAME = 32
MAX_TEXT = 2000
HISTORY = 20

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyws rooms</title>
<style>
  :root { font-family: system-ui, sans-serif; color-scheme: light dark; }
  body { margin: 0; display: flex; flex-direction: column; height: 100vh; }
  header { padding: .6em 1em; background: #2d6cdf; color: #fff; display: flex; gap: .6em;
           align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 1.1em; margin: 0 1em 0 0; }
  header input { padding: .3em; width: 9em; }
  #status { margin-left: auto; }
  #status.off { color: #ffd0d0; }
  #log { flex: 1; overflow-y: auto; padding: .5em 1em; margin: 0; list-style: none; }
  #log li { padding: .2em 0; word-wrap: break-word; }
  #log .sys { color: #888; font-style: italic; }
  #log .err { color: #c33; }
  #log time { color: #999; font-size: .8em; margin-right: .5em; }
  #send { display: flex; gap: .5em; padding: .6em 1em; border-top: 1px solid #ccc; }
  #send input { flex: 1; padding: .4em; font-size: 1em; }
</style>
</head>
<body>
<header>
  <h1>pyws rooms</h1>
  <form id="join">
    <input id="room" value="lobby" maxlength="32" pattern="[A-Za-z0-9_-]{1,32}"
           aria-label="room" title="letters, digits, - or _" required>
    <input id="name" placeholder="your name" maxlength="32" aria-label="your name">
    <button>Join</button>
  </form>
  <span id="members"></span>
  <span id="status" class="off">not connected</span>
</header>
<ul id="log" aria-live="polite"></ul>
<form id="send">
  <input id="text" maxlength="2000" placeholder="Say something..." autocomplete="off"
         aria-label="message" disabled>
  <button id="sendbtn" disabled>Send</button>
</form>
<script>
"use strict";
const $ = id => document.getElementById(id);
let ws = null;

function line(text, cls, ts, who) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  const t = document.createElement("time");
  t.textContent = new Date((ts || Date.now() / 1000) * 1000).toLocaleTimeString();
  li.append(t);
  if (who) { const b = document.createElement("b"); b.textContent = who + ": "; li.append(b); }
  li.append(document.createTextNode(text));
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function setConnected(on, label) {
  $("status").textContent = label;
  $("status").className = on ? "" : "off";
  $("text").disabled = $("sendbtn").disabled = !on;
  if (on) $("text").focus();
}

function join(room, name) {
  if (ws) { ws.onclose = null; ws.close(1000); }
  $("log").textContent = "";
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/ws/rooms/${encodeURIComponent(room)}` +
              (name ? `?name=${encodeURIComponent(name)}` : "");
  const sock = ws = new WebSocket(url);
  setConnected(false, "connecting...");
  sock.onopen = () => setConnected(true, "in #" + room);
  sock.onclose = ev => {
    if (sock !== ws) return;
    setConnected(false, `disconnected (${ev.code})`);
    line(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`, "sys");
  };
  sock.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.type === "welcome") {
      for (const h of m.history) line(h.text, "", h.ts, h.name);
      line(`you are ${m.name} in #${m.room}`, "sys");
      $("members").textContent = `${m.members} here`;
    } else if (m.type === "message") {
      line(m.text, "", m.ts, m.name);
    } else if (m.type === "join" || m.type === "leave") {
      line(`${m.name} ${m.type === "join" ? "joined" : "left"}`, "sys");
      $("members").textContent = `${m.members} here`;
    } else if (m.type === "error") {
      line(m.error, "err");
    }
  };
  history.replaceState(null, "", "#" + room);
}

$("join").onsubmit = ev => {
  ev.preventDefault();
  join($("room").value.trim(), $("name").value.trim());
};
$("send").onsubmit = ev => {
  ev.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({type: "message", text}));
  $("text").value = "";
};
if (location.hash.length > 1) $("room").value = decodeURIComponent(location.hash.slice(1));
</script>
</body>
</html>
"""


def make_app() -> pyws.App:
    app = pyws.App(max_message_size=64 * 1024, heartbeat=30.0, heartbeat_timeout=30.0)
    history: Dict[str, Deque[Dict[str, Any]]] = {}
    guests = itertools.count(1)

    def publish(room: str, event: Dict[str, Any], exclude: Any = None) -> None:
        app.publish(room, json.dumps(event), exclude=exclude)

    @app.websocket("/ws/rooms/{room}")
    def member(ws: pyws.WebSocket) -> Any:
        room = ws.params["room"]
        if not ROOM.match(room):
            ws.reject(400, "a room name is 1 to 32 letters, digits, '-' or '_'\n")
            return
        name = " ".join(ws.request.args.get("name", [""])[0].split())[:MAX_NAME] or \
            f"guest{next(guests)}"
        ws.accept()
        ws.subscribe(room)
        past = history.setdefault(room, collections.deque(maxlen=HISTORY))
        ws.send_json({"type": "welcome", "room": room, "name": name,
                      "members": app.subscribers(room), "history": list(past)})
        publish(room, {"type": "join", "name": name, "members": app.subscribers(room)},
                exclude=ws)
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    return
                try:
                    data = msg.json()
                    text = data["text"] if isinstance(data, dict) and \
                        data.get("type") == "message" else None
                    if not isinstance(text, str) or not text.strip():
                        raise ValueError('send {"type": "message", "text": "..."}')
                except (ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
                    ws.send_json({"type": "error", "error": f"invalid message: {exc}"})
                    continue
                event = {"type": "message", "name": name, "text": text[:MAX_TEXT],
                         "ts": time.time()}
                past.append(event)
                publish(room, event)
        finally:
            # the connection is gone (its subscription with it): tell the others
            left = app.subscribers(room)
            publish(room, {"type": "leave", "name": name, "members": left})
            if left == 0:
                history.pop(room, None)

    @app.route("/")
    def index(request: pyws.Request) -> pyws.Response:
        return pyws.Response(PAGE, headers={"Cache-Control": "no-cache"})

    @app.route("/api/rooms")
    def rooms(request: pyws.Request) -> Dict[str, int]:
        return {r: app.subscribers(r) for r in sorted(history)}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    app = make_app()
    host = f"[{args.host}]" if ":" in args.host else args.host

    def started(lst: pyws.Listener) -> None:
        print(f"rooms chat on http://{host}:{lst.port}/ (WebSocket at "
              f"ws://{host}:{lst.port}/ws/rooms/{{room}}, {app.mgr.backend})", flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
