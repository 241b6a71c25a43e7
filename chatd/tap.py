"""`twistd chatd`: command-line options and the service tree. Never listens by itself.

Modelled on magic-wormhole-mailbox-server's server_tap.py: `makeService` reads the config and
returns a service tree that twistd starts:

    ChatService (recovers rooms at start; at stop, waits for its children, then closes transcripts)
      ListenerService ws / wss   (at stop: stop accepting, close connections with 1001)
      ListenerService metrics    (when [metrics] serve_on = local)
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet.defer import succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatd import devcert, openfiles, sendnow, tls, wire
from chatd.admission import Admission
from chatd.auth import authenticator_for
from chatd.broadcaster import Broadcaster
from chatd.config import EMBEDDED_DEFAULTS, Config, ConfigError, load_daemon_config
from chatd.metrics import Metrics, MetricsResource
from chatd.protocol import ChatServerFactory, ListenerContext, prepare_frames
from chatd.support import SupportDesk
from chatd.tls import ReloadableContextFactory
from chatd.transcript import Rotation, TranscriptStore
from chatd.web import HealthResource, access_log_line, build_site

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


class ChatService(MultiService):
    """The broadcaster's lifetime around its listeners.

    MultiService stops its children all at once; the transcripts must outlive the connections
    (their leave events are the last lines written), so they are closed only after every child
    has finished stopping.
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        store: TranscriptStore,
        reactor,
        tls: ReloadableContextFactory | None,
    ):
        super().__init__()
        self.broadcaster = broadcaster
        self.store = store
        self._reactor = reactor
        self._tls = tls

    def startService(self):
        self.broadcaster.recover()
        super().startService()
        # After the reactor's own handlers, so that ours are the ones that stay.
        self._reactor.callWhenRunning(self._handle_signals)

    def _handle_signals(self) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT stop gracefully and exit 0 (the reactor's own
        handlers would have twistd re-raise the signal and die by it). Each handler only
        schedules the work, which runs between two reactor iterations."""
        reactor = self._reactor
        signal.signal(signal.SIGHUP, lambda _signum, _frame: reactor.callFromThread(self.reload))
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(
                stop_signal, lambda signum, _frame: reactor.callFromThread(self._stop, signum)
            )

    def _stop(self, signum: int) -> None:
        log.info("{signal}: stopping gracefully", signal=signal.Signals(signum).name)
        self._reactor.stop()

    def reload(self) -> None:
        """SIGHUP: reload the TLS certificate; established connections are not touched."""
        log.info("SIGHUP: reloading")
        if self._tls is not None:
            self._tls.reload()

    def stopService(self):
        stopped = super().stopService()
        stopped.addBoth(lambda _: self.broadcaster.shutdown())
        return stopped

    def readiness(self) -> dict[str, bool]:
        """What /healthz reports: every listener bound, the transcript directory writable."""
        checks = {f"listener_{service.name}": service.listening for service in self}
        checks["transcripts_writable"] = os.access(self.store.directory, os.W_OK | os.X_OK)
        return checks


class ListenerService(Service):
    """Listens in privilegedStartService so that a busy port stops twistd with a clear line."""

    def __init__(
        self,
        name: str,
        endpoint,
        site: Site,
        factory: ChatServerFactory | None,
        where: str,
        shutdown_timeout: float,
        clock,
        origins: tuple[str, ...] = (),
    ):
        self.setName(name)
        self._origins = origins
        self._endpoint = endpoint
        self._site = site
        self._factory = factory
        self._where = where
        self._shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._port = None

    @property
    def listening(self) -> bool:
        return self._port is not None

    def privilegedStartService(self):
        super().privilegedStartService()
        outcome = []
        self._endpoint.listen(self._site).addBoth(outcome.append)
        # TCP and TLS listens complete synchronously; a failure must stop the start.
        if isinstance(outcome[0], Failure):
            raise SystemExit(
                f"chatd: cannot listen for [{self.name}] on {self._where}: {outcome[0].value}"
            )
        self._port = outcome[0]
        address = self._port.getHost()
        if self._factory is None:
            url = _url("http", address.host, address.port, "/metrics")
        else:
            url = _url(self.name, address.host, address.port, "/ws")
            self._factory.setSessionParameters(url=url)
            origins = self._origins or own_origins(self.name, address.host, address.port)
            self._factory.allow_origins(list(origins))
            log.info(
                "chatd {listener} accepts browsers from {origins}",
                listener=self.name,
                origins=" ".join(origins),
            )
        log.info("chatd {listener} listener ready at {url}", listener=self.name, url=url)

    def stopService(self):
        super().stopService()
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        stopped = port.stopListening()
        if self._factory is not None:
            factory = self._factory
            stopped.addCallback(lambda _: factory.go_away(self._clock, self._shutdown_timeout))
        return stopped


def own_origins(listener: str, host: str, port: int) -> list[str]:
    """The origins of pages this listener itself serves: the names this machine goes by."""
    scheme = "https" if listener == "wss" else "http"
    if host in ("0.0.0.0", "::"):
        names = {"localhost", "127.0.0.1", "[::1]", socket.gethostname(), socket.getfqdn()}
    else:
        names = {"[" + host + "]" if ":" in host else host}
        if host in ("127.0.0.1", "::1"):
            names |= {"localhost", "127.0.0.1", "[::1]"}
    return sorted(f"{scheme}://{name}:{port}" for name in names)


def _url(scheme: str, host: str, port: int, path: str) -> str:
    """A listener's URL; port 0 (not yet bound) is left out: Autobahn rejects it."""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}" if port else f"{scheme}://{host}{path}"


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    try:
        return _build(_load(options), reactor)
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def _load(options: Options) -> Config:
    config = load_daemon_config(options["config"])
    if config.source == EMBEDDED_DEFAULTS:
        log.info("no etc/chatd.ini or /etc/chatd/chatd.ini: using the embedded defaults")
    return config


def _build(config: Config, reactor) -> ChatService:
    openfiles.ensure_open_files(config.limits.max_connections)
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
    metrics = Metrics()
    broadcaster = Broadcaster(
        reactor,
        store,
        config.history,
        config.limits,
        fsync=config.transcripts.fsync == "batch",
        prepare=prepare_frames,
        metrics=metrics,
        rooms=config.rooms,
        support=SupportDesk(config.support.agent_role) if config.support.enabled else None,
    )
    tls_factory = None
    if config.wss.enabled:
        tls_factory = ReloadableContextFactory(_tls_builder(config), reactor)
        metrics.track_certificate_expiry(lambda: tls_factory.not_after.timestamp())
    service = ChatService(broadcaster, store, reactor, tls_factory)
    trial_roles = {
        name: frozenset({config.support.agent_role}) for name in config.support.trial_agents
    }
    if trial_roles:
        log.warn(
            "[support] trial_agents gives the {role} role to {names} by name alone:"
            " for local trial only",
            role=config.support.agent_role,
            names=", ".join(config.support.trial_agents),
        )
    authenticator = authenticator_for(config.auth, config.source, trial_roles)
    admission = Admission(config.limits.max_connections, config.limits.max_connections_per_ip)
    parser = wire.FrameParser(max_text_chars=config.limits.max_text_chars)
    limits = config.limits
    timeout = config.server.shutdown_timeout
    health = HealthResource(broadcaster, service.readiness)
    for listener in config.listeners:
        context = ListenerContext(
            name=listener.name,
            broadcaster=broadcaster,
            parser=parser,
            authenticator=authenticator,
            limits=limits,
            hello_timeout=config.auth.hello_timeout,
            admission=admission,
            clock=reactor,
        )
        factory = ChatServerFactory(
            _url(listener.name, listener.interface, listener.port, "/ws"), context
        )
        endpoint = sendnow.TCPServerEndpoint(reactor, listener.port, listener.interface)
        if listener.name == "wss":
            endpoint = sendnow.TLSServerEndpoint(endpoint, tls_factory)
        site = build_site(factory, health, limits.handshake_timeout, reactor)
        if config.metrics.enabled and config.metrics.serve_on == listener.name:
            site.resource.putChild(b"metrics", MetricsResource(metrics))
        where = f"{listener.interface}:{listener.port}"
        ListenerService(
            listener.name,
            endpoint,
            site,
            factory,
            where,
            timeout,
            reactor,
            config.server.allowed_origins,
        ).setServiceParent(service)
    if config.metrics.enabled and config.metrics.serve_on == "local":
        root = Resource()
        root.putChild(b"metrics", MetricsResource(metrics))
        root.putChild(b"healthz", health)
        endpoint = TCP4ServerEndpoint(
            reactor, config.metrics.port, interface=config.metrics.interface
        )
        where = f"{config.metrics.interface}:{config.metrics.port}"
        metrics_site = Site(root, logFormatter=access_log_line)
        ListenerService(
            "metrics", endpoint, metrics_site, None, where, timeout, reactor
        ).setServiceParent(service)
    return service


def _tls_builder(config: Config):
    """A function that builds the TLS options from the files; SIGHUP calls it again."""
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
        config = replace(config, tls=replace(config.tls, certificate=certificate, key=key))
    return partial(tls.server_options, config.tls, config.source)
