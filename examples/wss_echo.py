"""Echo server over TLS (wss://): every text or binary message comes back unchanged.

    python examples/wss_echo.py --host 127.0.0.1 --port 8443 --cert server.pem --key server.key

--cert and --key are PEM files (the certificate may be followed by its chain). Without them the
server makes a throwaway self-signed certificate for localhost, 127.0.0.1, ::1 and --host (with
the `cryptography` package) and says so; clients must then skip verification, for example
``pyws.connect(url, tls=pyws.TlsOpts(insecure_skip_verify=True))`` -- for trying things out
only. SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with 1001 and exits.

A client that verifies against your CA:

    import pyws
    with pyws.connect("wss://localhost:8443/", tls=pyws.TlsOpts(ca="ca.pem")) as ws:
        ws.send("hello")
        print(ws.recv().text, ws.tls_info)
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from typing import Any, List, Tuple

import pyws


def throwaway_certificate(host: str) -> Tuple[bytes, bytes]:
    """A self-signed certificate (and its key, PEM) valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    sans: List[Any] = [x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                       x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        ip = ipaddress.ip_address(host)
        if ip not in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")) and \
                not ip.is_unspecified:
            sans.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_app(max_size: int) -> pyws.App:
    app = pyws.App(max_message_size=max_size, write_limit=max(4 * max_size, 64 * 1024 * 1024))

    @app.websocket("/")
    @app.websocket("/{path:path}")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)

    @app.route("/")
    def index(request: pyws.Request) -> pyws.Response:
        return pyws.Response("pyws wss echo server: connect with a WebSocket client\n",
                             content_type="text/plain; charset=utf-8")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--cert", help="certificate (chain), PEM file")
    ap.add_argument("--key", help="its private key, PEM file")
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    args = ap.parse_args()
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key go together")
    try:
        if args.cert:
            tls = pyws.TlsOpts(cert=args.cert, key=args.key)
        else:
            cert, key = throwaway_certificate(args.host)
            tls = pyws.TlsOpts(cert=cert, key=key)
            print("no --cert/--key: made a throwaway self-signed certificate for localhost "
                  "(clients must skip verification: for testing only)", flush=True)
    except ImportError:
        sys.exit("without --cert/--key this example needs the `cryptography` package")
    except pyws.TlsError as exc:
        sys.exit(f"wss_echo: {exc}")
    app = make_app(args.max_size)
    host = f"[{args.host}]" if ":" in args.host else args.host

    def started(lst: pyws.Listener) -> None:
        print(f"wss echo server on wss://{host}:{lst.port}/ ({app.mgr.backend})", flush=True)

    try:
        app.run(args.host, args.port, tls=tls, on_start=started, shutdown_timeout=2.0)
    except pyws.TlsError as exc:  # the certificate and key do not go together
        sys.exit(f"wss_echo: {exc}")
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
