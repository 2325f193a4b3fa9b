"""The built-in demo agent (Bridget) with the embedded Whisper's window chosen by the benchmark.

Why: ``bench/latency.py --whisper both`` compares Whisper's 30 s window with the short window
(``STT.Whisper(short_window=True)``) call by call in one run. The benchmark sets :data:`SHORT_WINDOW` before each
call (the server runs in the benchmark's process, so it sees the change); ``None`` keeps the agent's own choice
(the default ``STT.Whisper()``).
"""

from __future__ import annotations

from telebridge import STT, Agent
from telebridge.agents import demo

SHORT_WINDOW: bool | None = None


async def configure_session(input):  # noqa: ANN001, ANN201 - a Jay agent file's signature
    config = await demo.configure_session(input)
    if SHORT_WINDOW is not None:
        config.stt = STT.Whisper(short_window=SHORT_WINDOW)
    return config


# Everything else (reply handler, tools, event handlers) is the demo's.
agent: Agent = demo.agent.model_copy(update={"configure_session": configure_session})
