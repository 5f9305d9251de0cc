"""Browser interop: headless Chromium against examples/chat_server.py, with permessage-deflate.

Browsers always offer permessage-deflate (``permessage-deflate; client_max_window_bits``), so
this is pyws's compression against an independent implementation: Chromium's. The browser is
driven over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (fd 3: commands in,
fd 4: responses and events out, JSON messages ended by NUL): no Python dependency, no port.

The test loads the chat page the example serves (http://127.0.0.1:PORT/), whose own WebSocket
joins the room, then runs a script in that page that opens a second WebSocket to /ws, sends
chat messages (short, over the 128-byte compression threshold, repetitive, non-ASCII) and
waits for their broadcasts; one message goes through the page's own form. Checked:

- every text comes back exactly as sent, on the test socket and in the page's log;
- the browser offered permessage-deflate and both sockets agreed on it (``ws.extensions``,
  and the 101 response's ``Sec-WebSocket-Extensions`` seen by DevTools);
- a pyws client in the same room received the same broadcasts, the long ones compressed
  (``Message.compressed``): the server did compress what Chromium inflated.

Needs Chromium (Debian: ``apt-get install chromium``; ``scripts/check-deps`` installs it as
root). Without it the test fails and says so; ``PYWS_CHROMIUM=/path/to/chrome`` picks a binary.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import pyws
from conftest import native_env

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")
DEADLINE_S = 45.0   # the whole browser session, start to close

# what the test socket sends; each text stays under the chat server's MAX_TEXT (2000 chars)
TEXTS = [
    "hi",
    "short message, under the 128-byte threshold",
    "x" * 129,
    "The quick brown fox jumps over the lazy dog. " * 8,
    json.dumps([{"id": i, "name": f"user{i % 7}", "tags": ["a", "b", "c"], "ok": i % 2 == 0}
                for i in range(24)]),
    "héllo wörld, ünïcödé ✓ ★ — " * 20 + "🎉",
    "  leading and trailing spaces kept, tabs\ttoo  " * 5,
]
UI_TEXT = "typed into the page's form: " + "compress me " * 12 + "!"


def find_chromium() -> str:
    exe = os.environ.get("PYWS_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if not exe or not os.access(exe, os.X_OK):
        pytest.fail("Chromium is needed for tests/test_browser.py and was not found: install "
                    "the Debian/Ubuntu package `chromium` (apt-get install chromium; "
                    "scripts/check-deps does it when run as root), or set PYWS_CHROMIUM to a "
                    "Chrome/Chromium binary", pytrace=False)
    return exe


class CdpError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium on --remote-debugging-pipe and a minimal CDP client for it."""

    def __init__(self, exe: str, profile: str, log_path: str) -> None:
        # fds 3 and 4 of the child are the pipe's ends; keep ours above them (F_DUPFD_CLOEXEC)
        def high(fd: int) -> int:
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return new

        cmd_r, cmd_w = map(high, os.pipe())
        out_r, out_w = map(high, os.pipe())

        def child_fds() -> None:
            os.dup2(cmd_r, 3)   # os.dup2 makes the copy inheritable
            os.dup2(out_w, 4)

        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = native_env()  # Chromium runs as shipped, even in the ASan suite
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             "--mute-audio", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=child_fds, close_fds=False, env=env)
        os.close(cmd_r)
        os.close(out_w)
        self._w = cmd_w
        self._r = out_r
        self._next_id = 0
        self._inbox: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self.events: List[Dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._r, 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\0" in buf:
                    msg, buf = buf.split(b"\0", 1)
                    self._inbox.put(json.loads(msg))
        except OSError:
            pass
        self._inbox.put(None)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def call(self, method: str, params: Optional[Dict[str, Any]] = None,
             session: Optional[str] = None, timeout: float = 10.0) -> Dict[str, Any]:
        """Send one command, wait (bounded) for its answer; events meanwhile go to .events."""
        self._next_id += 1
        mid = self._next_id
        msg: Dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._w, data):]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"no answer to {method} within {timeout:.0f} s")
            try:
                got = self._inbox.get(timeout=left)
            except queue.Empty:
                continue
            if got is None:
                raise CdpError(f"Chromium closed the DevTools pipe during {method} "
                               f"(exit code {self.proc.poll()}):\n{self.log_tail()}")
            if got.get("id") == mid:
                if "error" in got:
                    raise CdpError(f"{method}: {got['error']}")
                return dict(got.get("result", {}))
            self.events.append(got)

    def wait_event(self, method: str, pred: Callable[[Dict[str, Any]], bool],
                   timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and pred(ev):
                    return ev
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"no {method} event within {timeout:.0f} s")
            try:
                got = self._inbox.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if got is None:
                raise CdpError(f"Chromium closed the DevTools pipe (exit code "
                               f"{self.proc.poll()}):\n{self.log_tail()}")
            self.events.append(got)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (CdpError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._reader.join(5)
        self._log.close()


# Runs in the chat page (top-level scope: the page's `ws` and `me` are visible). Resolves with
# what the browser saw; every wait is bounded by `limitMs`.
PAGE_SCRIPT = r"""
(async (texts, uiText, limitMs) => {
  const t0 = Date.now();
  const left = () => limitMs - (Date.now() - t0);
  const until = async (cond, what) => {
    while (!cond()) {
      if (left() <= 0) throw new Error("timed out waiting for " + what);
      await new Promise(r => setTimeout(r, 20));
    }
  };
  await until(() => ws && ws.readyState === WebSocket.OPEN && me, "the page's WebSocket");
  const inbox = [];
  const t = new WebSocket("ws://" + location.host + "/ws");
  t.onmessage = ev => inbox.push(ev.data);
  let closed = null;
  t.onclose = ev => { closed = ev.code + " " + ev.reason; };
  await until(() => t.readyState === WebSocket.OPEN || closed, "the test WebSocket to open");
  if (closed) throw new Error("test WebSocket closed: " + closed);
  let welcome = null;
  await until(() => (welcome = inbox.map(s => JSON.parse(s)).find(m => m.type === "welcome")),
              "welcome");
  const mine = m => m.type === "message" && m.username === welcome.username;
  const echoed = [];
  for (const text of texts) {
    t.send(JSON.stringify({type: "message", text: text}));
    await until(() => inbox.map(s => JSON.parse(s)).filter(mine).length > echoed.length,
                "the broadcast of message " + echoed.length);
    echoed.push(inbox.map(s => JSON.parse(s)).filter(mine)[echoed.length].text);
  }
  // one through the page's own form
  document.getElementById("text").value = uiText;
  document.getElementById("send").requestSubmit();
  const fromPage = m => m.type === "message" && m.username === me;
  await until(() => inbox.map(s => JSON.parse(s)).some(fromPage), "the form's message");
  const uiEcho = inbox.map(s => JSON.parse(s)).find(fromPage).text;
  await until(() => [...document.querySelectorAll("#log li")]
                      .some(li => li.textContent.includes(uiText)), "the page's log line");
  const result = {
    testExtensions: t.extensions, pageExtensions: ws.extensions, pageUser: me,
    testUser: welcome.username, echoed: echoed, uiEcho: uiEcho,
    sameInJs: texts.every((s, i) => s === echoed[i]),
    logHasAll: texts.every(s => [...document.querySelectorAll("#log li")]
                                  .some(li => li.textContent.includes(s.trim()))),
    status: document.getElementById("status").textContent,
  };
  t.close(1000, "done");
  await until(() => closed, "the test WebSocket to close");
  result.closed = closed;
  return result;
})
"""


def _drain_pyws(ws: Any, want: List[str], deadline: float) -> List[Tuple[str, bool, int]]:
    """(text, compressed, frame JSON length) of the "message" broadcasts the pyws client got,
    until every text in want was seen or the deadline passed."""
    got: List[Tuple[str, bool, int]] = []
    pending = list(want)
    while pending and time.monotonic() < deadline:
        try:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        m = json.loads(msg.text)
        if m.get("type") == "message":
            got.append((m["text"], msg.compressed, len(msg.data)))
            if m["text"] in pending:
                pending.remove(m["text"])
    return got


@pytest.mark.timeout(60)
def test_chromium_chat_permessage_deflate(run_example: Callable[..., Any], tmp_path: Any) -> None:
    exe = find_chromium()
    t_start = time.monotonic()
    ex = run_example("chat_server.py")
    base = f"http://127.0.0.1:{ex.port}"
    # a pyws client in the room too: it sees whether the server compressed the broadcasts
    with pyws.connect(f"ws://127.0.0.1:{ex.port}/ws", timeout=10) as observer:
        assert "permessage-deflate" in observer.extensions
        welcome = observer.recv_json(timeout=10)
        assert welcome["type"] == "welcome"
        browser = Chromium(exe, str(tmp_path / "profile"), str(tmp_path / "chromium.log"))
        try:
            target = browser.call("Target.createTarget", {"url": "about:blank"}, timeout=30)
            session = browser.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})["sessionId"]
            browser.call("Network.enable", session=session)
            browser.call("Page.enable", session=session)
            nav = browser.call("Page.navigate", {"url": base + "/"}, session=session)
            assert not nav.get("errorText"), f"navigating to the chat page: {nav}"
            browser.wait_event("Page.loadEventFired", lambda e: e.get("sessionId") == session,
                               timeout=15)
            limit_ms = int(max(5.0, DEADLINE_S - (time.monotonic() - t_start) - 5) * 1000)
            res = browser.call("Runtime.evaluate", {
                "expression": f"{PAGE_SCRIPT}({json.dumps(TEXTS)}, {json.dumps(UI_TEXT)}, "
                              f"{limit_ms})",
                "awaitPromise": True, "returnByValue": True, "timeout": limit_ms + 2000,
            }, session=session, timeout=limit_ms / 1000 + 5)
            if "exceptionDetails" in res:
                ex_d = res["exceptionDetails"]
                desc = ex_d.get("exception", {}).get("description") or ex_d.get("text")
                pytest.fail(f"the page script failed: {desc}\nserver output so far is in "
                            f"the example's log; chromium log:\n{browser.log_tail()}")
            out = res["result"]["value"]
            events = list(browser.events)
        finally:
            browser.close()
        seen = _drain_pyws(observer, TEXTS + [UI_TEXT], time.monotonic() + 10)

    # byte-exact round trips, checked here and in the page
    assert out["echoed"] == TEXTS
    assert out["sameInJs"] is True
    assert out["uiEcho"] == UI_TEXT
    assert out["logHasAll"] is True, "the page's log is missing a message"
    assert out["status"] == "connected"
    assert out["closed"].startswith("1000"), out["closed"]
    assert out["testUser"] != out["pageUser"]

    # permessage-deflate offered by Chromium and agreed by pyws, on both sockets
    for key in ("testExtensions", "pageExtensions"):
        assert out[key].startswith("permessage-deflate"), f"{key}: {out[key]!r}"
    requests = [e["params"]["request"]["headers"] for e in events
                if e.get("method") == "Network.webSocketWillSendHandshakeRequest"]
    responses = [e["params"]["response"] for e in events
                 if e.get("method") == "Network.webSocketHandshakeResponseReceived"]
    assert len(requests) == 2 and len(responses) == 2, (len(requests), len(responses))

    def header(headers: Dict[str, str], name: str) -> str:
        return next((v for k, v in headers.items() if k.lower() == name.lower()), "")

    for h in requests:
        assert "permessage-deflate" in header(h, "Sec-WebSocket-Extensions"), h
    for r in responses:
        assert r["status"] == 101, r
        agreed = header(r["headers"], "Sec-WebSocket-Extensions")
        assert agreed.startswith("permessage-deflate"), r["headers"]
    assert out["testExtensions"] == header(responses[-1]["headers"], "Sec-WebSocket-Extensions")

    # the pyws client in the room got the same broadcasts; over the threshold, compressed
    texts = [t for t, _, _ in seen]
    for want in TEXTS + [UI_TEXT]:
        assert want in texts, f"the pyws client never got {want[:40]!r}..."
    for text, compressed, size in seen:
        # pyws's default deflate_threshold: messages of 128 bytes and more are compressed
        if size >= 128:
            assert compressed, f"a {size}-byte broadcast arrived uncompressed"
        else:
            assert not compressed, f"a {size}-byte broadcast (under the threshold) compressed"
    assert time.monotonic() - t_start < 60
