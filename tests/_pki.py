"""Certificates made at test time with `cryptography`: a CA, a server certificate for
localhost/127.0.0.1/::1, a client certificate (mutual TLS), and the bad ones (expired,
self-signed, wrong host name). Files are written under a tmp directory; paths come back."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Pki(NamedTuple):
    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    expired_cert: str
    expired_key: str
    selfsigned_cert: str
    selfsigned_key: str
    wronghost_cert: str
    wronghost_key: str


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(cn: str, issuer: Optional[Tuple[Any, Any]] = None, ca: bool = False,
          sans: Optional[List[Any]] = None, days: Tuple[int, int] = (-1, 30),
          client: bool = False) -> Tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """Write a fresh set of certificates into ``directory``."""
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    ca = _cert("pyws test CA", ca=True)
    out = {}

    def write(stem: str, pair: Tuple[Any, Any]) -> None:
        cert, key = pair
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(_key_pem(key))
        out[stem] = (str(directory / f"{stem}.pem"), str(directory / f"{stem}.key"))

    write("ca", ca)
    write("server", _cert("localhost", ca, sans=local))
    write("client", _cert("pyws test client", ca, client=True))
    write("expired", _cert("localhost", ca, sans=local, days=(-30, -1)))
    write("selfsigned", _cert("localhost", None, sans=local))
    write("wronghost", _cert("elsewhere.example", ca,
                             sans=[x509.DNSName("elsewhere.example")]))
    return Pki(out["ca"][0], *out["server"], *out["client"], *out["expired"],
               *out["selfsigned"], *out["wronghost"])
