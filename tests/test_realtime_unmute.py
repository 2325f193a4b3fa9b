"""Unmute's own clients against a real telebridge server, and OpenAI-style turn driving.

The Unmute client here does what Unmute's load-test client (``unmute/loadtest/loadtest_client.py``) and web
frontend do: it picks a voice from ``GET /v1/voices`` parsed as Unmute's ``VoiceSample`` and sends its
``path_on_server``; sends typed instructions; streams one Ogg/Opus stream made with ``sphn`` (40 ms frames,
in real time, silence included) and reads the replies' Ogg/Opus with ``sphn``; validates every server event
against Unmute's event union (``unmute_protocol.py``); and keeps its chat history from
``unmute.additional_outputs``. It holds a whole conversation: greeting, a question answered (transcribed on
both sides: Whisper hears the reply's decoded Opus say the reply's text), a story cut off by the user.

The OpenAI-style client ends its turns itself (``input_audio_buffer.commit`` + ``response.create``, with no
trailing silence for the VAD) and stops a reply with ``response.cancel``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sphn
import websockets
from conftest import LiveServer
from pydantic import ValidationError
from speechutil import fuzzy_ratio, resample, synth
from unmute_protocol import (
    SERVER_EVENT,
    InputAudioBufferAppend,
    SessionConfig,
    SessionUpdate,
    SmalltalkInstructions,
    VoiceSample,
)

from telebridge.realtime.instructions import (
    ANIMALS_EASY,
    ANIMALS_HARD,
    TYPED_INSTRUCTIONS,
    GuessAnimalInstructions,
    QuizShowInstructions,
)

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
GREETING = "Hello there."
HOURS = "We are open every day, from early morning until late evening."
STORY_START = "Once upon a time there was a little lighthouse on a rocky island."
# Long enough that its first words are heard while the user is still talking, even on a busy machine.
INTERRUPTION = "Sorry to interrupt you, but could you please tell me your opening hours?"
RATE = 24000
FRAME = 960  # 40 ms, as Unmute's clients send it

VOICES_FILE = {
    "default": {"language": "en", "gender": "neutral", "tts": {"provider": "piper"}},
    "voice_001": {"language": "en", "gender": "female", "tts": {"provider": "piper", "pitch": 1.1}},
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("unmute")
    voices = tmp / "voices.json"
    voices.write_text(json.dumps(VOICES_FILE))
    server = LiveServer(agent=AGENT, voices_file=voices, voices_list_style="unmute")
    server.start()
    yield server
    server.stop()


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http", "ws") + "/v1/realtime"


async def transcribe(audio16k: np.ndarray) -> str:
    from telebridge.simulator import _default_stt

    return str((await _default_stt().transcribe(audio16k)).text).strip()


class UnmuteClient:
    """Unmute's protocol exactly: sphn Ogg/Opus both ways, every server event validated against its union."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.audio: dict[int, np.ndarray] = {}  # event index → PCM decoded from that response.audio.delta
        self.chat_history: list[dict[str, Any]] = []
        self.chat_at_audio_done: list[list[dict[str, Any]]] = []
        self.invalid: list[str] = []
        self._new = asyncio.Event()
        self._speech: collections.deque[np.ndarray] = collections.deque()
        self._writer = sphn.OpusStreamWriter(RATE)
        self._reader = sphn.OpusStreamReader(RATE)
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> UnmuteClient:
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._mic())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _receive(self) -> None:
        async for message in self.ws:
            assert isinstance(message, str)
            try:
                event = SERVER_EVENT.validate_json(message)  # what Unmute's load-test client does
            except ValidationError as exc:
                self.invalid.append(f"{message[:200]}: {exc}")
                continue
            data = json.loads(message)
            if event.type == "response.audio.delta":
                self.audio[len(self.events)] = self._reader.append_bytes(base64.b64decode(event.delta))
            elif event.type == "unmute.additional_outputs":
                self.chat_history = event.args["chat_history"]
            elif event.type == "response.audio.done":
                self.chat_at_audio_done.append(list(self.chat_history))
            self.events.append(data)
            self._new.set()

    def say(self, text: str) -> None:
        audio = synth(text, RATE)
        for i in range(0, len(audio), FRAME):
            piece = audio[i : i + FRAME]
            self._speech.append(np.pad(piece, (0, FRAME - len(piece))))

    async def _mic(self) -> None:
        """One Ogg/Opus stream, one 40 ms frame per 40 ms (silence unless speech is queued), from the start."""
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0
        silence = np.zeros(FRAME, dtype=np.float32)
        while True:
            frame = self._speech.popleft() if self._speech else silence
            opus = self._writer.append_pcm(frame)
            if opus:
                event = InputAudioBufferAppend(audio=base64.b64encode(opus).decode("utf-8"))
                await self.ws.send(event.model_dump_json())
            k += 1
            await asyncio.sleep(max(0.0, start + k * FRAME / RATE - loop.time()))

    async def next_event(self, kind: str, after: int = 0, timeout: float = 25.0, **match: Any) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i in range(after, len(self.events)):
                e = self.events[i]
                if e["type"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return i
            if loop.time() > deadline:
                kinds = [e["type"] for e in self.events[after:] if e["type"] != "response.audio.delta"]
                raise AssertionError(f"no {kind} {match or ''} after {after}; saw {kinds}; invalid {self.invalid}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    def between(self, start: int, end: int, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events[start:end] if e["type"] == kind]

    def audio_of(self, start: int, end: int) -> np.ndarray:
        """The reply audio decoded from events[start:end], at 16 kHz."""
        parts = [self.audio[i] for i in range(start, end) if i in self.audio]
        pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return resample(pcm.astype(np.float32), RATE, 16000)


async def test_unmute_client_holds_a_whole_conversation_in_opus(srv):
    # Voices, as the load-test client reads them: VoiceSample (extra="forbid"), then source.path_on_server.
    async with httpx.AsyncClient() as http:
        voices = (await http.get(srv.url + "/v1/voices")).json()
    samples = [VoiceSample(**v) for v in voices]
    voice = samples[0].source.path_on_server
    assert voice == "voices/default" and [s.name for s in samples] == ["default", "voice_001"]

    async with websockets.connect(ws_url(srv), subprotocols=["realtime"]) as ws, UnmuteClient(ws) as client:
        update = SessionUpdate(session=SessionConfig(instructions=SmalltalkInstructions(), voice=voice,
                                                     allow_recording=False))
        await ws.send(update.model_dump_json())
        updated = client.events[await client.next_event("session.updated")]
        assert updated["session"] == {"instructions": {"type": "smalltalk", "language": None}, "voice": voice,
                                      "allow_recording": False}

        # The greeting: response.created names the voice as the client did; the chat history (no system
        # messages) ends with the reply when its audio is done; the Opus decodes to speech saying it.
        created = await client.next_event("response.created")
        response = client.events[created]["response"]
        assert response["voice"] == voice and response["status"] == "in_progress"
        system = [m for m in response["chat_history"] if m["role"] == "system"]
        assert system[-1]["name"] == "unmute_instructions" and "# BASICS" in system[-1]["content"]
        done = await client.next_event("response.audio.done", created)
        assert client.chat_at_audio_done[0] == [{"role": "assistant", "content": GREETING}]
        greeting_audio = client.audio_of(created, done)
        assert len(greeting_audio) > 0.5 * 16000
        assert fuzzy_ratio(await transcribe(greeting_audio), GREETING) > 0.6

        # A question in Opus: transcribed (Unmute's deltas, no .completed), answered, the answer's Opus says it.
        client.say("What are your opening hours?")
        started = await client.next_event("input_audio_buffer.speech_started", done)
        answer = await client.next_event("response.created", started)
        words = "".join(e["delta"] for e in client.between(started, answer,
                                                           "conversation.item.input_audio_transcription.delta"))
        assert fuzzy_ratio(words, "What are your opening hours?") > 0.7, words
        answer_done = await client.next_event("response.audio.done", answer)
        text_done = await client.next_event("response.text.done", answer)
        assert client.events[text_done]["text"] == HOURS
        heard = await transcribe(client.audio_of(answer, answer_done))
        assert fuzzy_ratio(heard, HOURS) > 0.7, heard
        chat = client.chat_at_audio_done[1]
        assert [m["role"] for m in chat] == ["assistant", "user", "assistant"] and chat[-1]["content"] == HOURS
        assert fuzzy_ratio(chat[1]["content"], "What are your opening hours?") > 0.7

        # An interruption: the story is cut off by the user's next question, which is then answered.
        client.say("Please tell me a story.")
        story = await client.next_event("response.created", answer_done)
        first_audio = await client.next_event("response.audio.delta", story)
        while len(client.between(first_audio, len(client.events), "response.audio.delta")) < 40:
            await client.next_event("response.audio.delta", len(client.events))
        client.say(INTERRUPTION)
        cut = await client.next_event("unmute.interrupted_by_vad", story)
        cut_text = client.events[await client.next_event("response.text.done", story)]["text"]
        assert cut_text.endswith("…") and len(cut_text) < len(STORY_START) + 40, cut_text
        again = await client.next_event("response.created", cut + 1)
        await client.next_event("response.text.done", again, text=HOURS)
        await client.next_event("response.audio.done", again)
        await asyncio.sleep(0.3)  # the last additional outputs

    assert not client.invalid, client.invalid[:3]  # every event was one of Unmute's union, fully valid
    kinds = {e["type"] for e in client.events}
    assert "conversation.item.input_audio_transcription.completed" not in kinds
    roles = [m["role"] for m in client.chat_history]
    assert "system" not in roles and roles[:4] == ["assistant", "user", "assistant", "user"]
    story_message = client.chat_history[4]
    assert story_message["role"] == "assistant" and story_message["content"] == cut_text
    assert client.chat_history[-1] == {"role": "assistant", "content": HOURS}


async def test_typed_instructions_become_the_system_message_and_errors_name_the_field(srv):
    rng = random.Random(7)
    game = GuessAnimalInstructions(language="en").system_prompt(rng)
    assert "# BASICS" in game and any(a in game for a in ANIMALS_EASY) and any(a in game for a in ANIMALS_HARD)
    quiz = QuizShowInstructions().system_prompt(rng)
    assert sum(f"\n{i}. " in quiz for i in range(1, 6)) == 5
    constant = TYPED_INSTRUCTIONS.validate_python({"type": "constant", "text": "Talk like a pirate.",
                                                   "language": "fr"}).system_prompt()
    assert "Talk like a pirate." in constant and "Speak French" in constant

    async with websockets.connect(ws_url(srv), subprotocols=["realtime"]) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "instructions": {"type": "constant", "text": 5}, "voice": "voices/voice_001"}}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error"
        assert [(d["type"], d["loc"]) for d in error["error"]["details"]] == [
            ("string_type", ["session", "instructions", "constant", "text"])]
        await ws.send(json.dumps({"type": "session.update", "session": {
            "instructions": {"type": "constant", "text": "Talk like a pirate."}, "voice": "voices/voice_001"}}))
        updated = json.loads(await ws.recv())
        assert updated["session"] == {"instructions": {"type": "constant", "text": "Talk like a pirate.",
                                                       "language": None},
                                      "voice": "voices/voice_001", "allow_recording": False}
        while (event := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] != "response.created":
            pass
        history = event["response"]["chat_history"]
        assert history[1]["name"] == "unmute_instructions" and "Talk like a pirate." in history[1]["content"]
        assert event["response"]["voice"] == "voices/voice_001"


# --- OpenAI-style turn driving -------------------------------------------------------------------------------


class PcmClient:
    """A PCM16 client that sends speech and then nothing: its turns end by commit, not by trailing silence."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> PcmClient:
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _receive(self) -> None:
        async for message in self.ws:
            self.events.append(json.loads(message))

    async def speak(self, text: str) -> None:
        """The utterance in real time (40 ms chunks) with 200 ms of silence before it, then the mic goes quiet."""
        audio = np.concatenate([np.zeros(RATE // 5, np.float32), synth(text, RATE)])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k, i in enumerate(range(0, len(audio), FRAME)):
            pcm = (np.clip(audio[i : i + FRAME], -1, 1) * 32767).astype("<i2").tobytes()
            await self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                           "audio": base64.b64encode(pcm).decode()}))
            await asyncio.sleep(max(0.0, start + (k + 1) * FRAME / RATE - loop.time()))

    async def wait_for(self, kind: str, after: int = 0, timeout: float = 20.0, **match: Any) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for i in range(after, len(self.events)):
                if self.events[i]["type"] == kind and all(self.events[i].get(k) == v for k, v in match.items()):
                    return i
            await asyncio.sleep(0.05)
        kinds = [e["type"] for e in self.events[after:] if e["type"] != "response.audio.delta"]
        raise AssertionError(f"no {kind} {match or ''} after {after}; saw {kinds}")

    def count(self, kind: str, after: int = 0) -> int:
        return sum(e["type"] == kind for e in self.events[after:])


async def test_turns_driven_by_commit_response_create_and_cancel(srv):
    async with websockets.connect(ws_url(srv), subprotocols=["realtime"]) as ws, PcmClient(ws) as client:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": "default"}}))
        await client.wait_for("response.text.done", text=GREETING)
        await client.wait_for("response.audio.done")
        await asyncio.sleep(0.5)

        # commit + response.create right after the last word: answered, once, with no trailing silence sent.
        mark = len(client.events)
        await client.speak("What are your opening hours?")
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        heard = await client.wait_for("conversation.item.input_audio_transcription.completed", mark)
        assert fuzzy_ratio(client.events[heard]["transcript"], "What are your opening hours?") > 0.7
        created = await client.wait_for("response.created", mark)
        done = await client.wait_for("response.text.done", heard, text=HOURS)
        await client.wait_for("response.audio.done", created)
        await asyncio.sleep(1.0)
        assert client.count("response.created", mark) == 1 and client.count("error", mark) == 0

        # response.create with nothing new from the user: the agent speaks on (a reply to the history).
        mark = len(client.events)
        await ws.send(json.dumps({"type": "response.create", "response": {"modalities": ["audio", "text"]}}))
        await client.wait_for("response.created", mark)
        await client.wait_for("response.text.done", mark)
        await client.wait_for("response.audio.done", mark)
        await asyncio.sleep(0.5)

        # response.cancel stops a reply being heard: the audio stops, the text says what was heard.
        mark = len(client.events)
        await client.speak("Please tell me a story.")
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        story = await client.wait_for("response.created", mark)
        first = await client.wait_for("response.audio.delta", story)
        await asyncio.sleep(1.5)
        await ws.send(json.dumps({"type": "response.cancel"}))
        stopped = await client.wait_for("unmute.interrupted_by_vad", first)
        text = client.events[await client.wait_for("response.text.done", story)]["text"]
        assert text.endswith("…") and len(text) < len(STORY_START) + 40, text
        await asyncio.sleep(1.0)
        late = [e for e in client.events[stopped + 1 :] if e["type"] == "response.audio.delta"]
        assert len(late) <= 1, len(late)  # nothing after the cancel (at most one chunk already in flight)
        assert client.count("error", mark) == 0 and done < story
