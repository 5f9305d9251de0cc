"""TLS options for listeners (``https://`` / ``wss://``) and clients (``wss://``)."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from ._lib import ffi, lib, last_error
from .errors import TlsError

__all__ = ["TlsOpts", "TlsError"]

PemSource = Union[bytes, str, "os.PathLike[str]"]


def _pem(src: Optional[PemSource], what: str) -> Optional[bytes]:
    if src is None:
        return None
    if isinstance(src, bytes):
        return src
    if isinstance(src, str) and src.lstrip().startswith("-----BEGIN"):
        return src.encode("ascii")
    try:
        with open(os.fspath(src), "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} from {src!r}: {exc.strerror}") from exc


class TlsOpts:
    """TLS settings. ``cert`` and ``key``: PEM bytes or str, or a file path (a server needs
    both; a client gives them for mutual TLS). ``ca``: trusted CA certificates (a client uses
    the system's store when None; a server uses it to check client certificates).
    ``verify_client`` (servers): require a client certificate signed by ``ca``.

    Clients verify the server's chain and host name by default; the only way out is the loudly
    named ``insecure_skip_verify=True`` (for tests against self-signed certificates).
    Secure defaults everywhere: TLS 1.2 or newer, OpenSSL's default ciphers, no renegotiation,
    ALPN ``http/1.1``.
    """

    def __init__(self, cert: Optional[PemSource] = None, key: Optional[PemSource] = None,
                 ca: Optional[PemSource] = None, verify_client: bool = False,
                 insecure_skip_verify: bool = False) -> None:
        self.cert = _pem(cert, "certificate")
        self.key = _pem(key, "private key")
        self.ca = _pem(ca, "CA certificates")
        self.verify_client = verify_client
        self.insecure_skip_verify = insecure_skip_verify
        self._ctx: Dict[bool, Any] = {}

    def context(self, server: bool, loop: Any) -> Any:
        """The C context for this role (made once, freed with these options); ``loop`` only
        carries the error text."""
        ctx = self._ctx.get(server)
        if ctx is not None:
            return ctx
        o = ffi.new("pyws_tls_opts *")
        keep = []
        for field, value in (("cert_pem", self.cert), ("key_pem", self.key),
                             ("ca_pem", self.ca)):
            if value is not None:
                buf = ffi.new("char[]", value)
                keep.append(buf)
                setattr(o, field, buf)
                setattr(o, field.replace("_pem", "_len"), len(value))
        o.verify_peer = (1 if self.verify_client else 0) if server else \
            (0 if self.insecure_skip_verify else 1)
        out = ffi.new("pyws_tls_ctx **")
        rc = lib.pyws_tls_ctx_new(loop, 1 if server else 0, o, out)
        if rc < 0:
            raise TlsError(last_error(loop))
        ctx = ffi.gc(out[0], lib.pyws_tls_ctx_free)
        self._ctx[server] = ctx
        return ctx

    def __repr__(self) -> str:
        parts = [name for name, v in (("cert", self.cert), ("key", self.key), ("ca", self.ca))
                 if v is not None]
        if self.verify_client:
            parts.append("verify_client")
        if self.insecure_skip_verify:
            parts.append("INSECURE_SKIP_VERIFY")
        return f"<TlsOpts {' '.join(parts) or 'defaults'}>"
