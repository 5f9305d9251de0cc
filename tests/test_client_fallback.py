"""A host name with several addresses: when the first refuses, the client tries the next.

The usual /etc/hosts maps localhost to ::1 and 127.0.0.1; a server listening on 127.0.0.1
only must still be reachable as ws://localhost:PORT/. The test gives a subprocess its own
/etc/hosts (a private mount namespace) in which "dualhost" resolves to ::1 first."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PKG_PARENT, ServerThread

SCRIPT = """
import sys, pyws
with pyws.connect(sys.argv[1], timeout=5, open_timeout=5) as ws:
    ws.send("through the second address")
    print(ws.recv().text, ws.remote_addr)
"""


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) for a private /etc/hosts")
def test_next_address_after_a_refused_one(echo_server: ServerThread, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 dualhost\n127.0.0.1 dualhost\n127.0.0.1 localhost\n")
    script = tmp_path / "client.py"
    script.write_text(SCRIPT)
    url = f"ws://dualhost:{echo_server.port}/"
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    cmd = f"mount --bind {hosts} /etc/hosts && exec {sys.executable} {script} {url}"
    r = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    text, addr = r.stdout.strip().rsplit(" ", 1)
    assert text == "through the second address"
    assert addr.startswith("127.0.0.1:")  # ::1 refused (the server listens on IPv4 only)
