import contextlib
import ssl
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl
from twisted.internet.task import Clock

from chatd import devcert
from chatd.config import ConfigError, load_config
from chatd.tls import ReloadableContextFactory, server_options

SOURCE = "chatd.ini"
NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_config(tmp_path: Path, leaf: trustme.LeafCert, *, chain_apart: bool = False, **extra):
    """Write `leaf` as PEM files and return the [tls] section that names them."""
    pems = leaf.cert_chain_pems
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_pem.write_to_path(key)
    if chain_apart:
        pems[0].write_to_path(certificate)
        chain = tmp_path / "chain.pem"
        for pem in pems[1:]:
            pem.write_to_path(chain, append=True)
    else:
        for pem in pems:
            pem.write_to_path(certificate, append=True)
        chain = None
    return replace(load_config(None).tls, certificate=certificate, key=key, chain=chain, **extra)


def clock_at(moment: datetime) -> Clock:
    clock = Clock()
    clock.advance(moment.timestamp())
    return clock


def config_error(tls) -> str:
    with pytest.raises(ConfigError) as caught:
        server_options(tls, SOURCE, NOW)
    return str(caught.value)


def _move(source: SSL.Connection, target: SSL.Connection) -> bool:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return False
    target.bio_write(data)
    return True


def handshake(server_context: SSL.Context, client_context: SSL.Context) -> SSL.Connection:
    """A TLS handshake over memory BIOs; returns the client side, or raises SSL.Error."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(b"localhost")
    done: set[str] = set()
    for _ in range(50):
        for name, connection in (("client", client), ("server", server)):
            if name not in done:
                try:
                    connection.do_handshake()
                    done.add(name)
                except SSL.WantReadError:
                    pass
        moved = _move(client, server) | _move(server, client)
        if len(done) == 2 and not moved:
            return client
    raise AssertionError("the handshake did not finish")


def client_context(trusting: trustme.CA | None = None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if trusting is not None:
        trusting.configure_trust(context)
        context.set_verify(SSL.VERIFY_PEER)
    return context


# -- server_options ----------------------------------------------------------------------------


def test_a_ca_issued_certificate_serves_tls_1_2_or_newer(tmp_path, ca):
    options = server_options(tls_config(tmp_path, ca.issue_cert("localhost")), SOURCE, NOW)
    client = handshake(options.getContext(), client_context(trusting=ca))
    assert client.get_protocol_version_name() in {"TLSv1.2", "TLSv1.3"}


def test_key_exchange_without_forward_secrecy_is_refused(tmp_path, ca):
    """An RSA certificate could do RSA key exchange; the cipher list must not allow it."""
    leaf = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    options = server_options(tls_config(tmp_path, leaf), SOURCE, NOW)
    rsa_only = client_context()
    rsa_only.set_max_proto_version(SSL.TLS1_2_VERSION)
    rsa_only.set_cipher_list(b"AES128-GCM-SHA256")
    with pytest.raises(SSL.Error):
        handshake(options.getContext(), rsa_only)


def test_min_version_1_3_refuses_a_tls_1_2_client(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"), min_version="1.3")
    tls_1_2 = client_context()
    tls_1_2.set_max_proto_version(SSL.TLS1_2_VERSION)
    with pytest.raises(SSL.Error):
        handshake(server_options(tls, SOURCE, NOW).getContext(), tls_1_2)


@pytest.mark.parametrize("chain_apart", [False, True], ids=["fullchain", "chain-file"])
def test_intermediates_are_sent_so_clients_trusting_only_the_root_verify(tmp_path, ca, chain_apart):
    leaf = ca.create_child_ca().issue_cert("localhost")
    options = server_options(tls_config(tmp_path, leaf, chain_apart=chain_apart), SOURCE, NOW)
    client = handshake(options.getContext(), client_context(trusting=ca))
    assert len(client.get_peer_cert_chain()) == 2


def test_a_key_that_does_not_match_the_certificate(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"))
    ca.issue_cert("other.example").private_key_pem.write_to_path(tls.key)
    assert config_error(tls).startswith(f"{SOURCE}: [tls] key: does not match the certificate")


def test_a_certificate_file_that_is_not_pem(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"))
    tls.certificate.write_text("hello\n")
    assert config_error(tls) == f"{SOURCE}: [tls] certificate: no PEM certificate"


def test_a_certificate_file_holding_only_a_key(tmp_path, ca):
    leaf = ca.issue_cert("localhost")
    tls = tls_config(tmp_path, leaf)
    leaf.private_key_pem.write_to_path(tls.certificate)
    assert config_error(tls) == f"{SOURCE}: [tls] certificate: no PEM certificate"


def test_a_key_file_that_is_not_pem(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"))
    tls.key.write_text("hello\n")
    assert config_error(tls).startswith(f"{SOURCE}: [tls] key: not an unencrypted PEM private key")


def test_an_encrypted_key(tmp_path, ca):
    leaf = ca.issue_cert("localhost")
    tls = tls_config(tmp_path, leaf)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    tls.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert config_error(tls).startswith(f"{SOURCE}: [tls] key: not an unencrypted PEM private key")


def test_a_chain_file_that_is_not_pem(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"))
    chain = tmp_path / "chain.pem"
    chain.write_text("nothing here\n")
    assert config_error(replace(tls, chain=chain)) == f"{SOURCE}: [tls] chain: no PEM certificate"


def test_ciphers_that_match_nothing(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"), ciphers="NO-SUCH-CIPHER")
    assert config_error(tls).startswith(f"{SOURCE}: [tls] ciphers: no cipher matches")


# -- reload ------------------------------------------------------------------------------------


def served_names(factory: ReloadableContextFactory, ca: trustme.CA) -> list[str]:
    client = handshake(factory.getContext(), client_context(trusting=ca))
    certificate = client.get_peer_certificate(as_cryptography=True)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.DNSName)


def test_reload_serves_the_new_certificate_to_new_connections(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("first.example"))
    factory = ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    assert served_names(factory, ca) == ["first.example"]
    second = ca.issue_cert("second.example")
    tls.certificate.unlink()
    tls.key.unlink()
    second.private_key_pem.write_to_path(tls.key)
    second.cert_chain_pems[0].write_to_path(tls.certificate)
    assert factory.reload() is True
    assert served_names(factory, ca) == ["second.example"]


def test_a_failed_reload_keeps_the_previous_certificate(tmp_path, ca, log_events):
    tls = tls_config(tmp_path, ca.issue_cert("first.example"))
    factory = ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    tls.key.write_text("broken\n")
    assert factory.reload() is False
    assert served_names(factory, ca) == ["first.example"]
    assert any("TLS reload failed" in event["log_format"] for event in log_events)


# -- validity and expiry -----------------------------------------------------------------------


def test_an_expired_certificate_is_refused(tmp_path, ca):
    leaf = ca.issue_cert("localhost", not_after=datetime(2026, 11, 1, 12, 0))
    assert config_error(tls_config(tmp_path, leaf)) == (
        f"{SOURCE}: [tls] certificate: expired on 2026-11-01 12:00:00 UTC"
    )


def test_a_certificate_not_valid_yet_is_refused(tmp_path, ca):
    leaf = ca.issue_cert("localhost", not_before=datetime(2026, 12, 1))
    assert config_error(tls_config(tmp_path, leaf)) == (
        f"{SOURCE}: [tls] certificate: not valid until 2026-12-01 00:00:00 UTC"
    )


def install(tls, leaf: trustme.LeafCert) -> None:
    tls.certificate.write_bytes(leaf.cert_chain_pems[0].bytes())
    tls.key.write_bytes(leaf.private_key_pem.bytes())


def warnings_in(log_events) -> list[str]:
    return [
        event["log_format"]
        for event in log_events
        if event.get("log_level") is not None and event["log_level"].name in ("warn", "error")
    ]


def test_a_reload_to_an_expired_certificate_keeps_the_current_one(tmp_path, ca, log_events):
    tls = tls_config(tmp_path, ca.issue_cert("first.example"))
    factory = ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    install(tls, ca.issue_cert("second.example", not_after=NOW - timedelta(seconds=1)))
    assert factory.reload() is False
    assert served_names(factory, ca) == ["first.example"]
    [line] = warnings_in(log_events)
    assert "TLS reload failed" in line


def test_a_certificate_near_expiry_is_warned_about_at_start_and_reload(tmp_path, ca, log_events):
    tls = tls_config(tmp_path, ca.issue_cert("localhost", not_after=NOW + timedelta(days=13)))
    factory = ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    assert factory.not_after == NOW + timedelta(days=13)
    [at_start] = [event for event in log_events if "expires in" in event.get("log_format", "")]
    assert at_start["days"] == 13 and at_start["log_level"].name == "warn"
    log_events.clear()
    renewed = NOW + timedelta(days=90)
    install(tls, ca.issue_cert("localhost", not_after=renewed))
    assert factory.reload() is True
    assert factory.not_after == renewed
    assert warnings_in(log_events) == []
    install(tls, ca.issue_cert("localhost", not_after=NOW + timedelta(days=2)))
    assert factory.reload() is True
    assert ["expires in" in line for line in warnings_in(log_events)] == [True]


def test_a_certificate_with_time_left_starts_quietly(tmp_path, ca, log_events):
    tls = tls_config(tmp_path, ca.issue_cert("localhost", not_after=NOW + timedelta(days=15)))
    ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    assert warnings_in(log_events) == []


# -- key exchange groups -----------------------------------------------------------------------


def groups_client(groups: bytes | None, maximum=None) -> SSL.Context:
    context = client_context()
    if maximum is not None:
        context.set_max_proto_version(maximum)
    if groups is not None:
        assert _openssl.SSL_CTX_set1_curves_list(context._context, groups)
    return context


@pytest.mark.parametrize("version", [None, SSL.TLS1_2_VERSION], ids=["tls1.3", "tls1.2"])
def test_only_mozillas_intermediate_groups_are_offered(tmp_path, ca, version):
    # RSA: with TLS 1.2 an ECDSA P-256 certificate needs P-256 among the client's groups too
    leaf = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    context = server_options(tls_config(tmp_path, leaf), SOURCE, NOW)
    context = context.getContext()
    assert handshake(context, groups_client(None, version)).get_group_name().lower() == "x25519"
    for group, name in ((b"prime256v1", "secp256r1"), (b"secp384r1", "secp384r1")):
        assert handshake(context, groups_client(group, version)).get_group_name() == name
    for group in (b"X448", b"secp521r1", b"ffdhe2048"):
        with pytest.raises(SSL.Error):
            handshake(context, groups_client(group, version))


def test_groups_are_configurable(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"), groups=("secp384r1",))
    context = server_options(tls, SOURCE, NOW).getContext()
    assert handshake(context, client_context()).get_group_name().lower() == "secp384r1"
    with pytest.raises(SSL.Error):
        handshake(context, groups_client(b"X25519"))


def test_an_unknown_group_is_a_config_error(tmp_path, ca):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"), groups=("X25519", "P-999"))
    assert config_error(tls) == f"{SOURCE}: [tls] groups: OpenSSL does not know the group 'P-999'"


# -- session resumption ------------------------------------------------------------------------


def python_handshake(server_context: SSL.Context, client: ssl.SSLContext, session=None):
    """Python's ssl client (over memory BIOs) against the server context; after the
    handshake, one application byte each way, so TLS 1.3 session tickets arrive."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client.wrap_bio(incoming, outgoing, server_hostname="localhost", session=session)
    for _ in range(50):
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        with contextlib.suppress(SSL.WantReadError):
            server.do_handshake()
        if outgoing.pending:
            server.bio_write(outgoing.read())
        with contextlib.suppress(SSL.WantReadError):
            incoming.write(server.bio_read(65536))
        if tls.version() and server.get_protocol_version_name() != "Unknown":
            break
    server.sendall(b"x")
    incoming.write(server.bio_read(65536))
    assert tls.read(1) == b"x"
    server.shutdown()  # as Twisted closes a connection; OpenSSL forgets a session cut short
    return tls


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_returning_client_resumes_its_session(tmp_path, ca, version):
    tls = tls_config(tmp_path, ca.issue_cert("localhost"))
    factory = ReloadableContextFactory(lambda now: server_options(tls, SOURCE, now), clock_at(NOW))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    client.maximum_version = version
    first = python_handshake(factory.getContext(), client)
    assert first.version() == version.name.replace("_", ".")
    assert not first.session_reused
    second = python_handshake(factory.getContext(), client, session=first.session)
    assert second.session_reused
    assert factory.reload()  # a new context: the old sessions are not resumed with it
    third = python_handshake(factory.getContext(), client, session=first.session)
    assert not third.session_reused


# -- the development certificate ---------------------------------------------------------------


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_certificate_is_created_for_localhost(tmp_path, umask_022):
    directory = tmp_path / "dev-tls"
    certificate, key, created = devcert.ensure_dev_certificate(directory, NOW)
    assert created
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certificate.stat().st_mode) == 0o644
    parsed = read_certificate(certificate)
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert parsed.not_valid_before_utc <= NOW < parsed.not_valid_after_utc


def test_dev_certificate_serves_tls(tmp_path):
    certificate, key, _created = devcert.ensure_dev_certificate(tmp_path, NOW)
    tls = replace(load_config(None).tls, certificate=certificate, key=key)
    client = handshake(server_options(tls, SOURCE, NOW).getContext(), client_context())
    assert client.get_protocol_version_name() in {"TLSv1.2", "TLSv1.3"}


def test_dev_certificate_is_reused_while_valid(tmp_path):
    certificate, _key, _created = devcert.ensure_dev_certificate(tmp_path, NOW)
    serial = read_certificate(certificate).serial_number
    later = NOW + devcert.VALIDITY - devcert.RENEW_BEFORE - timedelta(hours=1)
    assert devcert.ensure_dev_certificate(tmp_path, later)[2] is False
    assert read_certificate(certificate).serial_number == serial


def test_dev_certificate_is_regenerated_near_expiry(tmp_path):
    certificate, _key, _created = devcert.ensure_dev_certificate(tmp_path, NOW)
    serial = read_certificate(certificate).serial_number
    later = NOW + devcert.VALIDITY - devcert.RENEW_BEFORE + timedelta(hours=1)
    assert devcert.ensure_dev_certificate(tmp_path, later)[2] is True
    renewed = read_certificate(certificate)
    assert renewed.serial_number != serial
    assert renewed.not_valid_after_utc > later + devcert.RENEW_BEFORE


def test_an_unreadable_dev_certificate_is_regenerated(tmp_path):
    certificate, _key, _created = devcert.ensure_dev_certificate(tmp_path, NOW)
    certificate.write_text("garbage\n")
    assert devcert.ensure_dev_certificate(tmp_path, NOW)[2] is True
    assert read_certificate(certificate).not_valid_after_utc > NOW
