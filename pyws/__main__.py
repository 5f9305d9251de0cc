"""``python -m pyws module:attribute [--host H] [--port P] [--workers N] [--broker URL]``

Runs an App from an importable module: ``attribute`` is a :class:`pyws.App`, or a function
that takes no argument and returns one (called once, before the workers fork). ``--broker``
shares its topics through Redis (``redis://host:port/db``, ``rediss://`` for TLS), replacing
any broker the App was made with. SIGTERM/SIGINT stop it gracefully (1001 to every client).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, List, Optional

from .app import App


def load(target: str) -> App:
    """Import ``module:attribute`` and return the App it names (calling a factory)."""
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise SystemExit(f"pyws: {target!r}: write module:attribute, e.g. chat:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` users expect: modules of this folder
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SystemExit(f"pyws: cannot import {mod_name!r}: {exc}") from exc
    obj: Any = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise SystemExit(f"pyws: module {mod_name!r} has no attribute {attr!r}") from exc
    if not isinstance(obj, App) and callable(obj):
        obj = obj()
    if not isinstance(obj, App):
        raise SystemExit(f"pyws: {target} is a {type(obj).__name__}, not a pyws.App (or a "
                         "function returning one)")
    return obj


def main(argv: Optional[List[str]] = None) -> int:
    """The command line (see the module's text)."""
    p = argparse.ArgumentParser(prog="python -m pyws", description="Run a pyws App.")
    p.add_argument("app", help="module:attribute of a pyws.App (or of a function making one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000; 0 picks one)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument("--broker", default=None, help="Redis URL shared by workers and machines")
    p.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    app = load(args.app)
    if args.broker:
        app.use_broker(args.broker)

    def started(lst: Any) -> None:
        logging.getLogger("pyws").info("serving on %s:%d", args.host, lst.port)

    app.run(args.host, args.port, workers=args.workers, on_start=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
