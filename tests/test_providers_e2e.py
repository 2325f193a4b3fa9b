"""Whole phone calls on cloud speech providers: the real server (LiveServer), the simulator playing Twilio and the
caller, and the local fakes speaking each provider's wire protocol (with real Whisper and Piper behind them).

1. The Jay document's own example agent (Deepgram STT + OpenAI TTS, import line changed) answers a question.
2. Deepgram STT + ElevenLabs TTS: the greeting is heard and a question is answered.
3. Barge-in over ElevenLabs: the caller hears silence within the usual time and the provider was told to stop.
4. A provider killed mid-call: ElevenLabs drops mid-reply (apology + the rest on Piper, and the call goes on);
   Deepgram drops mid-question and refuses to come back (the utterance is transcribed by Whisper and answered).
5. Bad keys at call start: the call greets on the fallbacks; the log names each provider and its variable;
   ``/v1/health`` counts the errors and fallbacks.
6. No key in any log line (DEBUG), URL, query string, non-auth header, message body or recording.

Tests 2-6 share one server (module scope) and one fake per provider; each test restores the fault knobs it
set. Every key below is a distinctive string so a leak anywhere is found by a plain substring search.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from agents import cloud_e2e_agent as agent
from conftest import AUTH_TOKEN, LiveServer, finished_call
from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_server import FakeOpenAI, TextReply
from fakes.serve import ThreadedApp
from fakes.speech import speech_backend
import scenariolib
from scenariolib import AGENT_LOUD, CALLER_LOUD, FRAME, RATE, frame_rms
from speechutil import fuzzy_ratio, leading_text, normalise_words
from telebridge.audio.g711 import ulaw_decode
from telebridge.providers.stt import deepgram as dg_stt
from telebridge.simulator import Say, simulate_call

DG_KEY = "dg-secret-XYZ-4b1f8e2a9c7d"
EL_KEY = "el-secret-XYZ-0c6d2a8f4e1b"
OPENAI_KEY = "sk-secret-XYZ-7e3a5c9b1d2f"
DG_REVOKED = "dg-revoked-XYZ-5d9e1f3a7b2c"
EL_REVOKED = "el-revoked-XYZ-8a2c4e6b0d9f"
SECRETS = (DG_KEY, EL_KEY, OPENAI_KEY, DG_REVOKED, EL_REVOKED)
# Where each provider documents its key: the only place it may travel.
AUTH_HEADERS = {"authorization", "xi-api-key"}

SEED_AGENT = Path(__file__).parent / "fixtures" / "jay_seed_agent.py"
CLOUD_AGENT = Path(__file__).parent / "agents" / "cloud_e2e_agent.py"
SEED_QUESTION = "What is the weather like in Paris today?"
SEED_ANSWER = "It is sunny and twenty four degrees in Paris today."
HOURS_Q = "What are your opening hours?"
SERVICES_Q = "Tell me about your services."
FEES_Q = "How much is a cleaning?"
INTERRUPTION = scenariolib.INTERRUPTION  # the embedded stack's barge-in scenario says the same
APOLOGY = "Sorry, one moment."  # SessionConfig.provider_failure_message's default
# The embedded stack's barge-in bound (bench/scenarios.py CLEAR_TARGET): interrupt_time_threshold + 0.1 s.
BARGE_IN_BOUND = 0.5 + 0.1


# --- helpers ----------------------------------------------------------------------------------------------------
class Spy:
    """ASGI middleware in front of a fake: every request's and socket's path, query and raw headers (keys
    included), and any message body carrying one of SECRETS."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        entry = {"type": scope["type"], "path": scope["path"], "query": scope.get("query_string", b"").decode(),
                 "headers": [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]],
                 "leaks": []}
        self.seen.append(entry)
        secrets = [s.encode() for s in SECRETS]

        async def spy_receive() -> dict:
            message = await receive()
            for name in ("body", "bytes", "text"):
                data = message.get(name)
                if data:
                    raw = data.encode() if isinstance(data, str) else bytes(data)
                    entry["leaks"] += [s.decode() for s in secrets if s in raw]
            return message

        await self.app(scope, spy_receive, send)


class LogCollector(logging.Handler):
    """Every log record of the process, formatted with its traceback (no redaction: the raw lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a broken record must not break the test's logging
            self.lines.append(f"ERROR unformattable record from {record.name}: {record.msg!r} {record.args!r}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Stack:
    server: LiveServer
    dg: FakeDeepgram
    el: FakeElevenLabs
    spies: list[Spy]
    logs: LogCollector
    recordings: Path
    errors: list[str] = field(default_factory=list)  # fallback reasons of every call, for the leak check


async def poll(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.02)


def heard_text(call: Any, first: int = 0) -> str:
    return " ".join(seg.text for seg in call.agent_segments[first:])


def assistant(record: Any) -> list[str]:
    return [str(m["content"]) for m in record.history if m["role"] == "assistant" and m.get("content")]


def users(record: Any) -> list[str]:
    return [str(m["content"]) for m in record.history if m["role"] == "user"]


def el_texts(sock: dict) -> list[str]:
    """The sentences an ElevenLabs socket was asked to speak (flushed text messages), in order."""
    return [m["text"].strip() for m in sock["messages"] if m.get("flush") and m.get("text", "").strip()]


def voiced_seconds(ulaw: bytes) -> float:
    x = ulaw_decode(ulaw).astype(np.float32) / 32768.0
    n = len(x) // 160
    if not n:
        return 0.0
    rms = np.sqrt((x[: n * 160].reshape(n, 160) ** 2).mean(axis=1))
    return float((rms > 0.02).sum()) * 0.02


def health(server: LiveServer) -> dict[str, Any]:
    return httpx.get(server.url + "/v1/health", timeout=10).json()["providers"]


def new_sockets(fake: FakeElevenLabs, before: int) -> list[dict]:
    return [s for s in fake.sockets[before:] if s["path"].endswith("/multi-stream-input")]


@pytest.fixture(scope="module", autouse=True)
def _speech_loaded():
    """The fakes' Whisper and Piper load once, before any timed call."""
    speech_backend()._models()


@pytest.fixture(scope="module")
def logs():
    """Every log line of the module's calls (INFO and up; test 6 turns DEBUG on for its own call)."""
    root = logging.getLogger()
    collector = LogCollector()
    level = root.level
    root.addHandler(collector)
    root.setLevel(logging.INFO)
    yield collector
    root.removeHandler(collector)
    root.setLevel(level)


@pytest.fixture(scope="module")
def timings():
    """The fake's Whisper shares two busy cores with the server: give Deepgram's Finalize answer time (the real
    service answers in ~0.1 s), as tests/test_provider_deepgram.py's call does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dg_stt.DeepgramSTT, "finalize_timeout", 10.0)
        yield


@pytest.fixture(scope="module")
def stack(logs, timings, tmp_path_factory):
    dg, el = FakeDeepgram(DG_KEY), FakeElevenLabs(api_key=EL_KEY)
    spies = [Spy(dg.app), Spy(el.app)]
    apps = [ThreadedApp(spy).start() for spy in spies]
    recordings = tmp_path_factory.mktemp("recordings")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPGRAM_API_KEY", DG_KEY)
        mp.setenv("ELEVENLABS_API_KEY", EL_KEY)
        server = LiveServer(agent=str(CLOUD_AGENT), deepgram_base_url=apps[0].origin,
                            elevenlabs_base_url=apps[1].origin, recordings_dir=recordings).start()
        try:
            yield Stack(server, dg, el, spies, logs, recordings)
        finally:
            server.stop()
            for app in apps:
                app.stop()


async def call(stack: Stack, script: list[Any], **kw: Any) -> tuple[Any, Any]:
    kw.setdefault("duration", 40)
    kw.setdefault("end_when_quiet", 2.0)
    sim = await simulate_call(stack.server.url, script=script, auth_token=AUTH_TOKEN, **kw)
    record = await finished_call(stack.server, sim.call_sid)
    stack.errors += [reason for _, _, reason in record.speech.fallbacks]
    assert not sim.protocol_errors, sim.protocol_errors
    return sim, record


def assert_no_key_on_the_wire(spies: list[Spy], secrets: tuple[str, ...] = SECRETS) -> int:
    """No key in a path, query string, message body or non-auth header; returns how many requests carried one
    (in the provider's documented auth header)."""
    carried = 0
    for spy in spies:
        for entry in spy.seen:
            where = f"{entry['type']} {entry['path']}"
            for key in secrets:
                assert key not in entry["path"] and key not in entry["query"], where
                for name, value in entry["headers"]:
                    if key in value:
                        assert name in AUTH_HEADERS, f"{key[:6]}… in header {name!r} of {where}"
                        carried += 1
            assert not entry["leaks"], f"a key in a message body of {where}"
    return carried


# --- 1. the Jay document's own example agent ---------------------------------------------------------------------
async def test_the_jay_seed_example_agent_answers_on_deepgram_and_openai(auth_token, monkeypatch, caplog, timings):
    """The seed's configure_session (Deepgram STT + OpenAI TTS, import line changed) with an AsyncOpenAI chat
    stream: the caller asks, the answer they hear transcribes to the LLM's text; both directions went through
    the fakes; no fallback; at DEBUG, no key in a log line or URL."""
    dg = FakeDeepgram(DG_KEY)
    openai = FakeOpenAI([TextReply(SEED_ANSWER)], api_key=OPENAI_KEY)
    spies = [Spy(dg.app), Spy(openai.app)]
    dg_app, openai_app = ThreadedApp(spies[0]).start(), ThreadedApp(spies[1]).start()
    monkeypatch.setenv("DEEPGRAM_API_KEY", DG_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_app.origin + "/v1")
    caplog.set_level(logging.DEBUG)
    server = LiveServer(agent=str(SEED_AGENT), deepgram_base_url=dg_app.origin).start()
    try:
        sim = await simulate_call(
            server.url, script=[Say(at=1.0, text=SEED_QUESTION)], auth_token=auth_token,
            custom_parameters={"my_user_timezone": "Europe/Paris"}, duration=40, end_when_quiet=2.0,
            transcribe=True)
        record = await finished_call(server, sim.call_sid)
        providers = health(server)
    finally:
        server.stop()
        dg_app.stop()
        openai_app.stop()
    assert not sim.protocol_errors, sim.protocol_errors
    assert record.session_data == {"my_user_id": "test-12345", "my_user_timezone": "Europe/Paris"}
    # The question was heard through Deepgram, answered by the (fake) LLM, spoken through OpenAI.
    assert users(record) and fuzzy_ratio(SEED_QUESTION, users(record)[0]) > 0.6, record.history
    assert record.history[-1] == {"role": "assistant", "content": SEED_ANSWER}
    assert len(openai.requests) == 1 and openai.requests[0]["stream"] is True
    assert openai.requests[0]["messages"][-1]["role"] == "user"
    assert fuzzy_ratio(SEED_ANSWER, heard_text(sim)) > 0.6, sim.agent_segments
    # STT: one live socket for the call, the caller's μ-law 8 kHz as is, the whole call's audio, the question in it.
    assert len(dg.listens) == 1, dg.urls
    listen = dg.listens[0]
    q = {k: v[0] for k, v in listen.query.items()}
    assert (q["encoding"], q["sample_rate"]) == ("mulaw", "8000")
    assert len(listen.audio) >= 0.8 * len(sim.sent) and voiced_seconds(bytes(listen.audio)) > 1.0
    assert "Finalize" in listen.controls and "CloseStream" in listen.controls
    finals = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in listen.sent
                      if m.get("type") == "Results" and m["is_final"])
    assert fuzzy_ratio(SEED_QUESTION, finals) > 0.6, finals
    # TTS: OpenAI's /v1/audio/speech, streamed PCM, every sentence of the answer and nothing else.
    speech = [r for r in openai.audio_requests if r["path"] == "/v1/audio/speech"]
    assert speech and all(r["body"]["response_format"] == "pcm" and r["authorized"] for r in speech)
    assert " ".join(r["body"]["input"] for r in speech) == SEED_ANSWER
    assert openai.speech_completed == len(speech)
    # No fallback anywhere.
    assert record.speech.fallbacks == []
    assert (record.speech.stt_cfg.provider, record.speech.tts_cfg.provider) == ("deepgram", "openai")
    for name in ("stt.deepgram", "tts.openai"):
        assert providers[name]["fallbacks"] == 0 and providers[name]["errors"] == 0 and providers[name]["up"], providers
    # Keys: only in the auth headers (every request carried one), never in a DEBUG log line.
    carried = assert_no_key_on_the_wire(spies)
    assert carried == sum(len(s.seen) for s in spies)
    assert any(r.levelno == logging.DEBUG and r.name.startswith(("openai", "httpcore")) for r in caplog.records)
    for key in (DG_KEY, OPENAI_KEY):
        assert key not in caplog.text


# --- 2. Deepgram + ElevenLabs: greeting and an answer ------------------------------------------------------------
async def test_deepgram_and_elevenlabs_greet_and_answer(stack):
    el_before, dg_before = len(stack.el.sockets), len(stack.dg.listens)
    sim, record = await call(stack, [Say(at=None, text=HOURS_Q, after_agent_quiet=0.8)], transcribe=True)
    greeting, *answer = sim.agent_segments
    assert fuzzy_ratio(agent.GREETING, greeting.text) > 0.7, sim.agent_segments
    assert fuzzy_ratio(agent.HOURS, " ".join(s.text for s in answer)) > 0.6, sim.agent_segments
    assert users(record) and fuzzy_ratio(HOURS_Q, users(record)[0]) > 0.6, record.history
    assert assistant(record) == [agent.GREETING, agent.HOURS]
    # One Deepgram socket (μ-law straight from the line) and one ElevenLabs socket (ulaw_8000) for the call.
    listens = stack.dg.listens[dg_before:]
    assert len(listens) == 1 and listens[0].query["encoding"] == ["mulaw"], [r.url for r in listens]
    assert "Finalize" in listens[0].controls and voiced_seconds(bytes(listens[0].audio)) > 0.8
    socks = new_sockets(stack.el, el_before)
    assert len(socks) == 1 and socks[0]["query"]["output_format"] == "ulaw_8000" and socks[0]["key_ok"]
    assert el_texts(socks[0]) == [agent.GREETING, *agent.HOURS_SENTENCES]
    assert record.speech.fallbacks == []


# --- 3. barge-in over a cloud TTS ---------------------------------------------------------------------------------
async def test_barge_in_over_elevenlabs_silences_the_caller_side_and_stops_the_provider(stack):
    """The long reply is generated about as fast as it plays (the fake paces its chunks), so a sentence is in
    flight at the provider when the caller talks over it: its first sentence (2.6 s of audio; the next is asked for
    only once it is done) takes 8 pieces 0.4 s apart, and the caller starts 1.2 s into it, so the barge-in lands
    about a second before its last piece (starting at 2.0 s, a slow barge-in on a busy machine could miss it).
    The fake's Whisper, on two busy cores, takes seconds
    to send the words that confirm a barge-in (Deepgram: ~0.3 s), so this call waits up to 8 s for them before
    treating the speech as a false interruption: the pause (the silence measured here) is the same either way."""
    el_before = len(stack.el.sockets)
    stack.el.pieces, stack.el.chunk_delay = 8, 0.4
    try:
        sim, record = await call(stack, [Say(at=None, text=SERVICES_Q, after_agent_quiet=0.8),
                                         Say(at=None, text=INTERRUPTION, after_agent_speech=1.2)],
                                 custom_parameters={"false_interruption_timeout": "8"}, transcribe=False)
    finally:
        stack.el.pieces, stack.el.chunk_delay = 4, 0.0
    says = [e.t for e in sim.events if e.side == "caller" and e.kind == "say"]
    assert len(says) == 2, sim.events
    caller_rms, heard_rms = frame_rms(sim.caller_audio), frame_rms(sim.heard)
    loud = np.flatnonzero(caller_rms > CALLER_LOUD) * FRAME / RATE
    onset = float(loud[loud >= says[1] - 0.02][0])
    speech_end = float(loud[-1]) + FRAME / RATE
    # The agent was talking when the caller started (this is a barge-in, not a turn).
    i_onset = int(onset * RATE / FRAME)
    assert (heard_rms[i_onset - 25 : i_onset] > AGENT_LOUD).any(), "the agent was not speaking at the onset"
    # The caller hears silence within the embedded stack's bound, and it stays silent while they talk.
    agent_loud = np.flatnonzero(heard_rms[i_onset : int(speech_end * RATE / FRAME)] > AGENT_LOUD)
    silent_from = onset + ((int(agent_loud[-1]) + 1) * FRAME / RATE if agent_loud.size else 0.0)
    clears = [e.t for e in sim.events_of("clear") if e.t >= onset]
    assert clears and clears[0] - onset <= BARGE_IN_BOUND, (onset, clears)
    assert silent_from - onset <= BARGE_IN_BOUND, (onset, silent_from)
    print(f"barge-in over ElevenLabs: clear {1000 * (clears[0] - onset):.0f} ms, silence "
          f"{1000 * (silent_from - onset):.0f} ms after the caller's onset")
    # The reply was cut off as heard, the interruption became the caller's turn and was answered.
    said = assistant(record)
    cut = next((s for s in said if s.endswith("…")), None)
    assert cut is not None and agent.SERVICES.startswith(cut[:-1].strip()[:20]), said
    assert any(fuzzy_ratio(INTERRUPTION, u) > 0.6 for u in users(record)), record.history
    assert said[-1] == agent.APPOINTMENT, (said, users(record))
    # The provider was told to stop: the in-flight sentence's context closed again at the barge-in and its
    # socket dropped mid-generation (the fake records the generation it stopped); later sentences never sent.
    socks = new_sockets(stack.el, el_before)
    sentences = agent.SERVICES.split(". ")
    service_ctx = {m["context_id"] for s in socks for m in s["messages"]
                   if m.get("flush") and any(m["text"].strip().startswith(x[:25]) for x in sentences)}
    stopped = service_ctx & set(stack.el.cancelled)
    assert stopped, (service_ctx, stack.el.cancelled)
    closes = [m["context_id"] for s in socks for m in s["messages"] if m.get("close_context")]
    assert any(closes.count(cid) >= 2 for cid in stopped), closes
    spoken = " ".join(t for s in socks for t in el_texts(s))
    assert sentences[-1].strip() not in spoken, "the reply's last sentence reached the provider"
    assert agent.APPOINTMENT in spoken  # the answer after the barge-in: on a fresh socket, same provider
    assert record.speech.fallbacks == []


# --- 4. a provider killed mid-call ------------------------------------------------------------------------------
async def test_tts_killed_mid_reply_apologises_in_the_fallback_voice_and_the_call_goes_on(stack):
    el_before = len(stack.el.sockets)
    # The greeting is one sentence = 4 audio messages (pieces=4); the socket dies on the answer's 2nd message.
    stack.el.drop_after_chunks = 6
    try:
        sim, record = await call(stack, [Say(at=None, text=HOURS_Q, after_agent_quiet=0.8),
                                         Say(at=None, text=FEES_Q, after_agent_quiet=1.0)], transcribe=True)
    finally:
        stack.el.drop_after_chunks = None
    assert record.speech.fallbacks and record.speech.fallbacks[0][:2] == ("tts", "elevenlabs"), record.speech.fallbacks
    assert record.speech.tts_cfg.provider == "piper"
    # Heard: the greeting, a cut sentence, the apology, the whole answer again; then the second answer.
    greeting = leading_text(sim.agent_segments, agent.GREETING)[0]
    assert fuzzy_ratio(agent.GREETING, greeting) > 0.7, sim.agent_segments
    after = normalise_words(heard_text(sim, 1))
    at = next((i for i in range(len(after)) if fuzzy_ratio(" ".join(after[i : i + 3]), APOLOGY) > 0.6), None)
    assert at is not None, after
    rest = " ".join(after[at + 3 :])
    assert fuzzy_ratio(agent.HOURS + " " + agent.FEES, rest) > 0.6, rest
    assert -1 < rest.find("saturdays") < rest.find("cleaning"), rest  # the rest of the answer, then the next one
    # The apology and everything after the drop came from Piper: ElevenLabs never saw them.
    socks = new_sockets(stack.el, el_before)
    spoken = [t for s in socks for t in el_texts(s)]
    assert spoken == [agent.GREETING, agent.HOURS_SENTENCES[0]], spoken
    assert assistant(record)[-1] == agent.FEES and fuzzy_ratio(FEES_Q, users(record)[-1]) > 0.6, record.history
    assert stack.server.runtime.provider_health.snapshot()["tts.elevenlabs"]["fallbacks"] >= 1


async def test_stt_killed_mid_question_is_transcribed_by_whisper_and_answered(stack):
    dg = stack.dg
    dg_before = len(dg.listens)

    async def kill_when_the_caller_speaks() -> float:
        """Once the caller's question reaches the fake, drop the socket 0.4 s later and refuse every reconnect
        (WebSocket and REST) with 503: the stream gives up."""
        await poll(lambda: len(dg.listens) > dg_before, timeout=30, what="the call's listen socket")
        listen = dg.listens[dg_before]
        await poll(lambda: voiced_seconds(bytes(listen.audio[-1600:])) > 0.1, timeout=40, what="the question")
        dg.fail_handshakes.extend([503] * 50)
        dg.fail_http.extend([503] * 50)
        at = len(listen.audio) / 8000 + 0.4
        dg.drop_listen_after = at
        return at

    killer = asyncio.create_task(kill_when_the_caller_speaks())
    try:
        sim, record = await call(stack, [Say(at=None, text=HOURS_Q, after_agent_quiet=0.8)], transcribe=True)
        assert killer.done(), "the caller's question never reached Deepgram"
        await killer
    finally:
        killer.cancel()
        dg.fail_handshakes.clear()
        dg.fail_http.clear()
        dg.drop_listen_after = None
    listens = dg.listens[dg_before:]
    assert len(listens) == 1 and listens[0].close_code == 1011, [(r.url, r.close_code) for r in listens]
    assert record.speech.fallbacks and record.speech.fallbacks[0][:2] == ("stt", "deepgram"), record.speech.fallbacks
    assert record.speech.stt_cfg.provider == "whisper"
    # The whole question, heard again by Whisper from the VAD's copy, and answered (by ElevenLabs still).
    assert users(record) and fuzzy_ratio(HOURS_Q, users(record)[0]) > 0.7, record.history
    assert assistant(record) == [agent.GREETING, agent.HOURS]
    assert fuzzy_ratio(agent.HOURS, heard_text(sim, 1)) > 0.6, sim.agent_segments
    snap = stack.server.runtime.provider_health.snapshot()["stt.deepgram"]
    assert snap["fallbacks"] >= 1 and snap["errors_by_kind"].get("server", 0) >= 1, snap


# --- 5. bad keys at call start ----------------------------------------------------------------------------------
async def test_bad_keys_at_call_start_fall_back_name_the_variables_and_show_in_health(stack, monkeypatch, caplog):
    monkeypatch.setenv("DEEPGRAM_API_KEY", DG_REVOKED)  # read by configure_session: a new client, a new check
    monkeypatch.setenv("ELEVENLABS_API_KEY", EL_REVOKED)
    caplog.set_level(logging.INFO)
    before = health(stack.server)
    el_before, dg_before, dg_refused = len(stack.el.sockets), len(stack.dg.listens), stack.dg.auth_failures
    sim, record = await call(stack, [], transcribe=True, duration=20, end_when_quiet=1.5)
    after = health(stack.server)
    # Greeted anyway, on Piper; heard by Whisper from the start.
    assert sim.agent_segments, sim.agent_segments
    assert fuzzy_ratio(agent.GREETING, leading_text(sim.agent_segments, agent.GREETING)[0]) > 0.7, sim.agent_segments
    assert assistant(record) == [agent.GREETING]
    assert sorted(f[:2] for f in record.speech.fallbacks) == [("stt", "deepgram"), ("tts", "elevenlabs")]
    assert (record.speech.stt_cfg.provider, record.speech.tts_cfg.provider) == ("whisper", "piper")
    # The fakes refused the keys (401) and no stream was opened with them.
    assert stack.dg.auth_failures > dg_refused and len(stack.dg.listens) == dg_before
    checks = [r for r in stack.el.requests if r["path"] == "/v1/user" and not r["key_ok"]]
    assert checks and not new_sockets(stack.el, el_before)
    # The log names the provider and its environment variable, once per provider, as an error.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and sim.call_sid in r.getMessage()]
    assert len([m for m in errors if "STT.Deepgram" in m and "DEEPGRAM_API_KEY" in m]) == 1, errors
    assert len([m for m in errors if "TTS.ElevenLabs" in m and "ELEVENLABS_API_KEY" in m]) == 1, errors
    # /v1/health counts them.
    for name in ("stt.deepgram", "tts.elevenlabs"):
        was = before.get(name, {"fallbacks": 0, "errors_by_kind": {}})
        now = after[name]
        assert now["fallbacks"] == was["fallbacks"] + 1, (name, was, now)
        assert now["errors_by_kind"].get("auth", 0) > was["errors_by_kind"].get("auth", 0), (name, was, now)
        assert not now["up"] and "_API_KEY" in now["detail"], now
    assert health(stack.server)  # still answers (cheap, cached)


# --- 6. no key in logs, URLs or recordings ------------------------------------------------------------------------
async def test_no_key_in_logs_urls_or_recordings(stack, caplog):
    """A recorded call at DEBUG, with a Deepgram reconnect (a 429 on the handshake, then a dropped socket) so the
    error paths log too; then every log line, URL, query, header and recording of the module is searched."""
    dg_before, el_before = len(stack.dg.listens), len(stack.el.sockets)
    stack.dg.fail_handshakes.append(429)
    stack.dg.drop_listen_after = 1.5  # during the greeting
    caplog.set_level(logging.DEBUG)
    try:
        sim, record = await call(stack, [Say(at=None, text=HOURS_Q, after_agent_quiet=0.8)], transcribe=True)
    finally:
        stack.dg.fail_handshakes.clear()
        stack.dg.drop_listen_after = None
    logging.getLogger().setLevel(logging.INFO)
    # The call itself worked, through a reconnect.
    assert assistant(record) == [agent.GREETING, agent.HOURS] and record.speech.fallbacks == []
    listens = stack.dg.listens[dg_before:]
    assert len(listens) == 2 and listens[0].close_code == 1011, [(r.url, r.close_code) for r in listens]
    assert any("retrying" in r.getMessage() for r in caplog.records), "the 429 retry was not logged"
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    # Logs: this call's DEBUG lines and every line the module's calls logged (failures and fallbacks included).
    text = caplog.text + "\n" + stack.logs.text
    for key in SECRETS:
        assert key not in text, f"{key[:6]}… in the logs"
        assert all(key not in reason for reason in stack.errors)
    # Wire: keys only in the documented auth header; never in a path, query string, other header or body.
    assert assert_no_key_on_the_wire(stack.spies) >= 3  # this call: the refused listen, its retry, the reconnect
    for sock in new_sockets(stack.el, el_before):
        assert sock["key_ok"] and "key_in_query" not in sock
    for listen in listens:
        assert listen.headers["authorization"] == "Token ***"  # the fake accepted "Token <key>"
    # Health: the providers' error details carry no key.
    report = httpx.get(stack.server.url + "/v1/health", timeout=10).text
    assert not any(key in report for key in SECRETS)
    # Recordings: this call's file exists and is complete; no file of the module holds a key.
    await poll(lambda: any(sim.call_sid in p.name for p in stack.recordings.glob("*.jsonl")), timeout=10,
               what="the call's recording")
    files = sorted(stack.recordings.glob("*.jsonl"))
    mine = next(p for p in files if sim.call_sid in p.name)
    lines = [json.loads(line) for line in mine.read_text().splitlines()]
    assert lines[0]["data"]["type"] == "telebridge.recording.started" and lines[0]["data"]["voice"] == agent.VOICE.name
    assert lines[-1]["data"]["type"] == "telebridge.recording.ended"
    assert any(agent.HOURS.split(".")[0] in json.dumps(line) for line in lines)
    for path in files:
        raw = path.read_text()
        for key in SECRETS:
            assert key not in raw, f"{key[:6]}… in recording {path.name}"
    # URLs the fakes saw, as their own records show them.
    for url in [*stack.dg.urls, *(s["path"] + json.dumps(s["query"]) for s in stack.el.sockets + stack.el.requests)]:
        assert not any(key in url for key in SECRETS), url

