"""The one thin layer over the cffi module: the ``ffi``/``lib`` objects and turning C result
codes into exceptions. Everything else in pyws talks to C through this module."""
from __future__ import annotations

from typing import Any, NoReturn, Optional

try:
    from ._pyws import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pyws's C extension (pyws._pyws) is not built. Install the package with "
        "`pip install .` (or `pip install -e .` in a checkout), which compiles csrc/ with cffi; "
        "it needs a C compiler and the Python headers."
    ) from exc

from .errors import ConnectionClosed, HandshakeError, LimitExceeded, PyWSError

__all__ = ["ffi", "lib", "last_error", "raise_for", "NULL"]

NULL: Any = ffi.NULL


def last_error(loop: Any) -> str:
    """The C core's description of the last failure on ``loop``."""
    if loop is None or loop == ffi.NULL:
        return ""
    return str(ffi.string(lib.pyws_last_error(loop)).decode("utf-8", "replace"))


def raise_for(rc: int, loop: Any, what: str, close_code: Optional[int] = None,
              close_reason: str = "") -> NoReturn:
    """Raise the exception that C result code ``rc`` (< 0) stands for."""
    detail = last_error(loop)
    if rc in (lib.PYWS_ERR_CLOSED, lib.PYWS_ERR_BADID):
        raise ConnectionClosed(close_code if close_code is not None else 1006, close_reason)
    if rc == lib.PYWS_ERR_LIMIT:
        raise LimitExceeded(1008, detail or "write buffer limit exceeded")
    if rc == lib.PYWS_ERR_HANDSHAKE:
        raise HandshakeError(detail or f"{what}: not a valid WebSocket upgrade request")
    if rc in (lib.PYWS_ERR_ARG, lib.PYWS_ERR_PROTOCOL):
        raise ValueError(f"{what}: {detail}" if detail else what)
    if rc == lib.PYWS_ERR_STATE:
        raise PyWSError(f"{what}: {detail}" if detail else f"{what}: not allowed in this state")
    if rc == lib.PYWS_ERR_NOMEM:
        raise MemoryError(what)
    raise PyWSError(f"{what} failed ({rc}): {detail}")
