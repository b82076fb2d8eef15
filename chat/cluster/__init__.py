"""
Cluster mode: several replicas that share one PostgreSQL and one Redis.

L{chat.cluster.redisconn} holds the Redis connections, L{chat.cluster.presence}
who is online where, L{chat.cluster.router} how events reach people on other
replicas, L{chat.cluster.replicas} each replica's published figures and
L{chat.cluster.node} puts them together for the daemon.
"""
