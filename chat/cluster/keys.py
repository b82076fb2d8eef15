"""
The names of every Redis key and channel that cluster mode uses, in one place.

Folded user names are made of ASCII letters, digits, C{_}, C{-} and C{.}, so
they go into key names as they are.  Pub/sub channels and keys live in
separate namespaces in Redis, so a replica's channel and its figures hash may
share a name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """
    The key layout under one prefix; tests use their own prefix to keep apart.
    """

    prefix: str = "chat:"

    @property
    def presence_prefix(self) -> str:
        return f"{self.prefix}presence:"

    def presence(self, folded: str) -> str:
        """
        A string key: the JSON presence entry of one person, with a TTL.
        """
        return self.presence_prefix + folded

    @property
    def online(self) -> str:
        """
        A sorted set: folded names of the people online, scored by the
        Redis time (milliseconds) at which their entry expires.
        """
        return f"{self.prefix}online"

    def replica(self, server_id: str) -> str:
        """
        A hash: one replica's figures, with a TTL; also the pub/sub channel
        on which that replica hears events for its own people.
        """
        return f"{self.prefix}replica:{server_id}"

    @property
    def replicas(self) -> str:
        """
        A sorted set: the replica ids, scored by the Redis time
        (milliseconds) at which their figures expire.
        """
        return f"{self.prefix}replicas"

    def token(self, token_digest: str) -> str:
        """
        A string key: the folded name of a session token's owner, with a TTL.
        """
        return f"{self.prefix}token:{token_digest}"

    @property
    def everyone(self) -> str:
        """
        The pub/sub channel for events that go to everyone on every replica.
        """
        return f"{self.prefix}all"

    @property
    def scaler_decisions(self) -> str:
        """
        A list, newest first and capped: the autoscaler's recent decisions,
        each one JSON object.
        """
        return f"{self.prefix}scaler:decisions"

    @property
    def scaler_heartbeat(self) -> str:
        """
        A string key: the autoscaler's latest poll as JSON, with a TTL, so
        that its absence means the autoscaler is not running.
        """
        return f"{self.prefix}scaler:heartbeat"

    @property
    def dashboard_history(self) -> str:
        """
        A sorted set: the dashboard's samples of the system (JSON), scored
        by the time they were taken, trimmed to the last hour.
        """
        return f"{self.prefix}dashboard:history"


KEYS = Keys()
