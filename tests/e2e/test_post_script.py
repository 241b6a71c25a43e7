"""chatd/redis/post.lua on a real redis-server: the support desk's claim holds only while no
one else is assigned, whichever node posts it (the keys and arguments are the sequencer's)."""

from __future__ import annotations

from chatd.metrics import Metrics
from chatd.redis.keys import Keys
from chatd.redis.sequencer import CLAIMED_ALREADY, POST, RedisSequencer
from chatd.rooms import Draft

ROOM = "support-carol"


def assignment(assignee: str | None, claim: bool) -> Draft:
    fields = {"assignee": assignee, "assignee_name": assignee}
    return Draft("assignment", fields, None, 1_800_000_000.0, claim=claim)


def test_a_claim_holds_only_while_nobody_else_is_assigned(redis_server):
    sequencer = RedisSequencer(None, Keys("t"), "node-a", None, 60.0, lambda: "E1", Metrics())
    redis_server.command("SCRIPT", "LOAD", POST.source)

    def post(assignee, claim):
        keys, args = sequencer.call(ROOM, assignment(assignee, claim))
        return redis_server.command(*POST.command(keys, args))[1]

    assert post("ann", claim=True) == 1
    assert post("bob", claim=True) == CLAIMED_ALREADY  # ann holds it
    assert post("ann", claim=True) == 2  # already hers: holds
    assert post("bob", claim=False) == 3  # a transfer moves it whoever holds it
    assert post("ann", claim=True) == CLAIMED_ALREADY
    assert post(None, claim=False) == 4  # back to nobody
    assert post("ann", claim=True) == 5
    assert redis_server.command("HGET", Keys("t").meta(ROOM), "seq") == b"5"
    assert redis_server.command("XLEN", Keys("t").log(ROOM)) == 5  # refused claims left nothing
