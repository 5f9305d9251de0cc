"""examples/wss_echo.py run as a program: with a throwaway self-signed certificate (clients
skip verification) and with a certificate from the test CA passed via --cert/--key (clients
verify); it prints its URL, echoes over wss://, and stops cleanly on SIGTERM and SIGINT."""
from __future__ import annotations

import os
import signal
import ssl
import struct
import subprocess
import sys
from typing import Any, Callable, List

import pytest
import websocket
from websocket import ABNF

import pyws
from _pki import Pki, make_pki
from conftest import PKG_PARENT, ROOT, ExampleProcess

RunExample = Callable[..., ExampleProcess]
EXAMPLE = os.path.join(ROOT, "examples", "wss_echo.py")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def head_lines(ep: ExampleProcess, until: str, limit: int = 10) -> List[str]:
    """The program's first output lines, up to the one containing ``until``."""
    assert ep.proc.stdout is not None
    lines: List[str] = []
    for _ in range(limit):
        line = ep.proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if until in line:
            return lines
    raise AssertionError(f"no line with {until!r} in {lines}")


def stop_with(ep: ExampleProcess, sig: int, clients: List[websocket.WebSocket]) -> str:
    ep.proc.send_signal(sig)
    for ws in clients:
        for _ in range(100):
            op, frame = ws.recv_data_frame(True)
            if op == ABNF.OPCODE_CLOSE:
                assert struct.unpack("!H", frame.data[:2])[0] == 1001
                break
        else:
            raise AssertionError("no close frame")
        ws.shutdown()
    ep.proc.wait(10)
    out = ep.stop()
    assert ep.proc.returncode == 0, out
    return out


def test_throwaway_certificate(run_example: RunExample) -> None:
    ep = run_example("wss_echo.py")
    lines = head_lines(ep, "wss://")
    assert any("throwaway self-signed certificate" in line for line in lines), lines
    assert lines[-1].startswith(f"wss echo server on wss://127.0.0.1:{ep.port}/"), lines
    url = f"wss://localhost:{ep.port}/"
    # verifying clients refuse the throwaway certificate...
    with pytest.raises(pyws.TlsError) as ei:
        pyws.connect(url, timeout=5)
    assert "self-signed certificate" in str(ei.value) or "self signed" in str(ei.value)
    # ... the loudly named option lets them through
    insecure = pyws.TlsOpts(insecure_skip_verify=True)
    with pyws.connect(url, timeout=5, tls=insecure, max_size=8 * 1024 * 1024) as ws:
        ws.send("hello over wss")
        assert ws.recv().text == "hello over wss"
        big = os.urandom(3 * 1024 * 1024)
        ws.send(big)
        assert ws.recv().data == big
        assert ws.tls_info is not None
    with pyws.connect(f"wss://127.0.0.1:{ep.port}/any/path", timeout=5, tls=insecure) as ws:
        ws.send(b"\x00\x01")
        assert ws.recv().data == b"\x00\x01"
    wsc = websocket.create_connection(url, timeout=5, sslopt={"cert_reqs": ssl.CERT_NONE})
    wsc.send("websocket-client")
    assert wsc.recv() == "websocket-client"
    out = stop_with(ep, signal.SIGTERM, [wsc])
    assert "stopped" in out


def test_certificate_from_files(run_example: RunExample, pki: Pki) -> None:
    ep = run_example("wss_echo.py", "--cert", pki.server_cert, "--key", pki.server_key)
    lines = head_lines(ep, "wss://")
    assert not any("throwaway" in line for line in lines), lines
    url = f"wss://localhost:{ep.port}/"
    with pyws.connect(url, timeout=5, tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        ws.send("verified")
        assert ws.recv().text == "verified"
    wsc = websocket.create_connection(url, timeout=5, sslopt={"ca_certs": pki.ca_cert})
    wsc.send("verified too")
    assert wsc.recv() == "verified too"
    out = stop_with(ep, signal.SIGINT, [wsc])
    assert "stopped" in out


def _run(*args: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, EXAMPLE, "--port", "0", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_bad_arguments(pki: Pki, tmp_path: Any) -> None:
    r = _run("--cert", pki.server_cert)
    assert r.returncode == 2 and "--cert and --key go together" in r.stderr
    missing = str(tmp_path / "missing.pem")
    r = _run("--cert", missing, "--key", pki.server_key)
    assert r.returncode == 1 and missing in r.stderr
    r = _run("--cert", pki.server_cert, "--key", pki.client_key)
    assert r.returncode == 1 and "private key" in r.stderr
