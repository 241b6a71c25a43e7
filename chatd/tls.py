"""The wss listener's TLS context: TLS 1.2 or newer, forward-secret AEAD ciphers by default,
and a certificate that SIGHUP reloads without touching established connections."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from chatd.config import ConfigError, TLSConfig

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


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
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(tls.ciphers.encode())
    except SSL.Error:
        raise problem("ciphers", f"no cipher matches {tls.ciphers!r}") from None
    options = CertificateOptions(
        privateKey=key,
        certificate=certificates[0],
        extraCertChain=chain,
        raiseMinimumTo=_VERSIONS[tls.min_version],
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers),
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


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """Gives each new TLS connection the current context; `reload()` swaps it.

    Twisted asks its context factory for a context per accepted connection, so established
    connections keep the context they were made with and new ones get the reloaded one.
    """

    _log = Logger()

    def __init__(self, build: Callable[[], CertificateOptions]):
        self._build = build
        self._options = build()

    def getContext(self):
        return self._options.getContext()

    def reload(self) -> bool:
        """Rebuild from the files; on any problem keep serving the old certificate."""
        try:
            options = self._build()
        except (ConfigError, OSError) as error:
            self._log.error(
                "TLS reload failed, still serving the previous certificate: {error}",
                error=str(error),
            )
            return False
        self._options = options
        certificate = options.certificate
        self._log.info(
            "TLS certificate reloaded: {subject}, valid until {expiry}",
            subject=certificate.subject.rfc4514_string(),
            expiry=certificate.not_valid_after_utc.isoformat(),
        )
        return True
