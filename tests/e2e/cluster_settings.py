"""The timings the Redis-mode e2e tests give their nodes (tests/e2e/conftest.py), importable
by the tests (a conftest is not: tests/unit has one of the same module name)."""

# Short enough for the tests to see leases expire and cut-offs happen in a few seconds.
NODE_LEASE = 2.0
COMMAND_TIMEOUT = 1.0
CUTOFF = 2.0
