"""The sdist carries every C source and builds into a working wheel: what `pip install .` on a
fresh machine relies on."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sdist_carries_sources_and_builds_a_wheel(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    sdists = glob.glob(str(tmp_path / "pyws-*.tar.gz"))
    assert len(sdists) == 1
    with tarfile.open(sdists[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    c_sources = {f"csrc/{p.name}" for p in (ROOT / "csrc").glob("*.[ch]")}
    assert c_sources and c_sources <= names, sorted(c_sources - names)
    for required in ("build_ffi.py", "setup.py", "pyproject.toml", "pyws/__init__.py",
                     "pyws/py.typed", "pyws/_pyws.pyi"):
        assert required in names

    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheel_dir), sdists[0]], check=True, capture_output=True, timeout=300)
    wheels = glob.glob(str(wheel_dir / "pyws-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        members = zf.namelist()
        zf.extractall(tmp_path / "site")
    assert any(m.startswith("pyws/_pyws") and m.endswith(".so") for m in members)
    assert "pyws/py.typed" in members

    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c",
                          "import pyws, os; print(pyws.backend(), os.path.dirname(pyws.__file__))"],
                         check=True, capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=60)
    backend, where = out.stdout.split()
    assert backend in ("epoll", "poll", "kqueue")
    assert where.startswith(str(tmp_path / "site"))
