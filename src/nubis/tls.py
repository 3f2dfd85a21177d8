"""TLS for ``nubis serve``: the operator's certificate and key (settings
``tls_cert_file``/``tls_key_file``), or a self-signed one made on the first run in
``<data_dir>/tls`` and kept. Clients trust it by its file (a CA file) or by its
SHA-256 fingerprint, which ``nubis serve`` prints and ``nubis server fingerprint``
shows; nothing here needs "insecure" clients.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nubis.files import write_atomically

VALID_DAYS = 825  # what browsers accept of a certificate's lifetime


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_file.read_bytes())


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate (DER), as colon-separated hex pairs."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(a: str, b: str) -> bool:
    """Fingerprints compared whatever their separators and case."""

    def norm(value: str) -> str:
        return value.replace(":", "").replace(" ", "").lower()

    return norm(a) == norm(b)


def _names(extra: list[str], listen_host: str) -> list[x509.GeneralName]:
    """The names a client may reach the server by: this machine's, loopback's, the
    listen address, and any the operator added (``tls_names``)."""
    wanted = ["localhost", socket.gethostname(), "127.0.0.1", "::1", *extra]
    if listen_host not in ("0.0.0.0", "::", ""):
        wanted.append(listen_host)
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys(wanted):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


def make_self_signed(directory: Path, names: list[str], listen_host: str) -> ServerCertificate:
    """A new EC P-256 key and a self-signed certificate for it in ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Nubis on {socket.gethostname()}"[:64])]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(names, listen_host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    # the key first, the certificate last: a certificate on disk means both are whole
    write_atomically(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomically(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ServerCertificate(cert_file, key_file)


def server_certificate(
    data_dir: Path,
    cert_file: Path | None,
    key_file: Path | None,
    names: list[str],
    listen_host: str,
) -> ServerCertificate:
    """The operator's certificate, else the one made on the first run (made now)."""
    if cert_file is not None or key_file is not None:
        if cert_file is None or key_file is None:
            raise ValueError("tls_cert_file and tls_key_file go together")
        return ServerCertificate(cert_file, key_file)
    made = ServerCertificate(data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem")
    if made.cert_file.exists() and made.key_file.exists():
        return made
    return make_self_signed(data_dir / "tls", names, listen_host)
