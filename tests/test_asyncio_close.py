"""Closing pyws inside asyncio, and closing asyncio around pyws: ``Manager.close()`` detaches
from the asyncio loop by itself, and closing the asyncio loop (``asyncio.run``/``Runner``
ending, or a bare ``loop.close()``) leaves no descriptor registered, no task pending and
nothing on stderr; on asyncio's default loop and on uvloop. Also: calls from a foreign
thread into async code raise WrongThreadError."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import pytest

import pyws
from pyws import aio

uvloop = pytest.importorskip("uvloop")

T = TypeVar("T")
PKG_PARENT = Path(pyws.__file__).resolve().parent.parent


def factory_for(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    return uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop


def spy_removals(loop: asyncio.AbstractEventLoop) -> List[int]:
    """Record the descriptors pyws unregisters from ``loop`` (wraps the instance's methods)."""
    removed: List[int] = []
    for name in ("remove_reader", "remove_writer"):
        real = getattr(loop, name)

        def spy(fd: Any, _real: Any = real) -> bool:
            removed.append(fd if isinstance(fd, int) else fd.fileno())
            return bool(_real(fd))
        setattr(loop, name, spy)
    return removed


def registered(b: aio.Bridge) -> List[int]:
    """What a bridge has registered with asyncio: the poller's descriptor, or (poll(2)
    backend) every mirrored one."""
    return [b.backend_fd] if b.backend_fd >= 0 else sorted(b._watched)


# ---------------------------------------------------------------------- Manager.close()

@pytest.mark.parametrize("what", ["manager", "app"])
def test_close_while_attached_unregisters_first(run: Any, what: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        removed = spy_removals(loop)
        if what == "app":
            target: Any = pyws.App()
            mgr = target.mgr
            target.listen("127.0.0.1", 0)
        else:
            target = mgr = pyws.Manager(lambda c, e, d: None)
            mgr.listen("http://127.0.0.1:0")
        b = pyws.attach(target)
        fds = registered(b)
        assert fds and all(fd >= 0 for fd in fds)
        await asyncio.sleep(0.01)
        target.close()  # no aio.detach() first
        assert mgr._loop is None and aio.bridge_for(mgr) is None and b._closed
        assert sorted(set(removed)) == fds  # unregistered while still open
        assert not any(loop.remove_reader(fd) for fd in fds)  # nothing left registered
        # the numbers are free for asyncio again: new sockets (likely reusing them) register
        socks = [socket.socketpair() for _ in range(4)]
        try:
            got = loop.create_future()
            a, z = socks[-1]
            z.setblocking(False)
            loop.add_reader(z.fileno(), lambda: got.done() or got.set_result(z.recv(10)))
            a.send(b"ping")
            assert await asyncio.wait_for(got, 5) == b"ping"
            loop.remove_reader(z.fileno())
        finally:
            for a, z in socks:
                a.close()
                z.close()
        target.close()  # twice: harmless
    run(main())


def test_detach_then_close_still_works(run: Any) -> None:
    async def main() -> None:
        mgr = pyws.Manager(lambda c, e, d: None)
        pyws.attach(mgr)
        aio.detach(mgr)
        assert mgr._close_hooks == []  # the bridge took its hook back
        mgr.poll(0)  # yours again
        mgr.close()
    run(main())


# ---------------------------------------------------------------------- closing the loop

SCENARIO = r'''
import asyncio, gc, sys
import pyws, uvloop
from pyws import aio, aclient

kind, mode = sys.argv[1], sys.argv[2]
factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
app = pyws.App()
cb = pyws.Manager(lambda conn, ev, data: None)
ended = []

@app.websocket("/hang")
async def hang(ws):
    try:
        await ws.recv()          # still waiting when the loop closes
    finally:
        ended.append("handler")

removed, state = [], {}

async def main():
    loop = asyncio.get_running_loop()
    for name in ("remove_reader", "remove_writer"):
        real = getattr(loop, name)
        def spy(fd, _real=real):
            removed.append(fd)
            return _real(fd)
        setattr(loop, name, spy)
    port = app.listen("127.0.0.1", 0).port
    cb.listen("http://127.0.0.1:0")
    bridges = [pyws.attach(app), pyws.attach(cb)]
    ws = await pyws.aconnect(f"ws://127.0.0.1:{port}/hang")   # left open on purpose
    await ws.ping()                                          # the handler runs by now
    bridges.append(aio.bridge_for(aclient._HUBS[id(loop)].mgr))
    state.update(ws=ws, hub=aclient._HUBS[id(loop)].mgr,
                 fds=sorted(fd for b in bridges
                            for fd in ([b.backend_fd] if b.backend_fd >= 0 else b._watched)))

if mode == "run":
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
else:
    loop = factory()
    loop.run_until_complete(main())
    loop.close()                 # no cancelling, no shutdown_asyncgens: just close

assert ended == ["handler"], ended
assert not aio._BRIDGES and not aclient._HUBS and not aio._TASKS
assert sorted(set(removed)) == state["fds"], (removed, state["fds"])
assert state["hub"]._loop is None and state["ws"].closed
for m in (app.mgr, cb):          # yours: detached, not closed
    assert m._loop is not None and aio.bridge_for(m) is None
    m.poll(0)
    m.close()
gc.collect()
print("clean")
'''


@pytest.mark.parametrize("mode", ["run", "bare"])
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_closing_the_asyncio_loop_closes_pyws_cleanly(kind: str, mode: str,
                                                      tmp_path: Path) -> None:
    """An App and a callback Manager attached, an async handler waiting in recv(), an async
    client left open: the loop closes (asyncio.Runner, or a bare loop.close()) and pyws
    unregisters every descriptor, ends the handler, closes the clients' shared Manager and
    leaves the user's Managers detached and usable; stderr stays empty (no warning, no
    "Task was destroyed but it is pending", no unraisable exception)."""
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(SCENARIO))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_PARENT)] +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-W", "error", "-W", "always::ResourceWarning",
                        str(script), kind, mode], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "clean\n", ""), r.stderr


# ---------------------------------------------------------------------- foreign threads

def test_calls_from_a_foreign_thread_raise_wrong_thread_error(run: Any) -> None:
    """While an async handler runs, another thread touching its ws (a send run on another
    event loop, subscribe, publish, close, abort, the Connection itself) gets
    WrongThreadError and changes nothing; the same send handed over with
    run_coroutine_threadsafe goes out."""
    app = pyws.App()
    errors: List[str] = []
    leaked: List[str] = []
    after: List[Any] = []

    @app.websocket("/t")
    async def t(ws: pyws.AsyncWebSocket) -> None:
        loop = asyncio.get_running_loop()
        await ws.recv()

        def other_thread() -> None:
            attempts: List[Callable[[], Any]] = [
                lambda: asyncio.run(ws.send("from another loop")),
                lambda: asyncio.run(ws.send_str("from another loop")),
                lambda: ws.subscribe("room"),
                lambda: ws.publish("room", "x"),
                lambda: ws.conn.send("raw"),
                lambda: asyncio.run(ws.close(4000, "not from here")),
                lambda: ws.abort(),
                lambda: app.publish("room", "x"),
            ]
            for i, attempt in enumerate(attempts):
                try:
                    attempt()
                    leaked.append(f"attempt {i} went through")
                except pyws.WrongThreadError:
                    errors.append(str(i))
                except Exception as exc:
                    leaked.append(f"attempt {i}: {exc!r}")
            asyncio.run_coroutine_threadsafe(ws.send("handed over"), loop).result(5)

        th = threading.Thread(target=other_thread)
        th.start()
        await asyncio.to_thread(th.join)
        after.append((ws.closed, ws.close_code, ws.subprotocol))
        await ws.send("after")
        await ws.recv()

    async def main() -> None:
        started: asyncio.Future[pyws.Listener] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(app.serve("127.0.0.1", 0, on_start=started.set_result))
        port = (await started).port
        async with pyws.aconnect(f"ws://127.0.0.1:{port}/t") as ws:
            await ws.send("go")
            assert (await ws.recv(timeout=10)).data == "handed over"
            assert (await ws.recv(timeout=10)).data == "after"
            assert ws.close_code is None  # neither closed nor aborted from the thread
            await ws.send("done")
        server.cancel()
        await asyncio.wait([server])
    run(main())
    assert leaked == []
    assert after == [(False, None, None)]  # the handler's ws saw nothing of it
    assert errors == [str(i) for i in range(8)]


def test_foreign_thread_cannot_close_or_poll_an_attached_manager(run: Any) -> None:
    async def main() -> None:
        mgr = pyws.Manager(lambda c, e, d: None)
        pyws.attach(mgr)
        caught: List[Optional[BaseException]] = []

        def other() -> None:
            for call in (mgr.close, lambda: mgr.listen("http://127.0.0.1:0"),
                         lambda: aio.detach(mgr)):
                try:
                    call()
                    caught.append(None)
                except pyws.WrongThreadError as exc:
                    caught.append(exc)
        th = threading.Thread(target=other)
        th.start()
        await asyncio.to_thread(th.join)
        assert [type(e) for e in caught] == [pyws.WrongThreadError] * 3
        assert aio.bridge_for(mgr) is not None and mgr._loop is not None
        mgr.close()
    run(main())
