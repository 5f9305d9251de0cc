"""Rewrite the results section of docs/conformance.md from scripts/autobahn's summaries.

    python scripts/conformance_report.py build/autobahn docs/conformance.md

Reads every ROLE[-tls]-summary.json under the first argument and replaces what stands between
the `<!-- conformance:begin -->` and `<!-- conformance:end -->` lines of the page with a table of
the case counts by behaviour, one row per role and transport. A role that has no summary is
listed as not run. The rest of the page is left as written.
"""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

BEGIN, END = "<!-- conformance:begin -->", "<!-- conformance:end -->"
ROLES = [  # (summary name, what runs)
    ("server", "server, callback handler (`Manager`, `handler(conn, ev, data)`)"),
    ("server-generator", "server, generator handler (`App`, `yield ws.recv()`)"),
    ("server-async", "server, `async def` handler (`App.serve` in asyncio)"),
    ("server-threads", "server, blocking handler on a thread (`App(threads=)`)"),
    ("client", "client, blocking (`pyws.connect`)"),
    ("client-async", "client, asyncio (`pyws.aconnect`)"),
]
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED"]


def row(name: str, what: str, tls: bool, s: Dict[str, Any], when: str) -> str:
    b = s["behavior"]
    other = sum(n for k, n in b.items() if k not in COLUMNS)
    failed = b.get("FAILED", 0) + other
    close = ", ".join(f"{n} {k}" for k, n in sorted(s["behaviorClose"].items()))
    wall = f"{s['wall_s'] / 60:.1f} min" if "wall_s" in s else "?"
    cells = [what, "wss://" if tls else "ws://", str(s["cases"])] + \
        [str(b.get(c, 0)) for c in COLUMNS[:3]] + [str(failed), close, wall, when]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    outdir, page = Path(sys.argv[1]), Path(sys.argv[2])
    lines: List[str] = [
        BEGIN,
        "| role | transport | cases | OK | NON-STRICT | INFORMATIONAL | FAILED | close behaviour "
        "| wall time | finished (UTC) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    informational: Dict[str, List[str]] = {}
    trees: Dict[str, List[str]] = {}
    bad = False
    missing = []
    for name, what in ROLES:
        for tls in (False, True):
            f = outdir / f"{name}{'-tls' if tls else ''}-summary.json"
            if not f.exists():
                missing.append(f"{name}{' (TLS)' if tls else ''}")
                continue
            s = json.loads(f.read_text())
            label = f"{name}{' (TLS)' if tls else ''}"
            when = s.get("finished") or datetime.datetime.fromtimestamp(
                f.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
            lines.append(row(name, what, tls, s, when))
            key = " ".join(s.get("informational", []))
            informational.setdefault(key, []).append(label)
            bad = bad or bool(s["not_ok"])
            trees.setdefault(s.get("pyws", "?"), []).append(label)
            if s["not_ok"]:
                lines.append(f"| ↳ not OK | | | | | | | {' '.join(s['not_ok'])} | | |")
    lines.append("")
    for cases, agents in informational.items():
        if cases:
            lines.append(f"INFORMATIONAL cases ({', '.join(agents)}): {cases}.")
    if missing:
        lines.append("")
        lines.append("Not run in this report: " + ", ".join(missing) + ".")
    if trees:
        lines.append("")
        for tree, agents in trees.items():
            lines.append(f"pyws under test for {', '.join(agents)}: `{tree}`.")
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h"], capture_output=True,
                                text=True, check=True).stdout.strip()
        lines += ["", f"Scripts: `{commit}`."]
    except (OSError, subprocess.CalledProcessError):
        pass
    lines.append(END)
    text = page.read_text(encoding="utf-8")
    head, sep, rest = text.partition(BEGIN)
    if not sep or END not in rest:
        print(f"{page} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    tail = rest.partition(END)[2]
    page.write_text(head + "\n".join(lines) + tail, encoding="utf-8")
    print(f"wrote the results into {page}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
