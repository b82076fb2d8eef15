"""
The command-line client of chat: menus and conversations over the JSON protocol.

Run it as C{chat-client HOST PORT} or C{python -m client HOST PORT}.
"""
