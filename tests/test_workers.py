"""Worker processes on one port (pyws/workers.py): app.run(workers=2), pyws.run_workers for a
Manager program (SO_REUSEPORT and the inherited-socket fallback), and ``python -m pyws``.
Real processes, real signals, real clients (websockets); topics across workers go through a
real redis-server (tests/_redis.py)."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from typing import Any, Iterator, List

import pytest

from conftest import PKG_PARENT
from _procs import Program
from _redis import RedisServer, free_port

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Supervised(Program):
    """A supervisor process; ``pids`` are its workers as they announce themselves."""

    def __init__(self, argv: List[str], expect: int, pattern: str = r"^PORT (\d+) (\d+)",
                 cwd: str = HERE, pid_group: int = 2) -> None:
        super().__init__(argv, cwd)
        self.pattern = re.compile(pattern)
        self.pid_group = pid_group
        self.pids: List[int] = []
        try:
            for _ in range(expect):
                self.next_worker()
        except BaseException:
            self.stop()  # never leave a supervisor (and its workers) behind
            raise

    def next_worker(self, timeout: float = 15.0) -> int:
        pid = int(self.expect(self.pattern, timeout).group(self.pid_group))
        self.pids.append(pid)
        return pid


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.close()


async def clients(port: int, n: int, path: str = "/") -> List[Any]:
    """n clients at once; each first gets "ready <worker pid>" (kept as .pid)."""
    async def one() -> Any:
        ws = await ws_connect(f"ws://127.0.0.1:{port}{path}")
        ws.pid = int((await asyncio.wait_for(ws.recv(), 5)).split()[1])
        return ws
    return list(await asyncio.gather(*[one() for _ in range(n)]))


async def expect_close(ws: Any, code: int) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == code


def test_app_workers_2_share_port_and_topics_restart_and_stop(redis: RedisServer) -> None:
    port = free_port()
    sup = Supervised([os.path.join(HERE, "_broker_node.py"), redis.url,
                      '{"probe_interval": 600}', "--workers", "2", "--port", str(port)], 2)
    killed: List[int] = []
    try:
        async def main() -> None:
            conns = await clients(port, 16, "/sub/all")
            pids = {c.pid for c in conns}
            assert pids == set(sup.pids), "connections landed on one worker only"
            redis.wait_numsub({"pyws:all": 2}, timeout=10)  # both workers
            await conns[0].send("to everyone")
            got = await asyncio.gather(*[asyncio.wait_for(c.recv(), 5) for c in conns])
            assert got == ["to everyone"] * 16  # both workers, through Redis
            # SIGKILL one worker: the supervisor restarts it, the other keeps serving
            victim = conns[0].pid
            killed.append(victim)
            os.kill(victim, signal.SIGKILL)
            new_pid = sup.next_worker()
            assert new_pid != victim
            survivors = [c for c in conns if c.pid != victim]
            for c in conns:
                if c.pid == victim:
                    await expect_close(c, 1006)
            await survivors[0].send("still here")
            got = await asyncio.gather(*[asyncio.wait_for(c.recv(), 5) for c in survivors])
            assert got == ["still here"] * len(survivors)
            more = await clients(port, 16, "/sub/all")
            assert new_pid in {c.pid for c in more}
            # SIGTERM to the supervisor: every client gets 1001
            sup.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*[expect_close(c, 1001) for c in survivors + more])

        asyncio.run(main())
        assert sup.proc.wait(15) == 0
        out = "".join(sup.output)
        assert f"(pid {killed[0]}) was killed by signal 9 (SIGKILL)" in out
        assert "restarting it in" in out
    finally:
        sup.stop()


@pytest.mark.parametrize("reuse", ["1", "0"], ids=["reuseport", "inherited-socket"])
def test_run_workers_with_a_manager_program(reuse: str) -> None:
    port = free_port()
    sup = Supervised([os.path.join(HERE, "_workers_manager.py"), str(port), reuse], 2)
    try:
        async def main() -> None:
            seen: set = set()
            conns: List[Any] = []
            for _ in range(8):  # rounds of concurrent connects until both workers served
                conns += await clients(port, 8)
                seen = {c.pid for c in conns}
                if seen == set(sup.pids):
                    break
            assert seen == set(sup.pids)
            for c in conns:  # no broker: a publish stays on its worker
                await c.send("ping")
                assert await asyncio.wait_for(c.recv(), 5) == "ping"
                while True:
                    try:
                        await asyncio.wait_for(c.recv(), 0.02)
                    except asyncio.TimeoutError:
                        break
            sup.proc.send_signal(signal.SIGINT)
            await asyncio.gather(*[expect_close(c, 1001) for c in conns])

        asyncio.run(main())
        assert sup.proc.wait(15) == 0
    finally:
        sup.stop()


def test_python_m_pyws_runs_an_app_with_workers_and_a_broker(redis: RedisServer) -> None:
    port = free_port()
    sup = Supervised(["-m", "pyws", "_workers_app:make", "--port", str(port), "--workers", "2",
                      "--broker", redis.url], 2, pattern=r"(\d+) pyws INFO serving on "
                      r"127\.0\.0\.1:(\d+)", pid_group=1)
    try:
        async def main() -> None:
            conns = await clients(port, 16)
            assert len({c.pid for c in conns}) == 2
            redis.wait_numsub({"pyws:all": 2}, timeout=10)  # both workers
            await conns[-1].send("hi all")
            got = await asyncio.gather(*[asyncio.wait_for(c.recv(), 5) for c in conns])
            assert got == ["hi all"] * 16
            sup.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*[expect_close(c, 1001) for c in conns])

        asyncio.run(main())
        assert sup.proc.wait(15) == 0
    finally:
        sup.stop()


def test_python_m_pyws_explains_a_bad_target() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "pyws", "nocolon"], capture_output=True,
                       text=True, env=env, cwd=HERE, timeout=30)
    assert r.returncode != 0 and "module:attribute" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pyws", "_workers_app:nothing"],
                       capture_output=True, text=True, env=env, cwd=HERE, timeout=30)
    assert r.returncode != 0 and "has no attribute 'nothing'" in r.stderr
