"""
Tests that drive Debian's real C{telnet} program; run them with C{tox -e telnet}.
"""
