"""The one thin layer over the cffi module: the ``ffi``/``lib`` objects and turning C result
codes into exceptions. Everything else in pyws talks to C through this module."""
from __future__ import annotations

from typing import Any, Callable, Dict, NoReturn, Optional

try:
    from ._pyws import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pyws's C extension (pyws._pyws) is not built. Install the package with "
        "`pip install .` (or `pip install -e .` in a checkout), which compiles csrc/ with cffi; "
        "it needs a C compiler and the Python headers."
    ) from exc

from .errors import (ConnectionClosed, HandshakeError, LimitExceeded, PyWSError, TlsError,
                     closed_error)

__all__ = ["ffi", "lib", "last_error", "raise_for", "failure", "NULL"]

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
        raise closed_error(close_code if close_code is not None else 1006, close_reason)
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


# What a failure the C core reports as a code (an EV_ERROR event's code, or a connect's result)
# raises in Python: the one table, so that no decision depends on the wording of a message.
_FAILURES: Dict[int, Callable[[str], Exception]] = {
    lib.PYWS_ERR_REFUSED: ConnectionRefusedError,
    lib.PYWS_ERR_TIMEOUT: TimeoutError,
    lib.PYWS_ERR_DNS: ConnectionError,
    lib.PYWS_ERR_SYS: ConnectionError,
    lib.PYWS_ERR_TLS: TlsError,
    lib.PYWS_ERR_HANDSHAKE: HandshakeError,
    lib.PYWS_ERR_LIMIT: lambda text: LimitExceeded(1008, text),
    lib.PYWS_ERR_NOMEM: MemoryError,
}


def failure(code: int, text: str) -> Exception:
    """The exception for a failure the C core reported with ``code`` (PYWS_ERR_*) and
    ``text``: ConnectionRefusedError, TimeoutError, ConnectionError (DNS or another connect
    failure), TlsError, HandshakeError, LimitExceeded, MemoryError, else PyWSError."""
    make = _FAILURES.get(code)
    return make(text) if make is not None else PyWSError(f"{text} ({code})")
