"""
chat-bench: load, latency and correctness figures for a running chat daemon.

The tool drives many JSON-mode connections from one Twisted process.  Its
pieces: L{chat.bench.cli} (options and the program), L{chat.bench.runner}
(one run: connect, sign up, run each phase), L{chat.bench.clients} (the
connection), L{chat.bench.scenarios} (who sends to whom), L{chat.bench.load}
(paced and saturating senders), L{chat.bench.tracker} (what arrived where and
when), L{chat.bench.storm} and L{chat.bench.reconnect} (the two scenarios that
are not plain message traffic), L{chat.bench.spawn} (a throwaway daemon),
L{chat.bench.procstat} (server CPU and memory from /proc),
L{chat.bench.addresses} (targets, and the loopback rule), L{chat.bench.stats}
and L{chat.bench.report}.
"""
