"""telebridge — put a voice AI agent on the phone.

Agents are written with Jay's API; only the import line changes::

    from telebridge import Agent, SessionConfig, ConfigureSessionInput, LLMResponseHandlerInput, VAD, STT, TTS
"""

from .agent import Agent, load_agent
from .config import STT, TTS, VAD
from .session import ConfigureSessionInput, LLMResponseHandlerInput, Message, SessionConfig

__all__ = [
    "Agent",
    "SessionConfig",
    "ConfigureSessionInput",
    "LLMResponseHandlerInput",
    "Message",
    "VAD",
    "STT",
    "TTS",
    "load_agent",
]
__version__ = "0.1.0"
