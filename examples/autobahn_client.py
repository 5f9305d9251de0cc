"""The pyws testee for the Autobahn|Testsuite fuzzing server, the industry's WebSocket
conformance suite (in its client mode the suite is the server)::

    docker run -it --rm -v "$PWD/autobahn:/config" -v "$PWD/reports:/reports" -p 9001:9001 \\
        crossbario/autobahn-testsuite wstest -m fuzzingserver -s /config/fuzzingserver.json
    python examples/autobahn_client.py --url ws://127.0.0.1:9001 --agent pyws

It asks /getCaseCount, runs every case at /runCase?case=N&agent=NAME echoing each message back
(text as text, binary as binary) until the server closes, then calls
/updateReports?agent=NAME so the report (reports/clients/index.html) includes this run. A case
that ends in an error (the server closing with a protocol error, a bad frame, a dropped
connection) is reported on stdout and the next case runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from urllib.parse import quote

import pyws

MAX_SIZE = 64 * 1024 * 1024  # the suite's largest messages are 16 MiB; leave room


def open_ws(url: str, timeout: float) -> pyws.ClientConnection:
    return pyws.connect(url, timeout=timeout, max_size=MAX_SIZE, open_timeout=timeout,
                        close_timeout=timeout, write_limit=4 * MAX_SIZE,
                        write_high_water=4 * 1024 * 1024)


def get_case_count(base: str, timeout: float) -> int:
    with open_ws(f"{base}/getCaseCount", timeout) as ws:
        return int(ws.recv().text)


def run_case(base: str, case: int, agent: str, timeout: float) -> str:
    """Echo every message of one case until the server ends it; returns how it ended."""
    url = f"{base}/runCase?case={case}&agent={quote(agent)}"
    try:
        ws = open_ws(url, timeout)
    except (pyws.PyWSError, OSError) as exc:
        return f"could not open: {exc}"
    echoed = 0
    try:
        while True:
            try:
                msg = ws.recv()
            except pyws.ConnectionClosed as exc:
                return f"closed {exc.code} after {echoed} message(s)"
            except TimeoutError:
                return f"no message for {timeout} s; giving up on this case"
            try:
                ws.send(msg)  # a Message goes back with its own opcode
            except pyws.ConnectionClosed as exc:
                return f"closed {exc.code} while echoing"
            echoed += 1
    finally:
        ws.close()


def update_reports(base: str, agent: str, timeout: float) -> None:
    with open_ws(f"{base}/updateReports?agent={quote(agent)}", timeout) as ws:
        try:
            for _ in ws:  # nothing is expected; the server closes when the report is written
                pass
        except pyws.ConnectionClosed:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:9001",
                    help="the fuzzing server, ws://HOST:PORT")
    ap.add_argument("--agent", default="pyws", help="the name the report lists this run under")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for the server at any one step (default 60)")
    args = ap.parse_args()
    base = args.url.rstrip("/")
    t0 = time.monotonic()
    try:
        count = get_case_count(base, args.timeout)
    except (pyws.PyWSError, OSError, ValueError) as exc:
        print(f"cannot get the case count from {base}: {exc}", file=sys.stderr)
        return 1
    print(f"{count} cases at {base}, agent {args.agent!r}", flush=True)
    for case in range(1, count + 1):
        how = run_case(base, case, args.agent, args.timeout)
        print(f"case {case}/{count}: {how}", flush=True)
    try:
        update_reports(base, args.agent, args.timeout)
    except (pyws.PyWSError, OSError) as exc:
        print(f"updateReports failed: {exc}", file=sys.stderr)
        return 1
    print(f"reports updated ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
