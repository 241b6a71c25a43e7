"""Who staffs the support desk: each agent's availability, and whom auto-assignment picks.

An agent is `online` or `away` as they last said (`online` the first time they connect), and
`offline` whenever none of their sessions is connected; what they last said is kept while the
daemon runs, so an agent who went away and reconnects is still away. Nothing here is
persisted: after a restart every agent is online again when they reconnect.

In Redis mode an agent's sessions on other nodes count too (`elsewhere`, by node, as those
nodes announce them), and what an agent says on one node holds on every node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ONLINE = "online"
AWAY = "away"
OFFLINE = "offline"
SETTABLE = (ONLINE, AWAY)


@dataclass(slots=True)
class Agent:
    user: str
    name: str
    chosen: str = ONLINE  # what the agent last said: online or away
    sessions: int = 0  # on this node
    elsewhere: dict[str, int] = field(default_factory=dict)  # node -> sessions there

    @property
    def status(self) -> str:
        return self.chosen if self.sessions or self.elsewhere else OFFLINE

    def entry(self) -> dict:
        return {"user": self.user, "name": self.name, "status": self.status}


class Roster:
    """The agents seen since start, their sessions and availability, and the round-robin
    position of auto-assignment."""

    def __init__(self):
        self._agents: dict[str, Agent] = {}
        self._last_picked: str | None = None

    def connected(self, user: str, name: str) -> Agent:
        agent = self._agents.get(user)
        if agent is None:
            agent = self._agents[user] = Agent(user, name)
        agent.name = name
        agent.sessions += 1
        return agent

    def disconnected(self, user: str) -> Agent | None:
        agent = self._agents.get(user)
        if agent is not None and agent.sessions > 0:
            agent.sessions -= 1
        return agent

    def choose(self, user: str, status: str) -> Agent:
        """An agent says they are online or away (here or, in Redis mode, on another node)."""
        agent = self._agents.get(user)
        if agent is None:
            agent = self._agents[user] = Agent(user, user)
        agent.chosen = status
        return agent

    def seen_elsewhere(self, node: str, user: str, name: str, sessions: int) -> Agent:
        """Another node holds `sessions` sessions of the agent (0: none any more)."""
        agent = self._agents.get(user)
        if agent is None:
            agent = self._agents[user] = Agent(user, name)
        if sessions > 0:
            agent.elsewhere[node] = sessions
            agent.name = name
        else:
            agent.elsewhere.pop(node, None)
        return agent

    def node_gone(self, node: str) -> list[tuple[Agent, str]]:
        """A node died: its sessions count no more. The agents it held, each with the status
        they had before."""
        held = []
        for agent in self._agents.values():
            if node in agent.elsewhere:
                before = agent.status
                del agent.elsewhere[node]
                held.append((agent, before))
        return held

    def here(self) -> list[tuple[str, str, int]]:
        """(user, name, sessions) of each agent with sessions on this node."""
        return [(a.user, a.name, a.sessions) for a in self._agents.values() if a.sessions]

    def held_by(self, node: str) -> set[str]:
        """The agents another node holds sessions of."""
        return {user for user, agent in self._agents.items() if node in agent.elsewhere}

    def chosen_by(self, user: str) -> str | None:
        agent = self._agents.get(user)
        return None if agent is None else agent.chosen

    def status_of(self, user: str) -> str:
        agent = self._agents.get(user)
        return OFFLINE if agent is None else agent.status

    def name_of(self, user: str) -> str | None:
        agent = self._agents.get(user)
        return None if agent is None else agent.name

    def any_online(self) -> bool:
        return any(agent.status == ONLINE for agent in self._agents.values())

    def entries(self) -> list[dict]:
        return [self._agents[user].entry() for user in sorted(self._agents)]

    def pick(self, open_counts: dict[str, int], capacity: int) -> str | None:
        """The next online agent, in user id order after the one picked last, with fewer than
        `capacity` open conversations (0: no limit); None when nobody can take one."""
        candidates = sorted(
            user
            for user, agent in self._agents.items()
            if agent.status == ONLINE and (not capacity or open_counts.get(user, 0) < capacity)
        )
        if not candidates:
            return None
        after = [
            user for user in candidates if self._last_picked is None or user > self._last_picked
        ]
        picked = (after or candidates)[0]
        self._last_picked = picked
        return picked
