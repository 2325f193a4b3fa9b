"""An agent that cannot start fails at configure_session time, clearly, and never mid-call."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from conftest import LiveServer
from telebridge.simulator import simulate_call
from telebridge.twilio.signature import compute_signature


async def post_stream_ended(base_url: str, call_sid: str, token: str) -> httpx.Response:
    url = base_url + "/twilio/stream-ended"
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "CallStatus": "in-progress"}
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers={"X-Twilio-Signature": compute_signature(url, form, token)})


async def test_unimplemented_provider_ends_the_stream_with_a_clear_log(auth_token, caplog, deepgram_not_in_build):
    srv = LiveServer(agent=str(Path(__file__).parent / "agents" / "cloud_only_agent.py")).start()
    try:
        with caplog.at_level(logging.ERROR, logger="telebridge.call"):
            call = await simulate_call(srv.url, script=[], auth_token=auth_token, duration=5, transcribe=False)
        assert call.ended_by == "server" and call.close_code == 1011
        assert 'action="' in call.twiml  # Twilio asks us what to do once the stream has closed …
        after = await post_stream_ended(srv.url, call.call_sid, auth_token)
        assert after.status_code == 200 and "<Say>" in after.text and "trouble" in after.text  # … an apology
        assert not call.heard.any() or float(abs(call.heard).max()) < 0.01  # no agent audio at all
        assert any("STT.Deepgram is not available" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        srv.stop()


async def test_a_stream_we_closed_on_purpose_just_hangs_up(server, auth_token):
    server.runtime.stream_outcomes["CA" + "e" * 32] = "completed"
    after = await post_stream_ended(server.url, "CA" + "e" * 32, auth_token)
    assert after.status_code == 200 and "<Hangup" in after.text and "<Say>" not in after.text
    unknown = await post_stream_ended(server.url, "CA" + "f" * 32, auth_token)
    assert "<Say>" in unknown.text  # we never closed it: the server failed, apologise
    forged = await post_stream_ended(server.url, "CA" + "e" * 32, "wrong-token")
    assert forged.status_code == 403
