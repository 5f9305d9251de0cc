"""Every Python code block in docs/*.md runs here, so the guides cannot drift from the library.

The convention, for whoever writes docs:

- A block fenced ```` ```python ```` is a whole program. It runs on its own, in a fresh
  interpreter (``python -W error -W always::ResourceWarning``, the pyws under test on its path,
  an empty temporary directory as cwd), and must exit 0 within 30 seconds with nothing on
  stderr: no traceback, no warning, no "Task was destroyed but it is pending". So a runnable
  block keeps itself bounded: servers listen on 127.0.0.1 port 0 (``on_start`` gives the
  port), a client connects, exchanges a message or two and closes, and the server task is
  cancelled and awaited.
- A block fenced ```` ```python no-run ```` is a fragment (it uses names it does not define,
  or serves forever on a fixed port). It is only compiled (top-level ``await`` allowed), so a
  syntax error still fails.
- A block fenced ```` ```output ```` right after a runnable block is what that program must
  print on stdout (compared line by line, trailing spaces ignored).
- Any other fence whose info string starts with ``py`` (```` ```py ````, ```` ```python3 ````,
  ```` ```python skip ````) is an error here, so that no block is skipped by a typo.

Files without Python blocks (docs/architecture.md) are simply not collected.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

import pyws

DOCS = Path(__file__).resolve().parent.parent / "docs"
PKG_PARENT = Path(pyws.__file__).resolve().parent.parent
TIMEOUT = 30.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`\n]*)$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str
    output: Optional[str] = None

    @property
    def runnable(self) -> bool:
        return self.info == "python"

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> List[Block]:
    """The fenced blocks of one Markdown file, with each ```output attached to the block
    before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, ticks, info = i, m.group("ticks"), m.group("info").strip()
        body: List[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        code = textwrap.dedent("\n".join(body)) + "\n"
        if info == "output" and found and found[-1].runnable and found[-1].output is None:
            found[-1].output = code
        else:
            found.append(Block(path, start + 1, info, code))
    return found


def python_blocks() -> List[Block]:
    return [b for p in sorted(DOCS.glob("*.md")) for b in blocks(p)
            if b.info.split(" ")[0].startswith("py")]


ALL = python_blocks()


def test_docs_have_blocks_and_use_known_fences() -> None:
    assert ALL, "no Python blocks found in docs/"
    bad = [f"{b}: ```{b.info}" for b in ALL if b.info not in ("python", "python no-run")]
    assert not bad, "unknown Python fences (use ```python or ```python no-run): " + \
        ", ".join(bad)


@pytest.mark.parametrize("block", [b for b in ALL if b.info == "python no-run"], ids=str)
def test_fragment_compiles(block: Block) -> None:
    compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True)


@pytest.mark.parametrize("block", [b for b in ALL if b.runnable], ids=str)
def test_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_PARENT)] +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("PYTHONASYNCIODEBUG", None)
    try:
        r = subprocess.run([sys.executable, "-W", "error", "-W", "always::ResourceWarning",
                            str(script)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block} did not finish within {TIMEOUT} s:\n{exc.stdout!r}\n{exc.stderr!r}")
    where = f"{block} (exit {r.returncode})\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
    assert r.returncode == 0, where
    assert r.stderr == "", where
    if block.output is not None:
        got = [ln.rstrip() for ln in r.stdout.rstrip("\n").splitlines()]
        want = [ln.rstrip() for ln in block.output.rstrip("\n").splitlines()]
        assert got == want, where
