"""A real redis-server for the broker tests: started on a free port of 127.0.0.1 in a
temporary directory (no persistence), stopped after. Never a mock: tests/test_broker*.py talk
to this process over TCP, and so does pyws.

``RedisServer.command(...)`` is a small blocking client for the tests' own checks (INFO
commandstats, PUBSUB NUMSUB, PUBLISH of bad input), built on hiredis's reader like pyws's."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, List, Optional

import hiredis


def native_env() -> dict:
    """The environment for redis-server and redis-cli: without the sanitizer runtime the ASan
    suite preloads into Python (they are not ours to check)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed: run scripts/check-deps as root, or "
                           "install it (Debian/Ubuntu: apt-get install redis-server)")
    return path


class RedisServer:
    """One redis-server process; ``port`` stays the same across :meth:`restart`."""

    def __init__(self, port: Optional[int] = None, args: Optional[List[str]] = None,
                 password: Optional[str] = None) -> None:
        self.port = port or free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="pyws-redis-")
        self.args = list(args or [])
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self.dir,
               "--protected-mode", "no", "--loglevel", "warning"] + self.args + (
                   ["--requirepass", self.password] if self.password else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=native_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err}")
            try:
                if self.command("PING") == b"PONG":
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    def command(self, *args: Any, timeout: float = 5.0) -> Any:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            reader = hiredis.Reader()
            if self.password:
                s.sendall(hiredis.pack_command(("AUTH", self.password)))
                while reader.gets() is False:
                    reader.feed(s.recv(65536))
            s.sendall(hiredis.pack_command(tuple(args)))
            while True:
                data = s.recv(65536)
                if not data:
                    raise OSError("redis closed the connection")
                reader.feed(data)
                reply = reader.gets()
                if reply is not False:
                    return reply

    def commandstats(self) -> dict:
        """``INFO commandstats`` as {command: calls}."""
        text = self.command("INFO", "commandstats").decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                fields = dict(kv.split("=") for kv in rest.split(","))
                out[name] = int(fields["calls"])
        return out

    def numsub(self, *channels: str, shard: bool = False) -> dict:
        """Subscribers per channel: ``PUBSUB NUMSUB`` (``shard``: ``SHARDNUMSUB``)."""
        r = self.command("PUBSUB", "SHARDNUMSUB" if shard else "NUMSUB", *channels)
        return {r[i].decode(): int(r[i + 1]) for i in range(0, len(r), 2)}

    def wait_numsub(self, expected: dict, timeout: float = 5.0, shard: bool = False) -> None:
        """Until :meth:`numsub` of ``expected``'s channels is ``expected`` (the nodes send
        their SUBSCRIBE/UNSUBSCRIBE at their next poll); AssertionError with what Redis
        says after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.numsub(*expected, shard=shard)
            if got == expected:
                return
            assert time.monotonic() < deadline, f"Redis has {got}, expected {expected}"
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import random
    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """A Redis Cluster of ``n`` masters (no replicas) on free ports of 127.0.0.1, joined with
    ``redis-cli --cluster create``. Pub/sub keeps working on the live masters while one is
    away (cluster-require-full-coverage no), so a restart can be watched from outside."""

    def __init__(self, n: int = 3) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"]
        self.nodes = [RedisServer(port=_cluster_port(), args=args) for _ in range(n)]
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (Debian: redis-tools, a dependency "
                               "of redis-server)")
        addrs = [f"127.0.0.1:{r.port}" for r in self.nodes]
        subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60,
                       env=native_env())
        self.wait_ok()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{r.port}" for r in self.nodes)

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(b"cluster_state:ok" in r.command("CLUSTER", "INFO")
                       for r in self.nodes):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def owner(self, slot: int) -> RedisServer:
        for r in self.nodes:
            for rng in r.command("CLUSTER", "SLOTS"):
                if int(rng[0]) <= slot <= int(rng[1]):
                    return next(n for n in self.nodes if n.port == int(rng[2][1]))
        raise KeyError(slot)

    def close(self) -> None:
        for r in self.nodes:
            r.close()
