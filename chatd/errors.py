"""Domain refusals, shared by the broadcaster and the authenticators."""


class Refused(Exception):
    """A request the rules forbid; `code` is its wire error code (docs/protocol.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
