"""An inbound call as Twilio places it: signed Voice webhook, ``<Connect><Stream>``, then the caller's script.

:func:`simulate_call` POSTs the webhook form-encoded and signed (``X-Twilio-Signature``) exactly as Twilio does,
reads ``<Connect><Stream url=…>`` from the TwiML and opens the WebSocket with the upgrade signed over the URL the
TwiML named (the server may advertise its public ``wss://`` URL; we dial the same path on the host we were
given), then streams the caller's side in real time (see :mod:`.stream`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from .results import SimulatedCall, WebhookRejected
from .run import open_stream, prepare_audio, run_stream
from .script import Action, LineEcho
from .stream import TwilioApiHook
from .twiml import _join, _sid, _signature, _webhook_form, parse_twiml

if TYPE_CHECKING:
    from telebridge.providers.stt.whisper import WhisperSTT
    from telebridge.providers.tts.piper import PiperTTS

__all__ = ["simulate_call"]


async def simulate_call(
    url: str,
    *,
    script: Sequence[Action] = (),
    auth_token: str | None = None,
    from_number: str = "+15551230001",
    to_number: str = "+15559870002",
    extra_form: Mapping[str, str] | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    duration: float = 30.0,
    end_when_quiet: float | None = None,
    transcribe: bool = True,
    webhook_path: str = "/twilio/voice",
    realtime: bool = True,
    account_sid: str | None = None,
    public_url: str | None = None,
    tts: PiperTTS | None = None,
    stt: WhisperSTT | None = None,
    http_timeout: float = 15.0,
    echo: LineEcho | None = None,
    line_noise_dbfs: float | None = None,
    noise_seed: int = 0,
    twilio_api: TwilioApiHook | None = None,
) -> SimulatedCall:
    """Place one simulated inbound call against the telebridge server at ``url`` (e.g. http://127.0.0.1:8000).

    ``custom_parameters`` are merged over the TwiML's ``<Parameter>``s in ``start`` (a test hook; real Twilio
    sends only the TwiML's). ``public_url``, when the server validates webhooks against its public base URL,
    is what the webhook signature is computed over (and sent as X-Forwarded-Proto/Host). ``realtime=False``
    drops the 20 ms pacing (a virtual clock drives playback): only for fake servers in tests.
    ``echo``, ``line_noise_dbfs`` (seeded by ``noise_seed``) and ``twilio_api``: see the module docstring.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError("duration must be > 0")
    if end_when_quiet is not None and not end_when_quiet > 0:
        raise ValueError("end_when_quiet must be > 0")
    script = list(script)

    audio = await prepare_audio(script, tts)

    account_sid = account_sid or _sid("AC")
    call_sid = _sid("CA")
    stream_sid = _sid("MZ")
    form = _webhook_form(
        account_sid=account_sid,
        call_sid=call_sid,
        from_number=from_number,
        to_number=to_number,
        extra=extra_form or {},
    )
    webhook_url = _join(url, webhook_path)
    headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
    if public_url:
        pub = urlsplit(public_url)
        headers["X-Forwarded-Proto"] = pub.scheme
        headers["X-Forwarded-Host"] = pub.netloc
    if auth_token:
        headers["X-Twilio-Signature"] = _signature(_join(public_url or url, webhook_path), form, auth_token)
    async with httpx.AsyncClient(timeout=http_timeout) as http:
        response = await http.post(webhook_url, data=form, headers=headers)
    if not 200 <= response.status_code < 300:
        raise WebhookRejected(response.status_code, response.text)
    twiml = response.text
    target = parse_twiml(twiml)

    start_params = dict(target.parameters)
    start_params.update({str(k): str(v) for k, v in (custom_parameters or {}).items()})
    ws = await open_stream(url, target, auth_token, http_timeout)
    return await run_stream(
        ws, twiml=twiml, target=target, call_sid=call_sid, stream_sid=stream_sid, account_sid=account_sid,
        script=script, audio=audio, start_params=start_params, duration=duration, end_when_quiet=end_when_quiet,
        realtime=realtime, transcribe=transcribe, stt=stt, echo=echo, line_noise_dbfs=line_noise_dbfs,
        noise_seed=noise_seed, twilio_api=twilio_api,
    )
