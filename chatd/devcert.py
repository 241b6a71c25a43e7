"""A self-signed certificate for localhost, so that wss works out of the box for a newcomer.

Used only when `[tls] certificate` is not set. The files are kept and reused until they are
close to expiry, so a browser exception or a `--cacert` keeps working across restarts.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERTIFICATE = "localhost.pem"
KEY = "localhost-key.pem"
VALIDITY = timedelta(days=90)
RENEW_BEFORE = timedelta(days=7)


def ensure_dev_certificate(directory: Path, now: datetime) -> tuple[Path, Path, bool]:
    """(certificate, key, created): reuse the pair in `directory` or write a new one."""
    certificate_path, key_path = directory / CERTIFICATE, directory / KEY
    if _still_valid(certificate_path, key_path, now):
        return certificate_path, key_path, False
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatd development (localhost)")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, 0o600)
    _write(certificate_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate_path, key_path, True


def _still_valid(certificate_path: Path, key_path: Path, now: datetime) -> bool:
    if not (certificate_path.is_file() and key_path.is_file()):
        return False
    try:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    except ValueError:
        return False
    return certificate.not_valid_after_utc - RENEW_BEFORE > now.astimezone(UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
