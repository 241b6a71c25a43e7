"""`twistd chatd`: command-line options and the service tree. Never listens by itself.

Modelled on magic-wormhole-mailbox-server's server_tap.py: `makeService` reads the config and
returns a service tree that twistd starts:

    ChatService (starts the server; at stop, waits for its children, then closes transcripts)
      ListenerService ws / wss   (at stop: stop accepting, close connections with 1001)
      ListenerService metrics    (when [metrics] serve_on = local)
      ListenerService api        (when [api] enabled: the server API, api.py)
      WebhookService             (when a [webhook:NAME] is configured: webhooks.py)
"""

from __future__ import annotations

import gc
import signal
import socket
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet.defer import succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatd import devcert, malloc, openfiles, sendnow, tls, wire
from chatd.admission import Admission
from chatd.api import ApiKeys, build_api_site
from chatd.auth import Revocations, authenticator_for
from chatd.backend import Backend
from chatd.canned import CannedFileError, load_canned
from chatd.config import EMBEDDED_DEFAULTS, Config, ConfigError, load_daemon_config
from chatd.directory import Directory
from chatd.erasure import DirectoryBusy, Erasure, lock_directory
from chatd.front_door import FrontDoor
from chatd.metrics import Metrics, MetricsResource
from chatd.moderation import STATE_FILE, Moderation
from chatd.notes import InternalNotes
from chatd.outgoing import Deflater, prepare_frames
from chatd.pipeline import LocalSequencer, Pipeline
from chatd.protocol import ChatServerFactory, ListenerContext
from chatd.read_markers import ReadMarkers
from chatd.redaction import TranscriptEditor, at_once
from chatd.redis.archiver import Archiver
from chatd.redis.cluster import Cluster, check_durability
from chatd.redis.desk import SharedDesk
from chatd.redis.reads import SharedReadMarkers
from chatd.redis.sanctions import SharedSanctions
from chatd.retention import Retention
from chatd.server import Server
from chatd.sessions import SessionRegistry
from chatd.support import SupportDesk
from chatd.tls import ReloadableContextFactory
from chatd.transcript import Rotation, TranscriptStore, new_epoch
from chatd.typing_indicators import TypingIndicators
from chatd.unattended import UnattendedWatch
from chatd.visitors import KEY_FILE, VisitorGate, Visitors, load_or_create_key
from chatd.web import HealthResource, access_log_line, build_site
from chatd.webhooks import Webhooks, treq_post

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
    """The server's lifetime around its listeners.

    MultiService stops its children all at once; the transcripts must outlive the connections
    (their leave events are the last lines written), so they are closed only after every child
    has finished stopping.
    """

    def __init__(
        self,
        server: Server,
        reactor,
        tls: ReloadableContextFactory | None,
        min_free_space: int = 0,
    ):
        super().__init__()
        self.server = server
        self.store = server.store
        self._reactor = reactor
        self._tls = tls
        self._min_free_space = min_free_space
        self._unready = _OnceLog("transcripts not ready: {problem}", "transcripts ready again")
        self.on_reload: list = []  # more things SIGHUP re-reads (the API keys)
        self._stopping = False

    def startService(self):
        if self.server.cluster is not None:
            self.server.cluster.start()
        self.server.start()
        super().startService()
        # After the reactor's own handlers, so that ours are the ones that stay.
        self._reactor.callWhenRunning(self._handle_signals)
        self._reactor.callWhenRunning(self._settle_garbage_collection)

    def _settle_garbage_collection(self) -> None:
        """What start-up built (configuration, recovered rooms and queue, modules) lives as
        long as the daemon: out of the collector's way, full collections walk only what came
        after. From now on every collection is timed."""
        gc.freeze()
        log.info(
            "{count} objects from start-up frozen out of garbage collection",
            count=gc.get_freeze_count(),
        )
        self.server.metrics.gc_pauses.install()

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
        """Stop once: a second SIGTERM or Ctrl-C during the graceful stop (a service manager
        and a shell may both send one) only says so."""
        name = signal.Signals(signum).name
        if self._stopping:
            log.info("{signal}: already stopping", signal=name)
            return
        self._stopping = True
        log.info("{signal}: stopping gracefully", signal=name)
        self._reactor.stop()

    def reload(self) -> None:
        """SIGHUP: reload the TLS certificate (established connections are not touched) and
        the revocation list (the sessions it now revokes are closed)."""
        log.info("SIGHUP: reloading")
        if self._tls is not None:
            self._tls.reload()
        self.server.reload_revocations()
        for reload in self.on_reload:
            reload()

    def stopService(self):
        self.server.metrics.gc_pauses.remove()
        stopped = super().stopService()
        stopped.addBoth(lambda _: self.server.shutdown())
        cluster = self.server.cluster
        if cluster is not None:
            # The last posts (the leaves of the clients just closed) are answered, or fail
            # by their deadline, before the connections to Redis close.
            stopped.addBoth(lambda _: self.server.pipeline.drained())
            stopped.addBoth(lambda _: cluster.stop())
        return stopped

    def readiness(self) -> dict[str, bool]:
        """What /healthz reports: every listener bound, a real write to the transcript
        directory succeeds, its file system has `[transcripts] min_free_space` left, and in
        Redis mode the node is connected to Redis and not cut off."""
        checks = {
            f"listener_{service.name}": service.listening
            for service in self
            if isinstance(service, ListenerService)
        }
        cluster = self.server.cluster
        if cluster is not None:
            # A load balancer stops sending clients to a node that lost Redis.
            checks["redis"] = cluster.commands.connected and not cluster.cut_off
        problem = self.store.probe()
        checks["transcripts_writable"] = problem is None
        try:
            checks["free_space"] = self.store.free_bytes() >= self._min_free_space
        except OSError:
            checks["free_space"] = False
        if problem is not None or not checks["free_space"]:
            self._unready.report(problem or "free space below [transcripts] min_free_space")
        else:
            self._unready.clear()
        return checks


class _OnceLog:
    """A warning logged when a problem starts (or changes), and a note when it is over."""

    def __init__(self, problem_format: str, cleared: str):
        self._problem_format = problem_format
        self._cleared = cleared
        self._problem: str | None = None

    def report(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            log.warn(self._problem_format, problem=problem)

    def clear(self) -> None:
        if self._problem is not None:
            self._problem = None
            log.info(self._cleared)


class ListenerService(Service):
    """Listens in privilegedStartService so that a busy port stops twistd with a clear line."""

    def __init__(
        self,
        name: str,
        endpoint,
        entry: Site | FrontDoor,
        factory: ChatServerFactory | None,
        where: str,
        shutdown_timeout: float,
        clock,
        origins: tuple[str, ...] = (),
        path: str = "/metrics",
    ):
        self.setName(name)
        self._path = path
        self._origins = origins
        self._endpoint = endpoint
        self._entry = entry  # what the endpoint listens with
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
        self._endpoint.listen(self._entry).addBoth(outcome.append)
        # TCP and TLS listens complete synchronously; a failure must stop the start.
        if isinstance(outcome[0], Failure):
            raise SystemExit(
                f"chatd: cannot listen for [{self.name}] on {self._where}: {outcome[0].value}"
            )
        self._port = outcome[0]
        address = self._port.getHost()
        if self._factory is None:
            url = _url("http", address.host, address.port, self._path)
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


def build_server(
    config: Config,
    clock,
    prepare=prepare_frames,
    metrics: Metrics | None = None,
    make_epoch=new_epoch,
    offload=at_once,
) -> Server:
    """The chat server and its parts, as the daemon runs them (the unit tests build theirs
    here too): sessions, the room directory on the transcript store, the local commit
    pipeline, the support desk and its internal notes when it is on, and moderation,
    retention and erasure, whose rewrites of transcript files run through `offload` (a thread
    pool in the daemon)."""
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
    metrics = metrics or Metrics()
    cluster = None
    if config.redis.enabled:
        cluster = Cluster(clock, config.redis, metrics, config.limits.retry_window, make_epoch)
        sequencer = cluster.sequencer
    else:
        sequencer = LocalSequencer(store, config.transcripts.fsync == "batch", metrics)
    server = Server(
        clock,
        SessionRegistry(config.auth.max_sessions_per_user, open_mode=config.auth.mode == "open"),
        Directory(clock, store, config.history, config.limits, config.rooms, metrics, make_epoch),
        Pipeline(clock, sequencer, prepare, metrics),
        store,
        config.history,
        config.limits,
        metrics,
        Revocations(config.auth.revoked_file),
    )
    server.cluster = cluster
    if cluster is not None:
        cluster.attach_server(server)
        if config.redis.archiver:
            # Its own store: it closes each file after each step. fsync always: it trims from
            # Redis only what it made durable, whatever [transcripts] fsync says. Its editor
            # makes every rewrite of a transcript (edits, deletions, retention, erasure) in
            # the one process that appends to them.
            archiving = TranscriptStore(config.transcripts.directory, rotation)
            cluster.archiver = Archiver(
                clock,
                cluster.commands,
                cluster.keys,
                archiving,
                cluster.node,
                lease=config.redis.node_lease,
                fsync=True,
                keep=config.history.memory_events,
                editor=TranscriptEditor(archiving, offload),
            )
    if config.support.enabled:
        try:
            canned = load_canned(config.support.canned_file)
        except (CannedFileError, OSError) as error:
            raise ConfigError(config.source, "support", "canned_file", str(error)) from None
        desk = SupportDesk(config.support, canned)
        desk.attach(server)
        server.desk = desk
        InternalNotes(desk).attach(server)
        if config.support.unattended_after > 0:
            UnattendedWatch(config.support.unattended_after, desk).attach(server)
        if cluster is not None:
            cluster.desk = SharedDesk(
                clock, cluster, desk, server.directory, config.redis.node_lease
            )
    editor = TranscriptEditor(store, offload)
    server.moderation = Moderation(
        config.rooms, config.support, editor, store.directory / STATE_FILE
    )
    server.moderation.attach(server)
    if cluster is not None:
        server.moderation.shared = SharedSanctions(cluster.commands, cluster.keys)
        server.pipeline.observers.append(server.moderation.follow)
    rewriting = dict(editor=editor, may_rewrite=lambda: True)
    if cluster is not None:
        archiver = cluster.archiver
        rewriting = dict(
            editor=archiver.editor if archiver is not None else editor,
            may_rewrite=lambda: archiver is not None and archiver.holding,
        )
    server.retention = Retention(config.retention, config.rooms, **rewriting)
    server.retention.attach(server)
    server.erasure = Erasure(**rewriting)
    server.erasure.attach(server)
    TypingIndicators(config.rooms.typing_timeout).attach(server)
    server.read_markers = ReadMarkers(store.directory, config.transcripts.fsync == "batch")
    server.read_markers.attach(server)
    if cluster is not None:
        server.read_markers.shared = SharedReadMarkers(cluster.commands, cluster.keys)
    return server


def build_listener(
    context: ListenerContext, url: str, health: HealthResource, embed_origins: tuple[str, ...] = ()
):
    """One chat listener's WebSocket factory, and the front door it listens with (the web site
    beside the WebSocket factory: chatd/front_door.py)."""
    factory = ChatServerFactory(url, context)
    timeout = context.limits.handshake_timeout
    site = build_site(factory, health, timeout, context.clock, embed_origins)
    return factory, FrontDoor(factory, site)


def _build(config: Config, reactor) -> ChatService:
    if config.redis.enabled:
        for weakness in check_durability(config.redis, config.source):
            log.warn(
                "[redis] accept_weak_durability: {weakness}; an acknowledged message may be"
                " lost if Redis crashes",
                weakness=weakness,
            )
    openfiles.ensure_open_files(config.limits.max_connections)
    malloc.keep_large_blocks_mapped()
    deflater = Deflater() if config.limits.compression else None
    server = build_server(
        config,
        reactor,
        prepare=deflater.outgoing if deflater else prepare_frames,
        offload=partial(deferToThreadPool, reactor, reactor.getThreadPool()),
    )
    try:
        # Held while the daemon runs: `chatd-transcript erase` asks the daemon while it is.
        server.directory_lock = lock_directory(
            config.transcripts.directory, shared=config.redis.enabled
        )
    except DirectoryBusy as error:
        raise SystemExit(f"chatd: {error} (or by chatd-transcript erase)") from None
    metrics = server.metrics
    tls_factory = None
    if config.wss.enabled:
        tls_factory = ReloadableContextFactory(_tls_builder(config), reactor)
        metrics.track_certificate_expiry(lambda: tls_factory.not_after.timestamp())
    service = ChatService(server, reactor, tls_factory, config.transcripts.min_free_space)
    if server.desk is not None:
        service.on_reload.append(server.desk.reload_canned)
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
    authenticator = VisitorGate(
        authenticator_for(config.auth, config.source, trial_roles), _visitors(config)
    )
    admission = Admission(config.limits.max_connections, config.limits.max_connections_per_ip)
    parser = wire.FrameParser(max_text_chars=config.limits.max_text_chars)
    limits = config.limits
    timeout = config.server.shutdown_timeout
    health = HealthResource(server, service.readiness)
    backlog = sendnow.listen_backlog(limits.listen_backlog)
    for listener in config.listeners:
        context = ListenerContext(
            name=listener.name,
            server=server,
            parser=parser,
            authenticator=authenticator,
            limits=limits,
            hello_timeout=config.auth.hello_timeout,
            admission=admission,
            clock=reactor,
            log_connections=config.server.log_connections,
            deflater=deflater,
        )
        factory, front_door = build_listener(
            context,
            _url(listener.name, listener.interface, listener.port, "/ws"),
            health,
            config.support.embed_origins,
        )
        endpoint = sendnow.TCPServerEndpoint(reactor, listener.port, listener.interface, backlog)
        if listener.name == "wss":
            endpoint = sendnow.TLSServerEndpoint(endpoint, tls_factory)
        if config.metrics.enabled and config.metrics.serve_on == listener.name:
            front_door.site.resource.putChild(b"metrics", MetricsResource(metrics))
        where = f"{listener.interface}:{listener.port}"
        ListenerService(
            listener.name,
            endpoint,
            front_door,
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
    if config.api.enabled:
        _add_api(config, server, parser, service, reactor)
    if config.webhooks.endpoints:
        webhooks = Webhooks.build(
            config.webhooks, config.source, server.store, reactor, treq_post(reactor), metrics
        )
        cluster = server.cluster
        if cluster is None:
            webhooks.attach(server)
        elif cluster.archiver is not None:
            webhooks.follow(cluster.archiver)
        else:
            log.warn(
                "[redis] archiver = no: this node never sends webhooks (the archiving node"
                " sends them, from the transcripts it writes)"
            )
        WebhookService(webhooks, at_start=cluster is None).setServiceParent(service)
    return service


class WebhookService(Service):
    """Starts the webhook senders (after the server: its rooms' transcripts are ready) and
    saves their cursors at stop."""

    def __init__(self, webhooks: Webhooks, at_start: bool = True):
        self.setName("webhooks")
        self.webhooks = webhooks
        self._at_start = at_start  # Redis mode: from when this node takes the archiver lease

    def startService(self):
        super().startService()
        if self._at_start:
            self.webhooks.start()

    def stopService(self):
        super().stopService()
        self.webhooks.stop()


def _add_api(config: Config, server: Server, parser, service: ChatService, reactor) -> None:
    """The server API's listener (`[api]`): its keys are read now, and again on SIGHUP."""
    api = config.api
    keys = ApiKeys(api.keys_file)
    try:
        keys.load()
    except (OSError, ValueError) as error:
        problem = getattr(error, "strerror", None) or str(error)
        raise ConfigError(config.source, "api", "keys_file", problem) from None
    service.on_reload.append(keys.reload)
    backend = Backend(server, api.bots, parser, config.history, api.timeout, config.support.enabled)
    site = build_api_site(backend, keys, server.metrics, api.max_body, reactor)
    endpoint = TCP4ServerEndpoint(reactor, api.port, interface=api.interface)
    where = f"{api.interface}:{api.port}"
    ListenerService(
        "api", endpoint, site, None, where, config.server.shutdown_timeout, reactor, path="/api"
    ).setServiceParent(service)


def _visitors(config: Config) -> Visitors | None:
    """With `[support] visitors = anonymous`, visitor identities under the daemon's key (kept
    in the transcript directory: deleting it forgets every visitor)."""
    if config.support.visitors != "anonymous":
        return None
    try:
        key = load_or_create_key(config.transcripts.directory)
    except (OSError, ValueError) as error:
        raise ConfigError(
            config.source, "support", "visitors", f"cannot use the visitor key: {error}"
        ) from None
    log.info(
        "anonymous visitors: their secrets are signed with {path}",
        path=str(config.transcripts.directory / KEY_FILE),
    )
    return Visitors(key)


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
