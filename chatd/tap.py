"""`twistd chatd`: command-line options and the service tree. Never listens by itself.

Modelled on magic-wormhole-mailbox-server's server_tap.py: `makeService` reads the config and
returns a MultiService of listeners around one shared broadcaster; twistd starts it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from chatd import devcert, tls, wire
from chatd.broadcaster import Broadcaster
from chatd.config import Config, ConfigError, ListenerConfig, find_config_file, load_config
from chatd.protocol import ChatServerFactory, prepare_frame
from chatd.transcript import Rotation, TranscriptStore
from chatd.web import build_site

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Run the chatd WebSocket chat daemon. Without --config it reads etc/chatd.ini under"
        " the working directory, else /etc/chatd/chatd.ini, else its embedded defaults."
    )
    optParameters = [  # noqa: RUF012 (twisted.python.usage reads this class attribute)
        ["config", "c", None, "The INI configuration file.", Path],
    ]


class BroadcasterService(Service):
    """Recovers rooms from their transcripts at start; commits and closes them at stop."""

    def __init__(self, broadcaster: Broadcaster):
        self.broadcaster = broadcaster

    def startService(self):
        super().startService()
        self.broadcaster.recover()

    def stopService(self):
        super().stopService()
        self.broadcaster.shutdown()


class ListenerService(Service):
    """Listens in privilegedStartService so that a busy port stops twistd with a clear line."""

    def __init__(self, config: ListenerConfig, endpoint, site, factory: ChatServerFactory):
        self.setName(config.name)
        self._config = config
        self._endpoint = endpoint
        self._site = site
        self._factory = factory
        self._port = None

    def privilegedStartService(self):
        super().privilegedStartService()
        outcome = []
        self._endpoint.listen(self._site).addBoth(outcome.append)
        # TCP and TLS listens complete synchronously; a failure must stop the start.
        if isinstance(outcome[0], Failure):
            raise SystemExit(
                f"chatd: cannot listen for [{self._config.name}] on "
                f"{self._config.interface}:{self._config.port}: {outcome[0].value}"
            )
        self._port = outcome[0]
        address = self._port.getHost()
        url = _listener_url(self._config.name, address.host, address.port)
        self._factory.setSessionParameters(url=url)
        log.info("chatd {listener} listener ready at {url}", listener=self._config.name, url=url)

    def stopService(self):
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()


def _listener_url(scheme: str, host: str, port: int) -> str:
    """The listener's WebSocket URL; port 0 (not yet bound) is left out: Autobahn rejects it."""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}/ws" if port else f"{scheme}://{host}/ws"


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    try:
        return _build(_load(options), reactor)
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def _load(options: Options) -> Config:
    path = options["config"] or find_config_file(Path.cwd())
    if path is None:
        log.info("no etc/chatd.ini or /etc/chatd/chatd.ini: using the embedded defaults")
    return load_config(path)


def _build(config: Config, reactor) -> MultiService:
    rotation = Rotation(
        daily=config.transcripts.rotate == "daily", max_bytes=config.transcripts.rotate_size
    )
    store = TranscriptStore(config.transcripts.directory, rotation)
    try:
        store.prepare()
    except OSError as error:
        raise ConfigError(
            config.source, "transcripts", "directory", f"cannot use {store.directory}: {error}"
        ) from None
    broadcaster = Broadcaster(
        reactor,
        store,
        config.history,
        config.limits,
        fsync=config.transcripts.fsync == "batch",
        prepare=prepare_frame,
    )
    parser = wire.FrameParser(max_text_chars=config.limits.max_text_chars)
    top = MultiService()
    BroadcasterService(broadcaster).setServiceParent(top)
    for listener in config.listeners:
        factory = ChatServerFactory(
            listener.name,
            _listener_url(listener.name, listener.interface, listener.port),
            broadcaster,
            parser,
            config.limits.max_message_bytes,
        )
        if listener.name == "wss":
            endpoint = SSL4ServerEndpoint(
                reactor, listener.port, _tls_options(config), interface=listener.interface
            )
        else:
            endpoint = TCP4ServerEndpoint(reactor, listener.port, interface=listener.interface)
        site = build_site(factory, broadcaster)
        ListenerService(listener, endpoint, site, factory).setServiceParent(top)
    return top


def _tls_options(config: Config):
    if config.tls.certificate is None:
        certificate, key, created = devcert.ensure_dev_certificate(
            config.tls.dev_directory, datetime.now(UTC)
        )
        log.warn(
            "no [tls] certificate configured: wss uses a self-signed development certificate"
            " for localhost ({how} {certificate}); trust it with --cacert or a browser"
            " exception, and configure a real certificate for production",
            how="created" if created else "reusing",
            certificate=str(certificate),
        )
        config = _with_certificate(config, certificate, key)
    return tls.server_options(config.tls, config.source)


def _with_certificate(config: Config, certificate: Path, key: Path) -> Config:
    return replace(config, tls=replace(config.tls, certificate=certificate, key=key))
