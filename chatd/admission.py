"""Connection admission: a cap on connections in total and from one address."""

from __future__ import annotations

from collections import Counter


class Admission:
    """Counts admitted connections across every listener."""

    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._total = 0
        self._per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> tuple[int, str] | None:
        """Count the connection in, or return (HTTP status, reason) to refuse it."""
        if self._total >= self.max_total:
            return 503, f"the server is at its limit of {self.max_total} connections"
        if self._per_ip[ip] >= self.max_per_ip:
            return 429, f"too many connections from {ip} (limit {self.max_per_ip})"
        self._total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]
