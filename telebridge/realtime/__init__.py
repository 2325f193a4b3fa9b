"""Unmute's realtime session API (``WS /v1/realtime``) on telebridge's conversation loop."""

from .handler import PATH, SUBPROTOCOL, RealtimeConnection, realtime_endpoint
from .observer import ConversationEvents
from .sink import RealtimeSink

__all__ = ["PATH", "SUBPROTOCOL", "RealtimeConnection", "realtime_endpoint", "ConversationEvents", "RealtimeSink"]
