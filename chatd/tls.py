"""The wss listener's TLS context: TLS 1.2 or newer, forward-secret AEAD ciphers only."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

from chatd.config import ConfigError, TLSConfig

# TLS 1.3 suites are all forward-secret AEAD; this string governs TLS 1.2.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_options(tls: TLSConfig, source: str) -> CertificateOptions:
    """Build the context from the configured PEM files; problems are `ConfigError`s."""

    def problem(key: str, what: str) -> ConfigError:
        return ConfigError(source, "tls", key, what)

    certificates = _read_certificates(tls.certificate, problem("certificate", "no PEM certificate"))
    chain = certificates[1:]
    if tls.chain is not None:
        chain += _read_certificates(tls.chain, problem("chain", "no PEM certificate"))
    try:
        key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise problem("key", f"not an unencrypted PEM private key ({error})") from None
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(certificates[0]),
        extraCertChain=[crypto.X509.from_cryptography(cert) for cert in chain],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
    )
    try:
        options.getContext()  # checks that the key matches the certificate, now, not later
    except SSL.Error as error:
        raise problem("key", f"does not match the certificate ({error})") from None
    return options


def _read_certificates(path, empty: ConfigError) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        raise empty from None
    if not certificates:
        raise empty
    return certificates
