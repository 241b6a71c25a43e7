"""The wss listener's TLS context: TLS 1.2 or newer, forward-secret AEAD ciphers and Mozilla's
intermediate key-exchange groups by default, session resumption, and a certificate that is
refused when out of its validity period, warned about before it expires, and that SIGHUP
reloads without touching established connections."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from chatd.config import ConfigError, TLSConfig

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
# Warn (in the log, at start and on reload) when the certificate has less than this left.
EXPIRY_WARNING = timedelta(days=14)


def server_options(tls: TLSConfig, source: str, now: datetime) -> CertificateOptions:
    """Build the context from the configured PEM files; problems are `ConfigError`s.

    `now` decides whether the certificate is valid: one that has expired, or is not valid
    yet, is refused (browsers would refuse it anyway, with a page users cannot get past).
    """

    def problem(key: str, what: str) -> ConfigError:
        return ConfigError(source, "tls", key, what)

    certificates = _read_certificates(tls.certificate, problem("certificate", "no PEM certificate"))
    leaf = certificates[0]
    if now >= leaf.not_valid_after_utc:
        raise problem("certificate", f"expired on {_when(leaf.not_valid_after_utc)}")
    if now < leaf.not_valid_before_utc:
        raise problem("certificate", f"not valid until {_when(leaf.not_valid_before_utc)}")
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
        # A returning client resumes its session (an abbreviated handshake) from the
        # context's in-memory cache (OpenSSL's default: 20k sessions, TLS 1.2 ones kept 5
        # minutes). Stateless tickets stay off (Twisted's default), so no ticket key
        # outlives the context: none to rotate, none to leak.
        enableSessions=True,
    )
    try:
        context = options.getContext()  # checks that the key matches the certificate, now
    except SSL.Error as error:
        raise problem("key", f"does not match the certificate ({error})") from None
    _set_groups(context, tls.groups, problem)
    return options


def _set_groups(context: SSL.Context, groups: tuple[str, ...], problem) -> None:
    """The key-exchange groups offered, in order of preference (OpenSSL's
    SSL_CTX_set1_groups_list; pyOpenSSL has no method for it, so its binding is used, as
    Twisted does for ECDH)."""
    for group in groups:  # one at a time first, to name the one OpenSSL does not know
        probe = SSL.Context(SSL.TLS_METHOD)
        if not _openssl.SSL_CTX_set1_curves_list(probe._context, group.encode()):
            _openssl.ERR_clear_error()
            raise problem("groups", f"OpenSSL does not know the group {group!r}")
    if not _openssl.SSL_CTX_set1_curves_list(context._context, ":".join(groups).encode()):
        _openssl.ERR_clear_error()
        raise problem("groups", f"OpenSSL refused {' '.join(groups)!r}")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


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

    def __init__(self, build: Callable[[datetime], CertificateOptions], clock):
        self._build = build
        self._clock = clock
        self._options = build(self._now())
        self._warn_if_expiring()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    @property
    def not_after(self) -> datetime:
        """When the certificate being served expires."""
        return self._options.certificate.not_valid_after_utc

    def getContext(self):
        return self._options.getContext()

    def _warn_if_expiring(self) -> None:
        left = self.not_after - self._now()
        if left < EXPIRY_WARNING:
            self._log.warn(
                "TLS certificate {subject} expires in {days} days, on {expiry}:"
                " renew it and reload (SIGHUP)",
                subject=self._options.certificate.subject.rfc4514_string(),
                days=left.days,
                expiry=_when(self.not_after),
            )

    def reload(self) -> bool:
        """Rebuild from the files; on any problem keep serving the old certificate."""
        try:
            options = self._build(self._now())
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
        self._warn_if_expiring()
        return True
