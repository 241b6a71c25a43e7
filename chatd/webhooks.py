"""Signed webhooks: each committed room event POSTed to the configured endpoints, at least once
and in order per room (docs/api.md, "Webhooks").

The chat path only notes which rooms have new events (`note`, a pipeline observer: a dict
update per batch). Each endpoint's `Sender` then reads the events back from the transcripts
after its cursor, a batch of one room at a time, POSTs them with treq, and moves its cursor on
a 2xx answer. So a receiver that is down costs its cursors and the set of rooms it is behind
in, never a queue of events; and after a restart (even a SIGKILL) the sender resumes from its
saved cursor. The cursor is saved at most once a second: what was delivered after the last
save is delivered again after a crash, with the same event ids (`room:epoch:seq`).

Failed deliveries are retried after `retry_min`, doubling up to `retry_max`, each wait drawn
between half and all of it (jitter), on the injected clock. One delivery per endpoint is in
flight at a time, which is what keeps a room's events in order.

In Redis mode the node that archives sends them (`follow`): it starts when it takes the
archiver lease and stops when it loses it, and hears of each batch it has written to the
transcripts, which is what the senders read. The cursors then live in a `state_directory`
every node that may archive must share, as the transcripts are.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter, Gauge
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import webhook_state
from chatd.config import ConfigError, WebhookEndpoint, WebhooksConfig
from chatd.events import Event, format_ts

SAVE_INTERVAL = 1.0
READS_PER_TURN = 10  # transcript reads of one sender per reactor turn, at most
MIN_SECRET_BYTES = 16
# An event's `type` in the transcript -> the webhook event type an endpoint subscribes to.
WEBHOOK_TYPE = {
    "message": "message",
    "presence": "presence",
    "status": "conversation",
    "unattended": "unattended",
    "note": "note",
}

# post(url, body, headers, timeout) -> Deferred firing with the HTTP status code.
Post = Callable[[str, bytes, dict[bytes, list[bytes]], float], Deferred]


def sign(secrets: list[bytes], timestamp: int, body: bytes) -> str:
    """`X-Chatd-Signature`: `v1=<hex HMAC-SHA256 of "TIMESTAMP." + body>`, one per secret."""
    message = str(timestamp).encode() + b"." + body
    return ",".join(
        "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest() for secret in secrets
    )


def read_secrets(path: Path, source: str, section: str) -> list[bytes]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise ConfigError(source, section, "secret_file", error.strerror or str(error)) from None
    secrets = [line.strip() for line in lines if line.strip()]
    if not secrets or any(len(secret) < MIN_SECRET_BYTES for secret in secrets):
        raise ConfigError(
            source, section, "secret_file", f"needs secrets of at least {MIN_SECRET_BYTES} bytes"
        )
    return secrets


def treq_post(reactor) -> Post:
    """The real HTTP client: treq, no redirects followed (only the configured URL is ever
    called), the answer's body read and dropped. A new connection per delivery: a POST on a
    kept-alive connection that the receiver has just closed fails and is not retried by the
    client, which would cost a backoff for nothing; a delivery carries a batch anyway."""
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=10))

    def post(url: str, body: bytes, headers, timeout: float) -> Deferred:
        sent = client.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)

        def drain(response):
            return treq.collect(response, lambda _chunk: None).addCallback(lambda _: response.code)

        return sent.addCallback(drain)

    return post


class Sender:
    """One endpoint: its cursors, the rooms it is behind in, and one delivery at a time."""

    _log = Logger()

    def __init__(
        self,
        endpoint: WebhookEndpoint,
        secrets: list[bytes],
        config: WebhooksConfig,
        store,
        clock,
        post: Post,
        metrics,
        rng: random.Random,
    ):
        self.endpoint = endpoint
        self.name = endpoint.name
        self._secrets = secrets
        self._config = config
        self._store = store
        self._clock = clock
        self._post = post
        self._metrics = metrics
        self._rng = rng
        self._wanted = frozenset(endpoint.events)
        self._cursor_path = webhook_state.cursor_path(config.state_directory, endpoint.name)
        self._status_path = webhook_state.status_path(config.state_directory, endpoint.name)
        self.cursors: dict[str, tuple[str, int]] = {}
        self.behind: dict[str, tuple[str, int]] = {}  # room -> its newest (epoch, seq) known
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_delivery_at: float | None = None
        self.next_retry_at: float | None = None
        self.delivered = 0
        self._busy = False
        self._stopped = True
        self._next_call = None
        self._save_call = None
        self._dirty = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, heads: dict[str, tuple[str, int]]) -> None:
        """Load the cursor file; `heads` is each room's newest event on disk. A new endpoint
        (no cursor file) starts at the heads: it gets what happens from now on."""
        self._stopped = False
        loaded = webhook_state.load_cursors(self._cursor_path)
        if loaded is None:
            self.cursors = dict(heads)
            self._dirty = True
            self._log.info(
                "webhook {endpoint}: new; delivering events from now on", endpoint=self.name
            )
        else:
            self.cursors = loaded
        for room, head in heads.items():
            self._note(room, head)
        self._save()
        self._kick()

    def stop(self) -> None:
        self._stopped = True
        for call in (self._next_call, self._save_call):
            if call is not None and call.active():
                call.cancel()
        self._next_call = self._save_call = None
        self._save()

    # -- noting new events (the chat path) ----------------------------------------------------

    def note(self, room: str, epoch: str, seq: int) -> None:
        self._note(room, (epoch, seq))
        self._kick()

    def _note(self, room: str, head: tuple[str, int]) -> None:
        if self.cursors.get(room) != head:
            self.behind[room] = head

    @property
    def lag(self) -> int:
        """Events (of every type) written and not yet passed by the cursor."""
        total = 0
        for room, (epoch, seq) in self.behind.items():
            at = self.cursors.get(room)
            total += seq - at[1] if at is not None and at[0] == epoch else seq
        return max(total, 0)

    # -- delivering ---------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._stopped or self._busy or self._next_call is not None or not self.behind:
            return
        self._next_call = self._clock.callLater(0, self._deliver_next)

    def _deliver_next(self) -> None:
        self._next_call = None
        self.next_retry_at = None
        for _read in range(READS_PER_TURN):
            if not self.behind or self._stopped:
                break
            room = next(iter(self.behind))
            epoch, seq = self.cursors.get(room, (None, 0))
            try:
                events = self._store.events_after(room, epoch, seq, self._config.batch_size)
            except (OSError, ValueError) as error:
                self._failed(f"cannot read the transcript of {room}: {error}")
                return
            if not events:
                # Caught up with the disk (or the transcript is gone): nothing to deliver.
                del self.behind[room]
                continue
            moved = (events[-1].epoch, events[-1].seq)
            wanted = [e for e in events if WEBHOOK_TYPE.get(e.kind) in self._wanted]
            if not wanted:
                self._advance(room, moved)
                continue
            self._send(room, wanted, moved)
            return
        else:
            self._kick()  # more to read: in a later turn, so that chat never waits long
            return
        self._write_status()

    def _send(self, room: str, events: list[Event], moved: tuple[str, int]) -> None:
        self._busy = True
        body = payload(self.name, room, events)
        timestamp = int(self._clock.seconds())
        headers = {
            b"content-type": [b"application/json"],
            b"user-agent": [b"chatd-webhooks/1"],
            b"x-chatd-webhook": [self.name.encode()],
            b"x-chatd-timestamp": [str(timestamp).encode()],
            b"x-chatd-signature": [sign(self._secrets, timestamp, body).encode()],
        }
        try:
            sent = self._post(self.endpoint.url, body, headers, self._config.timeout)
        except Exception as error:  # an unusable URL: retried like any failure, and logged
            self._busy = False
            self._failed(f"{type(error).__name__}: {error}")
            return

        def answered(code: int) -> None:
            self._busy = False
            if not 200 <= code < 300:
                self._failed(f"HTTP {code}")
                return
            self._metrics.deliveries.labels(self.name, "ok").inc()
            self._metrics.events.labels(self.name).inc(len(events))
            self.delivered += len(events)
            self.last_delivery_at = self._clock.seconds()
            if self.failures:
                self._log.info(
                    "webhook {endpoint}: delivering again after {failures} failures",
                    endpoint=self.name,
                    failures=self.failures,
                )
            self.failures = 0
            self._advance(room, moved)
            # The room goes to the back, so that one busy room does not starve the others.
            head = self.behind.pop(room, None)
            if head is not None and head != moved:
                self.behind[room] = head
            self._kick()
            if not self.behind:
                self._write_status()

        def failed(failure) -> None:
            self._busy = False
            error = failure.value
            self._failed(f"{type(error).__name__}: {error}".strip(": "))

        sent.addCallbacks(answered, failed)

    def _advance(self, room: str, moved: tuple[str, int]) -> None:
        self.cursors[room] = moved
        if self.behind.get(room) == moved:
            del self.behind[room]
        self._dirty = True
        if self._save_call is None:
            self._save_call = self._clock.callLater(SAVE_INTERVAL, self._save)

    def _failed(self, error: str) -> None:
        self._metrics.deliveries.labels(self.name, "failed").inc()
        if self.failures == 0 or error != self.last_error:
            self._log.warn(
                "webhook {endpoint}: delivery to {url} failed: {error}; retrying with backoff"
                " (logged again when the error changes)",
                endpoint=self.name,
                url=self.endpoint.url,
                error=error,
            )
        self.failures += 1
        self.last_error = error
        self.last_error_at = self._clock.seconds()
        delay = self.retry_delay(self.failures)
        self.next_retry_at = self._clock.seconds() + delay
        if not self._stopped:
            self._next_call = self._clock.callLater(delay, self._deliver_next)
        self._write_status()

    def retry_delay(self, failures: int) -> float:
        """retry_min doubled per failure up to retry_max, then a random part of it (jitter)."""
        config = self._config
        ceiling = min(config.retry_max, config.retry_min * 2 ** min(failures - 1, 40))
        return ceiling * self._rng.uniform(0.5, 1.0)

    # -- the files ----------------------------------------------------------------------------

    def _save(self) -> None:
        self._save_call = None
        if self._dirty:
            try:
                webhook_state.save_cursors(self._cursor_path, self.cursors)
                self._dirty = False
            except OSError as error:
                self._log.error(
                    "webhook {endpoint}: cannot save its cursor {path}: {error}",
                    endpoint=self.name,
                    path=str(self._cursor_path),
                    error=str(error),
                )
        self._write_status()

    def status(self) -> dict:
        return {
            "endpoint": self.name,
            "url": self.endpoint.url,
            "events": list(self.endpoint.events),
            "lag": self.lag,
            "rooms_behind": len(self.behind),
            "delivered": self.delivered,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": _ts(self.last_error_at),
            "last_delivery_at": _ts(self.last_delivery_at),
            "next_retry_at": _ts(self.next_retry_at),
            "updated_at": _ts(self._clock.seconds()),
        }

    def _write_status(self) -> None:
        self._metrics.lag.labels(self.name).set(self.lag)
        # The cursor's error says what is wrong with the directory; the status is a report.
        with contextlib.suppress(OSError):
            webhook_state.save_status(self._status_path, self.status())


def _ts(seconds: float | None) -> str | None:
    return None if seconds is None else format_ts(seconds)


def event_id(room: str, event: Event) -> str:
    return f"{room}:{event.epoch}:{event.seq}"


def payload(endpoint: str, room: str, events: list[Event]) -> bytes:
    """The body of one delivery: events of one room, oldest first, each with its unique id."""
    items = [
        {
            "id": event_id(room, event),
            "type": WEBHOOK_TYPE[event.kind],
            "room": room,
            "event": event.record,
        }
        for event in events
    ]
    return json.dumps({"webhook": endpoint, "events": items}, ensure_ascii=False).encode()


class WebhookMetrics:
    def __init__(self, registry):
        self.deliveries = Counter(
            "chatd_webhook_deliveries",
            "Webhook POSTs, by endpoint and outcome (ok, failed).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "chatd_webhook_events",
            "Events delivered, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.lag = Gauge(
            "chatd_webhook_lag",
            "Events written and not yet delivered (or passed over), by endpoint.",
            ["endpoint"],
            registry=registry,
        )


class Webhooks:
    """Every endpoint's sender, and the pipeline observer that tells them of new events."""

    _log = Logger()

    def __init__(self, config: WebhooksConfig, senders: list[Sender], store):
        self.config = config
        self.senders = senders
        self._store = store
        self.running = False

    @classmethod
    def build(cls, config: WebhooksConfig, source: str, store, clock, post: Post, metrics):
        try:
            config.state_directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(source, "webhooks", "state_directory", str(error)) from None
        webhook_metrics = WebhookMetrics(metrics.registry)
        rng = random.Random()
        senders = [
            Sender(
                endpoint,
                read_secrets(endpoint.secret_file, source, f"webhook:{endpoint.name}"),
                config,
                store,
                clock,
                post,
                webhook_metrics,
                rng,
            )
            for endpoint in config.endpoints
        ]
        return cls(config, senders, store)

    def attach(self, server) -> None:
        server.pipeline.origin_observers.append(self.note)

    def follow(self, archiver) -> None:
        """Redis mode: send while this node archives, what it has written."""
        archiver.on_holding.append(lambda holding: self.start() if holding else self.stop())
        archiver.written.append(self._written)

    def _written(self, room: str, last: Event) -> None:
        if self.running:
            for sender in self.senders:
                sender.note(room, last.epoch, last.seq)

    def note(self, room, events: list[Event]) -> None:
        """A pipeline observer: the room has new events up to the last of these."""
        last = events[-1]
        for sender in self.senders:
            sender.note(room.name, last.epoch, last.seq)

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        heads = self._heads()
        for sender in self.senders:
            sender.start(heads)
        self._log.info(
            "webhooks: {count} endpoint(s), {behind} events to deliver",
            count=len(self.senders),
            behind=sum(sender.lag for sender in self.senders),
        )

    def _heads(self) -> dict[str, tuple[str, int]]:
        """Each room's newest event on disk (one read from the end of its current file)."""
        heads = {}
        for room in self._store.rooms():
            for event in self._store.read_back(room):
                heads[room] = (event.epoch, event.seq)
                break
        return heads

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        for sender in self.senders:
            sender.stop()
