"""An agent that cannot start fails at configure_session time, clearly, and never mid-call."""

from __future__ import annotations

import logging
from pathlib import Path

from conftest import LiveServer
from telebridge.simulator import simulate_call


async def test_unimplemented_provider_ends_the_stream_with_a_clear_log(auth_token, caplog):
    srv = LiveServer(agent=str(Path(__file__).parent / "agents" / "cloud_only_agent.py")).start()
    try:
        with caplog.at_level(logging.ERROR, logger="telebridge.call"):
            call = await simulate_call(srv.url, script=[], auth_token=auth_token, duration=5, transcribe=False)
        assert call.ended_by == "server" and call.close_code == 1011
        assert "Say" in call.twiml  # Twilio apologises to the caller after </Connect>
        assert not call.heard.any() or float(abs(call.heard).max()) < 0.01  # no agent audio at all
        assert any("STT.Deepgram is not available" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        srv.stop()
