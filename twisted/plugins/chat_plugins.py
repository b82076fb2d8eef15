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

chat_dashboard = ServiceMaker(
    "chat dashboard",
    "chat.dashboard_tap",
    "The chat's dashboard: live figures, charts, health and a JSON API.",
    "chat-dashboard",
)

chat_scaler = ServiceMaker(
    "chat scaler",
    "chat.scaler_tap",
    "Sizes the chat Deployment from the people online, through Kubernetes.",
    "chat-scaler",
)
