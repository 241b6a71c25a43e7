"""Prometheus metrics, in a registry of our own so that each daemon (and each test) has its own.

Counters are bumped once per event or per connection, never per delivery: fan-out adds the
member count in one call. Gauges that are cheap to compute (rooms, members, connections) are
read at scrape time instead of being kept up to date on every change.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.web.resource import Resource

from chatd.gcwatch import CollectorWatch


class Metrics:
    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.connections = Gauge(
            "chatd_connections", "Open WebSocket connections.", ["listener"], registry=registry
        )
        self.handshakes = Counter(
            "chatd_handshakes",
            "Completed WebSocket opening handshakes.",
            ["listener"],
            registry=registry,
        )
        self.handshake_failures = Counter(
            "chatd_handshake_failures",
            "Refused or failed WebSocket opening handshakes.",
            ["listener"],
            registry=registry,
        )
        self.rooms = Gauge("chatd_rooms", "Rooms in memory.", registry=registry)
        self.members = Gauge(
            "chatd_room_members",
            "Room memberships (a user in three rooms counts three).",
            registry=registry,
        )
        self.users = Gauge("chatd_users", "Connected users who have said hello.", registry=registry)
        self.sessions = Gauge(
            "chatd_sessions", "Welcomed connections (a user may have several).", registry=registry
        )
        self.room_loads = Counter(
            "chatd_room_loads",
            "Rooms loaded into memory from their transcripts.",
            registry=registry,
        )
        self.room_unloads = Counter(
            "chatd_room_unloads", "Idle rooms taken out of memory.", registry=registry
        )
        self.session_ends = Counter(
            "chatd_session_ends",
            "Sessions the server ended itself, by reason (replaced, token_expired, revoked).",
            ["reason"],
            registry=registry,
        )
        self.messages_in = Counter(
            "chatd_messages_received", "Messages accepted from clients.", registry=registry
        )
        self.events = Counter(
            "chatd_events_committed",
            "Room events written to transcripts and fanned out.",
            registry=registry,
        )
        self.deliveries = Counter(
            "chatd_deliveries", "Event frames sent to room members.", registry=registry
        )
        self.bytes_out = Counter(
            "chatd_delivered_payload_bytes",
            "Payload bytes of event frames sent to members.",
            registry=registry,
        )
        self.errors = Counter(
            "chatd_errors", "Error frames sent to clients, by code.", ["code"], registry=registry
        )
        self.closes = Counter(
            "chatd_closes",
            "Closed WebSocket connections, by close code.",
            ["code"],
            registry=registry,
        )
        self.slow_consumer_drops = Counter(
            "chatd_slow_consumer_drops",
            "Connections closed because they stopped reading (over max_buffered_bytes).",
            registry=registry,
        )
        self.transcript_write = Histogram(
            "chatd_transcript_write_seconds",
            "Time to write (and fsync, if configured) one batch of transcript lines.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=registry,
        )
        self.transcript_write_failures = Counter(
            "chatd_transcript_write_failures",
            "Room transcript writes that failed, by cause (ENOSPC, EACCES, EPERM, EFBIG, ...).",
            ["cause"],
            registry=registry,
        )
        self.resumes = Counter(
            "chatd_resumes", "Joins with 'since', by outcome.", ["outcome"], registry=registry
        )
        # The support desk's KPIs (chatd/support.py keeps them; zero without the desk).
        self.desk_conversations = Gauge(
            "chatd_support_conversations",
            "Conversations in the desk's queue, by state: open, waiting (an unanswered customer"
            " message), unassigned (open and nobody's), resolved.",
            ["state"],
            registry=registry,
        )
        self.desk_first_response = Histogram(
            "chatd_support_first_response_seconds",
            "From a conversation's opening customer message to the first agent's answer.",
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
            registry=registry,
        )
        self.desk_resolution = Histogram(
            "chatd_support_resolution_seconds",
            "From a conversation's opening customer message to its resolution.",
            buckets=(60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600, 3 * 86400, 7 * 86400),
            registry=registry,
        )
        self.desk_ratings = Counter(
            "chatd_support_ratings",
            "Customers' ratings of resolved conversations, by score (1-5).",
            ["score"],
            registry=registry,
        )
        # Installed by the daemon's service (a process-wide hook), not by every Metrics.
        self.gc_pauses = CollectorWatch(registry)

    def track_certificate_expiry(self, not_after: Callable[[], float]) -> None:
        """Export the served certificate's notAfter (only with wss on: a 0 would alert)."""
        Gauge(
            "chatd_tls_certificate_expiry_timestamp_seconds",
            "When the wss listener's certificate expires (its notAfter), as a Unix time.",
            registry=self.registry,
        ).set_function(not_after)


class MetricsResource(Resource):
    """GET /metrics in the Prometheus text format, rendered on the reactor thread."""

    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self._registry = metrics.registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)
