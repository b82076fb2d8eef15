"""
Just enough of the telnet protocol for a line-based chat.

L{TelnetFilter} removes option negotiation from the incoming byte stream and
normalises every line ending (CR LF, bare LF, bare CR and CR NUL) to LF, keeping
its state across packets.  The server never starts a negotiation except to
hide a password, and then only with a client that has shown itself to be a
telnet client, so that C{nc} users never see stray bytes.
"""

from __future__ import annotations

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240
ECHO = 1

WILL_ECHO = bytes([IAC, WILL, ECHO])
WONT_ECHO = bytes([IAC, WONT, ECHO])

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)
_CR, _LF, _NUL = 13, 10, 0


class TelnetFilter:
    """
    Strips telnet commands and normalises line endings to LF.

    @ivar telnet: C{True} once the peer has sent a telnet command or ended a
        line with CR, which is how telnet clients send lines.
    """

    def __init__(self) -> None:
        self._state = _DATA
        self._after_cr = False
        self.telnet = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        state = self._state
        for byte in data:
            if state == _DATA:
                if byte == IAC:
                    state = _COMMAND
                    self.telnet = True
                elif byte == _CR:
                    out.append(_LF)
                    self._after_cr = True
                    self.telnet = True
                    continue
                elif (byte == _LF or byte == _NUL) and self._after_cr:
                    pass
                else:
                    out.append(byte)
            elif state == _COMMAND:
                if byte == IAC:
                    out.append(IAC)
                    state = _DATA
                elif byte in (WILL, WONT, DO, DONT):
                    state = _OPTION
                elif byte == SB:
                    state = _SUB
                else:
                    state = _DATA
            elif state == _OPTION:
                state = _DATA
            elif state == _SUB:
                if byte == IAC:
                    state = _SUB_IAC
            elif state == _SUB_IAC:
                state = _DATA if byte == SE else _SUB
            self._after_cr = False
        self._state = state
        return bytes(out)
