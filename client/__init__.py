"""
The command-line client of chat: menus and conversations over the JSON protocol.

Run it as C{chat-client HOST PORT [HOST:PORT ...]} or C{python -m client HOST
PORT}; when the connection drops it reconnects, to the next address if more
than one is given, and resumes the session.
"""
