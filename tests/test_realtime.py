"""WS /v1/realtime end to end: a `websockets` client talks to the real server with real speech.

One server for the module (the short-spoken test agent, a voices file shaped like the seed's example, a shared
voice store and a recordings directory). The seed's JSON examples are reproduced byte for byte (event ids
aside); errors leave the connection open; a whole conversation runs in real time with transcripts, aligned
text and audio, a voice cloned and used mid-session, a barge-in, and a recording deleted on withdrawal.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from conftest import LiveServer, voice_store
from speechutil import fuzzy_ratio, normalise_words, resample, synth

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.audio.wav import wav_bytes
from telebridge.cli import main as cli_main
from telebridge.recording import read_recording
from telebridge.voices.analysis import median_f0, prepare

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
GREETING = "Hello there."
HOURS = "We are open every day, from early morning until late evening."
EVENT_ID = re.compile(r"^event_[A-Za-z0-9]{20}$")

# The seed's examples, verbatim (the seed shows them with spaces around the punctuation).
SEED_VOICES = """[ { "name" : "default" , "language" : "en" , "gender" : "neutral" },
{ "name" : "voice_001" , "language" : "en" , "gender" : "female" },
{ "name" : "voice_002" , "language" : "en" , "gender" : "male" } ]"""
SEED_BASIC = """{ "type" : "session.update" , "session" : { "voice" : "default" , "allow_recording" : false } }"""
SEED_WITH_INSTRUCTIONS = """{ "type" : "session.update" , "session" : { "instructions" : {
"character" : "You are a friendly and helpful AI assistant with a warm personality." ,
"scenario" : "You are helping a user learn about voice AI technology." },
"voice" : "voice_001" , "allow_recording" : false } }"""
SEED_UPDATED = """{ "type" : "session.updated" , "event_id" : "event_ABC123xyz" , "session" : { "instructions" : {
"character" : "You are a friendly and helpful AI assistant with a warm personality." ,
"scenario" : "You are helping a user learn about voice AI technology." },
"voice" : "voice_001" , "allow_recording" : false } }"""
SEED_ERROR = """{ "type" : "error" , "error" : { "type" : "invalid_request_error" , "message" : "Invalid message" ,
"details" : [ { "type" : "missing" , "loc" : [ "session" ], "msg" : "Field required" } ] } }"""

VOICES_FILE = {
    "default": {"language": "en", "gender": "neutral", "tts": {"provider": "piper"}},
    "voice_001": {"language": "en", "gender": "female", "comment": "internal note",
                  "tts": {"provider": "piper", "pitch": 1.1}},
    "voice_002": {"language": "en", "gender": "male", "tts": {"provider": "piper", "length_scale": 1.1}},
    "retired": {"language": "en", "gender": "male", "good": False, "tts": {"provider": "piper"}},
}


def canonical(text: str) -> str:
    """JSON re-serialised compactly, key order kept: equal strings mean equal bytes on the wire."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def without_event_id(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event_id"}


@pytest.fixture(scope="module")
def rt(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("realtime")
    voices = tmp / "voices.json"
    voices.write_text(json.dumps(VOICES_FILE))
    with voice_store(tmp_path_factory) as store:  # Piper base profiles are measured once
        srv = LiveServer(agent=AGENT, voices_file=voices, voice_store_dir=store, recordings_dir=tmp / "recordings")
        srv.start()
        yield srv
        srv.stop()


def ws_url(srv: LiveServer) -> str:
    return srv.url.replace("http", "ws") + "/v1/realtime"


class Client:
    """A realtime client: a receiver task, and a microphone that streams 40 ms chunks in real time."""

    CHUNK = 0.04

    def __init__(self, ws: Any, fmt: str = "pcm16") -> None:
        self.ws = ws
        self.fmt = fmt
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._speech: collections.deque[np.ndarray] = collections.deque()
        self.mic_on = False
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Client:
        self._tasks.append(asyncio.create_task(self._receive()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _receive(self) -> None:
        async for message in self.ws:
            event = json.loads(message)
            event["_t"] = asyncio.get_running_loop().time()
            self.events.append(event)
            self._new.set()

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    def encode(self, audio24k: np.ndarray) -> str:
        if self.fmt == "g711_ulaw":
            return base64.b64encode(ulaw_encode(resample(audio24k, 24000, 8000))).decode()
        return base64.b64encode((np.clip(audio24k, -1, 1) * 32767).astype("<i2").tobytes()).decode()

    def start_mic(self) -> None:
        self.mic_on = True
        self._tasks.append(asyncio.create_task(self._mic()))

    def say(self, text: str) -> float:
        audio = synth(text, 24000)
        n = int(24000 * self.CHUNK)
        for i in range(0, len(audio), n):
            piece = audio[i : i + n]
            self._speech.append(np.pad(piece, (0, n - len(piece))))
        return len(audio) / 24000

    async def _mic(self) -> None:
        """Silence unless speech is queued, one chunk per 40 ms on an absolute schedule (no drift)."""
        loop = asyncio.get_running_loop()
        n = int(24000 * self.CHUNK)
        silence = np.zeros(n, dtype=np.float32)
        start = loop.time()
        k = 0
        while True:
            chunk = self._speech.popleft() if self._speech else silence
            await self.send({"type": "input_audio_buffer.append", "audio": self.encode(chunk)})
            k += 1
            await asyncio.sleep(max(0.0, start + k * self.CHUNK - loop.time()))

    async def next_event(self, kind: str, after: int = 0, timeout: float = 20.0, **match: Any) -> int:
        """Index of the first event of ``kind`` at or after ``after`` whose fields equal ``match``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i in range(after, len(self.events)):
                e = self.events[i]
                if e["type"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return i
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                kinds = [e["type"] for e in self.events[after:] if e["type"] != "response.audio.delta"]
                raise AssertionError(f"no {kind} {match or ''} after event {after}; saw {kinds}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def between(self, start: int, end: int, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events[start:end] if e["type"] == kind]

    def audio_of(self, start: int, end: int) -> np.ndarray:
        """The agent audio of events[start:end] as float32 at 16 kHz."""
        raw = b"".join(base64.b64decode(e["delta"]) for e in self.between(start, end, "response.audio.delta"))
        if self.fmt == "g711_ulaw":
            return resample(ulaw_decode_float(raw), 8000, 16000)
        return resample(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, 24000, 16000)


async def transcribe(audio16k: np.ndarray) -> str:
    from telebridge.simulator import _default_stt

    return str((await _default_stt().transcribe(audio16k)).text).strip()


# --- voices and the seed's examples -------------------------------------------------------------------------


async def test_voices_list_is_the_seed_example_plus_unmutes_source(rt):
    async with httpx.AsyncClient() as http:
        response = await http.get(rt.url + "/v1/voices")
    assert response.status_code == 200
    # Each entry is the seed's, byte for byte, followed by Unmute's source (no comment, no 'retired').
    listed = json.loads(response.text)
    seed_part = [{k: v for k, v in entry.items() if k != "source"} for entry in listed]
    assert json.dumps(seed_part) == json.dumps(json.loads(SEED_VOICES))
    assert [list(entry) for entry in listed] == [["name", "language", "gender", "source"]] * 3
    assert [entry["source"] for entry in listed] == [
        {"source_type": "file", "path_on_server": f"voices/{name}"} for name in ("default", "voice_001", "voice_002")]


async def test_session_update_examples_and_error_example_byte_for_byte(rt):
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws:
        assert ws.subprotocol == "realtime"
        await ws.send(SEED_WITH_INSTRUCTIONS)
        updated = json.loads(await ws.recv())
        assert EVENT_ID.match(updated["event_id"]), updated["event_id"]
        assert list(updated) == ["type", "event_id", "session"]
        expected = json.loads(SEED_UPDATED)
        assert json.dumps(without_event_id(updated)) == json.dumps(without_event_id(expected))

        await ws.send('{"type": "session.update"}')
        while (error := json.loads(await ws.recv()))["type"] != "error":
            pass  # the greeting may already be on its way
        assert EVENT_ID.match(error["event_id"])
        assert json.dumps(without_event_id(error)) == json.dumps(json.loads(SEED_ERROR))

        await ws.send(SEED_BASIC)  # the connection is still open after the error
        while (again := json.loads(await ws.recv()))["type"] != "session.updated":
            pass
        # A partial update keeps what was set before (instructions), the rest is the seed's basic example.
        assert again["session"] == {**expected["session"], "voice": "default"}


ERROR_CASES = [
    ("{not json", "json_invalid", []),
    ('{"type": "conversation.item.create"}', "literal_error", ["type"]),
    ('{"session": {}}', "missing", ["type"]),
    ('["session.update"]', "dict_type", []),
    ('{"type": "session.update", "session": {"voice": 5}}', "string_type", ["session", "voice"]),
    ('{"type": "session.update", "session": {"allow_recording": "perhaps"}}', "bool_parsing",
     ["session", "allow_recording"]),
    ('{"type": "session.update", "session": {"instructions": "be nice"}}', "model_type", ["session", "instructions"]),
    ('{"type": "session.update", "session": {"voise": "default"}}', "extra_forbidden", ["session", "voise"]),
    ('{"type": "session.update", "session": {"output_audio_format": "mp3"}}', "literal_error",
     ["session", "output_audio_format"]),
    ('{"type": "input_audio_buffer.append"}', "missing", ["audio"]),
    ('{"type": "input_audio_buffer.append", "audio": "not base64!"}', "base64_decode", ["audio"]),
    ('{"type": "session.update", "session": {"voice": "retired"}}', "unknown_voice", ["session", "voice"]),
    ('{"type": "session.update", "session": {"voice": "nobody"}}', "unknown_voice", ["session", "voice"]),
]


async def test_invalid_messages_get_error_events_and_the_connection_stays_open(rt):
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws:
        for frame, kind, loc in ERROR_CASES:
            await ws.send(frame)
            event = json.loads(await ws.recv())
            assert event["type"] == "error", (frame, event)
            error = event["error"]
            assert error["type"] == "invalid_request_error" and error["message"] == "Invalid message"
            assert [(d["type"], d["loc"]) for d in error["details"]] == [(kind, loc)], (frame, error)
            if kind == "unknown_voice":
                assert error["param"] == "session.voice" and error["code"] == "unknown_voice"
                assert "voice_001" in error["details"][0]["msg"]  # it says what the choices are
        await ws.send(b"\x00\x01")
        binary = json.loads(await ws.recv())
        assert binary["type"] == "error" and binary["error"]["details"][0]["type"] == "binary_frame"
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": "voice_002"}}))
        ok = json.loads(await ws.recv())
        assert ok["type"] == "session.updated"
        assert ok["session"] == {"instructions": None, "voice": "voice_002", "allow_recording": False}


async def test_a_full_server_answers_fatal_and_closes_1011(rt, monkeypatch):
    monkeypatch.setattr(rt.runtime.settings, "max_calls", 0)
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws:
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert event["type"] == "error" and event["error"]["type"] == "fatal"
    assert ws.close_code == 1011


# --- a whole conversation -----------------------------------------------------------------------------------


async def upload_clone(srv: LiveServer, pitch: float) -> str:
    """Clone a voice from Piper speech replayed ``pitch`` times higher (what the cloner should find)."""
    base = synth("Good morning. My tooth has been hurting since the weekend, so I would like to see a dentist "
                 "soon. Could you tell me when you are open?", 16000)
    higher = resample(base, int(16000 * pitch), 16000)  # played faster: higher and shorter
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(srv.url + "/v1/voices",
                                   files={"file": ("me.wav", wav_bytes(higher, 16000), "audio/wav")})
    assert response.status_code == 200, response.text
    return str(response.json()["name"])


def reply_f0(client: Client, created: int, end: int) -> float:
    f0, voiced = median_f0(prepare(client.audio_of(created, end), 16000))
    assert voiced > 0.3
    return f0


async def test_conversation_with_real_audio_clone_barge_in_and_recording(rt):
    clone = await upload_clone(rt, pitch=1.3)
    recordings = rt.settings.recordings_dir
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws, Client(ws) as client:
        # Audio before the first session.update is not processed (one warning says so).
        burst = synth("What are your opening hours?", 24000)
        await client.send({"type": "input_audio_buffer.append", "audio": client.encode(burst)})
        await client.next_event("error")
        assert client.events[-1]["error"]["type"] == "warning"

        await client.send({"type": "session.update", "session": {
            "instructions": {"character": "You are Ada, a calm assistant.", "scenario": "Opening hours."},
            "voice": "default", "allow_recording": True}})
        await client.next_event("session.updated")
        client.start_mic()
        greeting_done = await client.next_event("response.text.done", text=GREETING)
        assert not client.between(0, greeting_done, "input_audio_buffer.speech_started"), "early audio was used"

        # Question 1: transcripts, an aligned text stream, audio that says the text.
        client.say("What are your opening hours?")
        started = await client.next_event("input_audio_buffer.speech_started", greeting_done)
        stopped = await client.next_event("input_audio_buffer.speech_stopped", started)
        heard = await client.next_event("conversation.item.input_audio_transcription.completed", stopped)
        transcript = client.events[heard]["transcript"]
        assert fuzzy_ratio(transcript, "What are your opening hours?") > 0.7, transcript
        words = "".join(e["delta"] for e in client.between(stopped, heard, "conversation.item.input_audio_transcription.delta"))
        assert words == transcript
        created = await client.next_event("response.created", heard)
        response = client.events[created]["response"]
        assert response["object"] == "realtime.response" and response["status"] == "in_progress"
        assert response["voice"] == "default"
        history = response["chat_history"]
        assert history[0] == {"role": "system", "content": "You are a test agent."}
        assert history[1] == {"role": "system", "name": "unmute_instructions",
                              "content": "You are Ada, a calm assistant.\n\nOpening hours."}
        assert history[-1]["role"] == "user"
        audio_done = await client.next_event("response.audio.done", created)
        text_done = await client.next_event("response.text.done", created)
        assert client.events[text_done]["text"] == HOURS
        deltas = client.between(created, text_done, "response.text.delta")
        assert "".join(e["delta"] for e in deltas) == HOURS
        ready = client.between(created, text_done, "unmute.response.text.delta.ready")
        assert "".join(e["delta"] for e in ready).strip() == HOURS
        # Text goes out with its audio, word by word, not in one burst ahead of it.
        idx = [i for i in range(created, text_done) if client.events[i]["type"] in ("response.text.delta",
                                                                                      "response.audio.delta")]
        kinds = [client.events[i]["type"] for i in idx]
        assert kinds.index("response.audio.delta") <= 1
        last_word = max(i for i, k in enumerate(kinds) if k == "response.text.delta")
        assert kinds[:last_word].count("response.audio.delta") >= 10, kinds[:last_word]
        heard_text = await transcribe(client.audio_of(created, audio_done))
        assert fuzzy_ratio(heard_text, HOURS) > 0.7, heard_text
        default_f0 = reply_f0(client, created, audio_done)

        # Mid-conversation: new instructions apply at once, the cloned voice from the next reply.
        await client.send({"type": "session.update", "session": {
            "instructions": {"character": "You are Bo.", "scenario": "Stories."}, "voice": clone}})
        updated = await client.next_event("session.updated", text_done)
        assert client.events[updated]["session"]["voice"] == clone
        assert client.events[updated]["session"]["allow_recording"] is True

        # Question 2 gets a long answer in the cloned voice; the user cuts it off.
        client.say("Please tell me a story.")
        story = await client.next_event("response.created", updated)
        assert client.events[story]["response"]["voice"] == clone
        assert client.events[story]["response"]["chat_history"][1]["content"] == "You are Bo.\n\nStories."
        first_audio = await client.next_event("response.audio.delta", story)
        while len(client.between(first_audio, len(client.events), "response.audio.delta")) < 50:  # 2 s of it
            await client.next_event("response.audio.delta", len(client.events))
        cloned_f0 = reply_f0(client, story, len(client.events))
        client.say("What are your opening hours?")
        cut = await client.next_event("unmute.interrupted_by_vad", story)
        cut_text = await client.next_event("response.text.done", story)
        assert client.events[cut_text]["text"].endswith("…")
        assert 0 < len(client.events[cut_text]["text"]) < len(
            "Once upon a time there was a little lighthouse on a rocky island.") + 40
        after = await client.next_event("response.text.done", cut + 1, text=HOURS)

        # The clone is Piper's voice at the sample's pitch: its replies are ~1.3 times higher.
        ratio = cloned_f0 / default_f0
        assert 1.15 < ratio < 1.45, (cloned_f0, default_f0)

        # The recording so far: anonymized caller audio, server events, metadata.
        files = list(recordings.glob("*.jsonl"))
        assert len(files) == 1
        records = read_recording(files[0])
        assert records[0]["event_sender"] == "metadata"
        assert records[0]["data"]["type"] == "telebridge.recording.started"
        assert records[0]["data"]["transport"] == "realtime"
        client_kinds = {r["data"]["type"] for r in records if r["event_sender"] == "client"}
        assert client_kinds == {"session.update", "unmute.input_audio_buffer.append_anonymized"}
        assert not any("audio" in r["data"] for r in records if r["event_sender"] == "client")
        samples = sum(r["data"]["number_of_samples"] for r in records
                      if r["data"]["type"] == "unmute.input_audio_buffer.append_anonymized")
        assert samples > 24000 * 5
        server_kinds = collections.Counter(r["data"]["type"] for r in records if r["event_sender"] == "server")
        for kind in ("session.updated", "conversation.item.input_audio_transcription.completed",
                     "response.created", "response.text.delta", "response.audio.delta", "response.text.done",
                     "unmute.interrupted_by_vad", "input_audio_buffer.speech_started"):
            assert server_kinds[kind] > 0, kind
        assert all({"timestamp_wall", "event_sender", "data"} == set(r) for r in records)
        lines = await asyncio.to_thread(_show, files[0])
        assert any("user: " in line and "opening hours" in line.lower() for line in lines), lines
        assert any(f"agent: {HOURS}" in line for line in lines), lines

        # Withdrawing consent deletes the recording.
        await client.send({"type": "session.update", "session": {"allow_recording": False}})
        withdrawn = await client.next_event("session.updated", after)
        assert client.events[withdrawn]["session"]["allow_recording"] is False
        assert not files[0].exists()
        assert list(recordings.glob("*.jsonl")) == []


def _show(path: Path) -> list[str]:
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert cli_main(["recordings", "show", str(path)]) == 0
    return out.getvalue().splitlines()


async def test_g711_ulaw_in_and_out(rt):
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws, Client(ws, "g711_ulaw") as client:
        await client.send({"type": "session.update", "session": {
            "voice": "voice_002", "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}})
        updated = await client.next_event("session.updated")
        assert client.events[updated]["session"] == {
            "instructions": None, "voice": "voice_002", "allow_recording": False,
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}
        client.start_mic()
        created = await client.next_event("response.created")
        done = await client.next_event("response.audio.done", created)
        deltas = client.between(created, done, "response.audio.delta")
        raw = b"".join(base64.b64decode(e["delta"]) for e in deltas)
        assert abs(len(raw) - 320 * len(deltas)) <= 320  # 40 ms of 8 kHz μ-law: one byte per sample
        # μ-law in, too -- once the greeting's last 300 ms (the realtime lead) have played: this test is about the
        # formats, not about talking over the agent
        await asyncio.sleep(0.5)
        client.say("What are your opening hours?")
        reply = await client.next_event("response.created", done, timeout=30)
        completed = "conversation.item.input_audio_transcription.completed"
        said = [e["transcript"] for e in client.between(done, reply, completed)]
        assert fuzzy_ratio(" ".join(said), "What are your opening hours?") > 0.7, said
        # The greeting is two words, and Piper's voice varies from run to run: Whisper tiny sometimes hears only
        # "Hello." (twice in ~10 loaded runs) or "Below there." (once). What this test is about is that the μ-law
        # bytes decode to the agent's speech: one of its two words is enough.
        heard = await transcribe(client.audio_of(created, done))
        assert {"hello", "there"} & set(normalise_words(heard)), heard


async def test_an_agent_that_cannot_start_is_fatal_with_1011(rt, monkeypatch, deepgram_not_in_build):
    from telebridge.agent import load_agent

    cloud_only = load_agent(str(Path(__file__).parent / "agents" / "cloud_only_agent.py"))
    monkeypatch.setattr(rt.runtime, "agent", cloud_only)
    async with websockets.connect(ws_url(rt), subprotocols=["realtime"]) as ws:
        await ws.send(SEED_BASIC)
        received = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
    assert [e["type"] for e in received] == ["session.updated", "error"]
    assert received[-1]["error"]["type"] == "fatal"
    assert ws.close_code == 1011
