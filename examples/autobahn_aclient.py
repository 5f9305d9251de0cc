"""The pyws async testee for the Autobahn|Testsuite fuzzing server: examples/autobahn_client.py
written with ``pyws.aconnect`` inside asyncio (or uvloop with ``--uvloop``), to check the async
driver's conformance (``scripts/autobahn client-async``)::

    wstest -m fuzzingserver -s fuzzingserver.json          # the suite is the server
    python examples/autobahn_aclient.py --url ws://127.0.0.1:9001 --agent pyws-async

It asks /getCaseCount, runs every case at /runCase?case=N&agent=NAME echoing each message back
(``msg = await ws.recv()``, ``await ws.send(msg)``: text as text, binary as binary) until the server
closes, then calls /updateReports?agent=NAME so the report includes this run. A case that ends
in an error (the server closing with a protocol error, a bad frame, a dropped connection) is
reported on stdout and the next case runs.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import quote

import pyws

MAX_SIZE = 64 * 1024 * 1024  # the suite's largest messages are 16 MiB; leave room


def open_ws(url: str, timeout: float) -> pyws.aclient.Connect:
    return pyws.aconnect(url, timeout=timeout, max_size=MAX_SIZE, open_timeout=timeout,
                         close_timeout=timeout, write_limit=4 * MAX_SIZE,
                         write_high_water=4 * 1024 * 1024)


async def get_case_count(base: str, timeout: float) -> int:
    async with open_ws(f"{base}/getCaseCount", timeout) as ws:
        msg = await ws.recv()
        if msg is None:
            raise ValueError("the server closed without sending the case count")
        return int(msg.text)


async def run_case(base: str, case: int, agent: str, timeout: float) -> str:
    """Echo every message of one case until the server ends it; returns how it ended."""
    url = f"{base}/runCase?case={case}&agent={quote(agent)}"
    try:
        ws = await open_ws(url, timeout)
    except (pyws.PyWSError, OSError, asyncio.TimeoutError) as exc:
        return f"could not open: {exc}"
    echoed = 0
    try:
        while True:
            msg = await ws.recv()  # None once closed; TimeoutError after `timeout` s
            if msg is None:
                return f"closed {ws.close_code} after {echoed} message(s)"
            try:
                await ws.send(msg)  # a message goes back with its own type
            except pyws.ConnectionClosed as exc:
                return f"closed {exc.code} while echoing"
            echoed += 1
    except (TimeoutError, asyncio.TimeoutError):
        return f"no message for {timeout} s; giving up on this case"
    finally:
        try:
            await ws.close(timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError):
            ws.abort()


async def update_reports(base: str, agent: str, timeout: float) -> None:
    async with open_ws(f"{base}/updateReports?agent={quote(agent)}", timeout) as ws:
        async for _ in ws:  # nothing is expected; the server closes when the report is written
            pass


async def run(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    t0 = time.monotonic()
    try:
        count = await get_case_count(base, args.timeout)
    except (pyws.PyWSError, OSError, ValueError, asyncio.TimeoutError) as exc:
        print(f"cannot get the case count from {base}: {exc}", file=sys.stderr)
        return 1
    print(f"{count} cases at {base}, agent {args.agent!r}", flush=True)
    for case in range(1, count + 1):
        how = await run_case(base, case, args.agent, args.timeout)
        print(f"case {case}/{count}: {how}", flush=True)
    try:
        await update_reports(base, args.agent, args.timeout)
    except (pyws.PyWSError, OSError, asyncio.TimeoutError) as exc:
        print(f"updateReports failed: {exc}", file=sys.stderr)
        return 1
    print(f"reports updated ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:9001",
                    help="the fuzzing server, ws://HOST:PORT")
    ap.add_argument("--agent", default="pyws-async",
                    help="the name the report lists this run under")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for the server at any one step (default 60)")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop
        return int(uvloop.run(run(args)))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
