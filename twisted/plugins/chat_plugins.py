"""
The twistd plugins of the chat product.
"""

from twisted.application.service import ServiceMaker

chat = ServiceMaker(
    "chat",
    "chat.tap",
    "A chat server for telnet users and programs.",
    "chat",
)
