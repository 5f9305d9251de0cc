"""The pyws side of `make conformance` (scripts/conformance drives it through scripts/autobahn).

    python scripts/conformance_peer.py cert DIR
        writes DIR/cert.pem and DIR/key.pem: a throwaway self-signed RSA certificate for
        localhost and 127.0.0.1 (RSA because the suite's pyOpenSSL is old)
    python scripts/conformance_peer.py server --style S --port P [--cert C --key K]
        an echo server (every message back unchanged, on every path) written in handler
        style S: callback (Manager + handler(conn, ev, data)), generator (App, `yield ws.recv()`),
        async (App.serve inside asyncio, `async for msg in ws`), threads (App, a plain def
        handler on a thread; only where pyws has the blocking driver). With --cert/--key it
        serves wss://.
    python scripts/conformance_peer.py client --style S --url URL --agent A [--ca C]
        the Autobahn client testee: examples/autobahn_client.py (S = blocking: pyws.connect)
        or examples/autobahn_aclient.py (S = async: pyws.aconnect), each connection made with
        TlsOpts(ca=C) when --ca is given.

Limits as in examples/echo_server.py: messages up to 64 MiB, write_limit 256 MiB. SIGTERM
(scripts/autobahn's cleanup) ends a server.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import importlib.util
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyws

MAX_SIZE = 64 * 1024 * 1024
LIMITS = dict(max_message_size=MAX_SIZE, write_limit=4 * MAX_SIZE)
ROOT = Path(__file__).resolve().parent.parent


def write_cert(outdir: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    sans: List[Any] = [x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (outdir / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))


def has_threads() -> bool:
    """Whether this pyws runs plain def WebSocket handlers on threads (App(threads=N)).
    (Not find_spec("pyws.threaded"): an editable install can add another tree to pyws's path.)"""
    return hasattr(pyws, "ThreadedWebSocket")


def make_app(style: str) -> pyws.App:
    opts: Dict[str, Any] = dict(LIMITS)
    if style == "threads":  # one thread per open connection; PYWS_THREADS raises the pool
        opts["threads"] = int(os.environ.get("PYWS_THREADS", "128"))
    app = pyws.App(**opts)
    if style == "generator":
        @app.websocket("/")
        @app.websocket("/{path:path}")
        def echo(ws: pyws.WebSocket) -> Any:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    return
                ws.send(msg)
    elif style == "async":
        @app.websocket("/")
        @app.websocket("/{path:path}")
        async def aecho(ws: Any) -> None:
            async for msg in ws:
                await ws.send(msg)
    elif style == "threads":
        @app.websocket("/")
        @app.websocket("/{path:path}")
        def techo(ws: Any) -> None:  # a plain def: runs on one of the App's threads
            while True:
                msg = ws.recv()
                if msg is None:
                    return
                ws.send(msg)
    else:
        raise SystemExit(f"unknown style {style!r}")
    return app


def serve(style: str, port: int, tls: Optional[pyws.TlsOpts]) -> None:
    scheme = "wss" if tls else "ws"

    def started(lst: pyws.Listener) -> None:
        print(f"{style} echo server on {scheme}://127.0.0.1:{lst.port}/ (pyws from "
              f"{Path(pyws.__file__).parent})", flush=True)

    if style == "callback":
        def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
            if ev == pyws.EV_WS_MSG:
                conn.ws_send(data.data, data.opcode)
            elif ev == pyws.EV_HTTP_MSG:
                if data.is_websocket_upgrade:
                    conn.ws_upgrade(data)
                else:
                    conn.reply(200, "pyws echo\n")

        stop: List[int] = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        with pyws.Manager(handler, **LIMITS) as mgr:  # type: ignore[arg-type]
            lst = mgr.listen(f"{'https' if tls else 'http'}://127.0.0.1:{port}", tls=tls)
            started(lst)
            while not stop:
                mgr.poll(200)
        return
    if style == "threads" and not has_threads():
        raise SystemExit("this pyws has no blocking (threads) handler style")
    app = make_app(style)
    if style == "async":
        async def main() -> None:
            task = asyncio.ensure_future(app.serve("127.0.0.1", port, tls=tls, on_start=started,
                                                   shutdown_timeout=2.0))
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                pass
        asyncio.run(main())
    else:
        app.run("127.0.0.1", port, tls=tls, on_start=started, shutdown_timeout=2.0)


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def client(style: str, url: str, agent: str, ca: Optional[str]) -> int:
    mod = load_example("autobahn_client" if style == "blocking" else "autobahn_aclient")
    if ca:  # the examples call pyws.connect / pyws.aconnect: give each call the CA
        opts = pyws.TlsOpts(ca=ca)
        tls_pyws = type(sys)("pyws_tls")
        tls_pyws.__dict__.update(vars(pyws))
        tls_pyws.connect = functools.partial(pyws.connect, tls=opts)  # type: ignore[attr-defined]
        tls_pyws.aconnect = functools.partial(pyws.aconnect, tls=opts)  # type: ignore[attr-defined]
        mod.pyws = tls_pyws
    sys.argv = [f"{mod.__name__}.py", "--url", url, "--agent", agent, "--timeout", "60"]
    return int(mod.main())


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cert")
    c.add_argument("dir")
    s = sub.add_parser("server")
    s.add_argument("--style", required=True,
                   choices=["callback", "generator", "async", "threads"])
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert")
    s.add_argument("--key")
    k = sub.add_parser("client")
    k.add_argument("--style", required=True, choices=["blocking", "async"])
    k.add_argument("--url", required=True)
    k.add_argument("--agent", required=True)
    k.add_argument("--ca")
    sub.add_parser("has-threads")
    args = ap.parse_args()
    if args.cmd == "cert":
        write_cert(Path(args.dir))
    elif args.cmd == "server":
        tls = pyws.TlsOpts(cert=args.cert, key=args.key) if args.cert else None
        serve(args.style, args.port, tls)
    elif args.cmd == "client":
        return client(args.style, args.url, args.agent, args.ca)
    elif args.cmd == "has-threads":
        return 0 if has_threads() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
