"""A Python program of the tests in a subprocess, on the pyws build under test, whose output
lines are read as they come: the broker nodes of test_broker.py and the worker supervisors of
test_workers.py."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from typing import List, Match, Optional

from conftest import PKG_PARENT

HERE = os.path.dirname(os.path.abspath(__file__))


class Program:
    """``python argv...`` with stdout and stderr in ``output``; :meth:`expect` waits for a
    line matching a pattern. Use as the base of a test's own process class."""

    def __init__(self, argv: List[str], cwd: str = HERE) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PARENT + os.pathsep + HERE + os.pathsep + \
            env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable] + argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.output: List[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def expect(self, pattern: "re.Pattern[str]", timeout: float = 15.0) -> Match[str]:
        """The next line (not seen by an earlier expect) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m: Optional[Match[str]] = pattern.search(line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern.pattern!r}:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
