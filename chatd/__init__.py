"""chatd: an event-driven WebSocket chat daemon on Twisted and Autobahn."""

__version__ = "0.1.0"
