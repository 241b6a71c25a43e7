"""A stand-in for chatd/redis/desk.py's SharedDesk as the support desk and the unattended watch
see it (`SupportDesk.shared`): what the desk tells the other nodes, recorded, and whether this
node leads the desk's one-at-a-time duties. The Redis side is tested against a real
redis-server (tests/e2e/test_cluster_desk.py)."""

from __future__ import annotations


class SharedDesk:
    def __init__(self, leading: bool = True):
        self.leading = leading
        self.told: list[tuple] = []

    def leads(self) -> bool:
        return self.leading

    def agent_sessions(self, user: str, name: str, sessions: int) -> None:
        self.told.append(("sessions", user, sessions))

    def chose(self, user: str, status: str) -> None:
        self.told.append(("chose", user, status))
