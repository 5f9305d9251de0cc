"""End-to-end echo over TLS (wss://): pyws against picows with TLS, and each of them against
itself without TLS (the cost of TLS), all in one pytest run, driven by bench/loadgen.c --tls.

The servers, one script per library serving either wss:// (--cert/--key) or plain ws:// (no
certificate), so the wss/ws ratio measures TLS and nothing else:

- ``pyws-wss`` / ``pyws-ws``: bench/servers/pyws_wss_echo.py, the callback ``Manager`` echo
  of examples/echo_server.py, ``mgr.listen("wss://...", tls=pyws.TlsOpts(cert, key))``;
- ``picows-wss`` / ``picows-ws``: bench/servers/picows_wss_echo.py, picows's echo listener,
  ``ws_create_server(..., ssl=ssl.SSLContext(PROTOCOL_TLS_SERVER))`` (aiofastnet's TLS engine
  when installed, picows's default), uvloop if installed.

One certificate for the whole session (tests/_pki.py's ``make_pki``: a CA and an ECDSA P-256
server certificate for 127.0.0.1, made with ``cryptography`` in a temporary directory); the
load client verifies it against that CA (``--ca``: only the handshakes pay for it, before the
measurement). Same load as the echo benchmark (--wss-conns x --wss-inflight, sizes from
--wss-size, default 64 B and 4 KiB); rounds interleaved (every server once per round, per
size). Nothing asserts on time: the summary (conftest's terminal summary, wss_summary.py;
also build/bench-wss.json) reports the numbers and the ratios.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest

from harness import BUILD, HERE, ROOT, cpus, loadgen_has_tls, server, tail

# name -> (script under bench/servers, TLS?, the module it needs)
SERVERS: Dict[str, Tuple[str, bool, str]] = {
    "pyws-wss": ("pyws_wss_echo.py", True, "pyws"),
    "picows-wss": ("picows_wss_echo.py", True, "picows"),
    "pyws-ws": ("pyws_wss_echo.py", False, "pyws"),
    "picows-ws": ("picows_wss_echo.py", False, "picows"),
}


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


def pytest_generate_tests(metafunc: Any) -> None:
    if "wss_case" not in metafunc.fixturenames:
        return
    cfg = metafunc.config
    servers = _split(cfg.getoption("--wss-servers"))
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise pytest.UsageError(f"--wss-servers: unknown {unknown}; known: {list(SERVERS)}")
    sizes = [int(s) for s in _split(cfg.getoption("--wss-size"))]
    rounds = max(1, cfg.getoption("--wss-rounds"))
    cases = [(r, size, s) for size in sizes for r in range(1, rounds + 1) for s in servers]
    metafunc.parametrize("wss_case", cases, ids=[f"{size}B-r{r}-{s}" for r, size, s in cases])


@pytest.fixture(scope="session")
def wss_pki(tmp_path_factory: Any) -> Dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, made once per session."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        pytest.skip("cryptography is not installed (needed to make the test certificate)")
    tests_dir = os.path.join(ROOT, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from _pki import make_pki
    pki = make_pki(tmp_path_factory.mktemp("wss-pki"))
    return {"ca": pki.ca_cert, "cert": pki.server_cert, "key": pki.server_key}


@pytest.fixture(scope="session")
def loadgen_tls(loadgen: str) -> bool:
    return loadgen_has_tls(loadgen)


def test_wss(benchmark: Any, bench_store: Dict[str, Any], loadgen: str, loadgen_tls: bool,
             wss_pki: Dict[str, str], wss_case: Any, pytestconfig: Any) -> None:
    rnd, size, name = wss_case
    script, tls, module = SERVERS[name]
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed")
    if tls and not loadgen_tls:
        pytest.skip("loadgen was built without OpenSSL (no libssl-dev?): no --tls")
    opt = pytestconfig.getoption
    conns, inflight = opt("--wss-conns"), opt("--wss-inflight")
    duration, warmup, pin = opt("--wss-duration"), opt("--wss-warmup"), opt("--wss-pin")
    benchmark.group = f"wss {size}B"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-wss-{name}.log")
    argv = [os.path.join(HERE, "servers", script)]
    if tls:
        argv += ["--cert", wss_pki["cert"], "--key", wss_pki["key"]]

    with server(name, argv, log_path, pin, fail=pytest.fail) as (proc, port, banner):
        cmd = [loadgen, "--port", str(port), "-c", str(conns), "-k", str(inflight),
               "-s", str(size), "-d", str(duration), "-w", str(warmup), "--pid", str(proc.pid)]
        if tls:
            cmd += ["--tls", "--ca", wss_pki["ca"]]
        cs = cpus()
        pre = (lambda: os.sched_setaffinity(0, {cs[0]})) if pin and len(cs) >= 2 else None
        # loadgen bounds itself (phases + SIGALRM backstop); the timeout here is a second fence
        budget = duration + warmup + 10.0 + 2.0 + 15.0

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                                  preexec_fn=pre)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        pytest.fail(f"loadgen against {name} exited with {r.returncode}: {r.stderr.strip()}\n"
                    f"server log:\n{tail(log_path)}")
    assert alive, f"{name} server died during the run:\n{tail(log_path)}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(server=name, round=rnd, banner=banner, pinned=bool(pin and len(cpus()) >= 2),
               script=os.path.relpath(argv[0], ROOT), server_tls=tls)
    benchmark.extra_info.update(res)
    bench_store["wss"].append(res)
