"""An honest public C API: the built extension exports its module entry point only; every
public function is declared in csrc/pyws.h with the pyws_ prefix; the engine's internal
functions carry pw_ instead, so the two can never be mixed up (pyws_ws_connect is public,
pw_ws_input internal)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pyws
from pyws import _pyws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
NM = shutil.which("nm")


def header_functions() -> set:
    text = open(os.path.join(CSRC, "pyws.h"), encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text)) - {"sizeof"}


def defined_functions() -> set:
    """Names of the functions defined (not static) in the engine's sources."""
    names = set()
    for path in glob.glob(os.path.join(CSRC, "*.c")):
        text = re.sub(r"/\*.*?\*/", " ", open(path, encoding="utf-8").read(), flags=re.S)
        for m in re.finditer(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*\{",
                             text, flags=re.M):
            names.add(m.group(1))
    return names


def test_public_functions_carry_the_prefix() -> None:
    public = header_functions()
    assert public and all(n.startswith("pyws_") for n in public), \
        sorted(n for n in public if not n.startswith("pyws_"))


def test_internal_functions_carry_another_prefix() -> None:
    public = header_functions()
    internal = defined_functions() - public
    assert internal, "no internal functions found: the scan is broken"
    wrong = sorted(n for n in internal if not n.startswith("pw_"))
    assert wrong == [], f"internal functions need the pw_ prefix (or a declaration in pyws.h): {wrong}"


def test_the_extension_exports_only_its_entry_point() -> None:
    assert NM is not None, "nm (binutils, installed with the C compiler) is needed"
    so = _pyws.__file__
    out = subprocess.run([NM, "-D", "--defined-only", so], capture_output=True, text=True,
                         check=True).stdout
    exported = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert exported == ["PyInit__pyws"], exported[:20]
    assert pyws.backend()  # and the module still works
