"""The voice store, Piper "cloning" by pitch and pace, POST /v1/voices limits, and phone calls with a cloned
voice and with recordings (consent from the agent, deletion when it is withdrawn)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer, voice_store
from speechutil import fuzzy_ratio, resample, synth

from telebridge.audio.wav import wav_bytes
from telebridge.config import TTS
from telebridge.recording import ANONYMIZED_AUDIO, ENDED, STARTED, read_recording
from telebridge.settings import Settings
from telebridge.simulator import Say, simulate_call
from telebridge.voices.analysis import NotEnoughSpeech, count_syllables, median_f0, prepare
from telebridge.voices.pitch import pitched_rate
from telebridge.voices.store import UnknownVoice, VoiceEntry, VoiceFileError, VoiceStore, load_voices_file

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
CLONED = re.compile(r"^cloned_voice_[A-Za-z0-9]{12}$")
SAMPLE_TEXT = ("Good morning. My tooth has been hurting since the weekend, so I would like to see a dentist soon. "
               "Could you tell me when you are open?")
HOURS = "We are open every day, from early morning until late evening."
VOICES_YAML = """\
default:
  language: en
  gender: male
  tts: {provider: piper}
slow:
  language: en
  gender: male
  comment: for elderly callers
  tts: {provider: piper, length_scale: 1.2}
draft:
  good: false
  tts: {provider: piper, pitch: 0.8}
"""


# --- the store ----------------------------------------------------------------------------------------------


def test_voices_file_yaml_and_json_agree_and_only_good_voices_are_listed(tmp_path):
    yaml_file = tmp_path / "voices.yaml"
    yaml_file.write_text(VOICES_YAML)
    import yaml

    json_file = tmp_path / "voices.json"
    json_file.write_text(json.dumps(yaml.safe_load(VOICES_YAML)))
    assert load_voices_file(yaml_file) == load_voices_file(json_file)
    store = VoiceStore(yaml_file, tmp_path / "clones")
    assert [v.public() for v in store.listed()] == [
        {"name": "default", "language": "en", "gender": "male"},
        {"name": "slow", "language": "en", "gender": "male"},
    ]
    assert store.is_listed("slow") and not store.is_listed("draft") and store.get("draft") is not None
    assert store.tts_for("slow") == TTS.Piper(length_scale=1.2)
    with pytest.raises(UnknownVoice, match="unknown voice 'nope'"):
        store.tts_for("nope")


def test_relative_piper_models_resolve_against_the_file_and_bad_files_say_where(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"mine": {"tts": {"provider": "piper", "model": "models/x.onnx"}}}))
    entry = load_voices_file(tmp_path / "v.json")["mine"]
    assert entry.tts.model == str((tmp_path / "models" / "x.onnx").resolve())
    bad = {
        "typo": {"gendr": "male"},
        "provider": {"tts": {"provider": "espeak"}},
        "range": {"tts": {"provider": "piper", "pitch": 3}},
        "cloned_voice_abcdefabcdef": {},
    }
    for name, body in bad.items():
        (tmp_path / "bad.json").write_text(json.dumps({name: body}))
        with pytest.raises(VoiceFileError, match=re.escape(repr(name)) + "|" + name):
            load_voices_file(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(VoiceFileError, match="broken.json: line 1"):
        load_voices_file(tmp_path / "broken.json")


def test_clones_persist_and_other_processes_see_them(tmp_path):
    one = VoiceStore(None, tmp_path / "clones")
    two = VoiceStore(None, tmp_path / "clones")  # another process sharing the directory
    entry = one.add_clone(VoiceEntry(name="cloned_voice_AbC123dEf456", gender="female",
                                     tts=TTS.Piper(pitch=1.2, length_scale=0.9)))
    assert entry.cloned and entry.created_at
    assert two.get("cloned_voice_AbC123dEf456") == entry
    assert [v.name for v in two.listed()] == ["default", "cloned_voice_AbC123dEf456"]
    assert two.get("cloned_voice_../../etc/passwd") is None
    with pytest.raises(ValueError):
        one.add_clone(VoiceEntry(name="../evil"))
    assert not any(p.suffix != ".json" for p in (tmp_path / "clones").iterdir())


def test_max_voice_file_size_is_read_from_its_plain_env_name(monkeypatch):
    monkeypatch.setenv("MAX_VOICE_FILE_SIZE_MB", "2.5")
    assert Settings(_env_file=None).max_voice_file_size_mb == 2.5
    assert Settings(_env_file=None, max_voice_file_size_mb=1).max_voice_file_size_mb == 1


# --- analysis -----------------------------------------------------------------------------------------------


def test_pitch_of_a_harmonic_tone_and_syllable_counts():
    t = np.arange(16000 * 2) / 16000
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)).astype(np.float32)
    f0, voiced = median_f0(prepare(tone, 16000))
    assert f0 == pytest.approx(150, rel=0.02) and voiced > 1.5
    assert count_syllables("The rainbow is a division of white light into many beautiful colors.") == 20
    assert count_syllables("table people make") == 5
    with pytest.raises(NotEnoughSpeech):
        prepare(np.zeros(16000, dtype=np.float32), 16000)


def test_pitched_rate_keeps_the_resampler_ratio_small():
    assert pitched_rate(22050, 1.0) == 22050
    assert pitched_rate(22050, 1.3) == 28650
    assert pitched_rate(22050, 1.3) % 50 == 0


# --- the HTTP API -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voices")
    voices = tmp / "voices.yaml"
    voices.write_text(VOICES_YAML)
    with voice_store(tmp_path_factory) as store:  # Piper base profiles are measured once
        srv = LiveServer(agent=AGENT, voices_file=voices, voice_store_dir=store, max_voice_file_size_mb=1.0,
                         recordings_dir=tmp / "recordings")
        srv.start()
        yield srv
        srv.stop()


def sample_wav(pitch: float, length_scale: float, rate: int = 16000) -> bytes:
    """Piper speech at ``length_scale``, replayed ``pitch`` times higher: what a clone should recover."""
    from piper.config import SynthesisConfig

    from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

    voice = load_piper_voice(default_piper_voice())
    relabel = pitched_rate(22050, pitch)
    config = SynthesisConfig(length_scale=length_scale * relabel / 22050, noise_scale=0.0, noise_w_scale=0.0)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(SAMPLE_TEXT, config)])
    return wav_bytes(resample(audio.astype(np.float32), relabel, rate), rate)


def encode(audio: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


async def post(srv: LiveServer, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(srv.url + "/v1/voices", **kwargs)


async def test_cloning_recovers_pitch_and_pace_and_the_voice_is_listed_at_once(vs):
    response = await post(vs, files={"file": ("sample.wav", sample_wav(pitch=1.2, length_scale=0.8), "audio/wav")})
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    assert list(response.json()) == ["name"] and CLONED.match(name)
    entry = vs.runtime.voices.get(name)
    assert entry is not None and entry.cloned
    assert entry.tts.pitch == pytest.approx(1.2, rel=0.08), entry.clone_info
    assert entry.tts.length_scale == pytest.approx(0.8, rel=0.15), entry.clone_info
    assert entry.clone_info["sample"]["syllables_from"] == "transcript"
    stored = json.loads((vs.settings.voice_store_dir / f"{name}.json").read_text())
    assert set(stored) == set(VoiceEntry.model_fields)  # the derived settings and figures, never the sample
    assert len(json.dumps(stored)) < 2000
    async with httpx.AsyncClient() as http:
        listed = (await http.get(vs.url + "/v1/voices")).json()
    assert {"name": name, "language": "en", "gender": "male",
            "source": {"source_type": "file", "path_on_server": f"voices/{name}"}} in listed
    assert [v["name"] for v in listed][:2] == ["default", "slow"]


async def test_mp3_and_flac_uploads_are_decoded(vs):
    speech = resample(synth(SAMPLE_TEXT, 16000), 16000, 22050)
    for filename, data in (("s.mp3", encode(speech, 22050, "mp3", "libmp3lame")),
                           ("s.flac", encode(speech, 22050, "flac", "flac"))):
        response = await post(vs, files={"file": (filename, data, "application/octet-stream")})
        assert response.status_code == 200, (filename, response.text)
        entry = vs.runtime.voices.get(response.json()["name"])
        assert entry.tts.pitch == pytest.approx(1.0, abs=0.08), (filename, entry.clone_info)


async def test_upload_limits_and_bad_files(vs):
    limit = 1_000_000
    cases = {
        "declared too big": (dict(files={"file": ("big.wav", b"RIFF" + bytes(limit + 20_000), "audio/wav")}), 413),
        "file part too big": (dict(files={"file": ("big.wav", b"RIFF" + bytes(limit + 100), "audio/wav")}), 413),
        "not multipart": (dict(json={"file": "hello"}), 415),
        "text file": (dict(files={"file": ("notes.txt", b"just some words, no audio", "text/plain")}), 415),
        "broken wav": (dict(files={"file": ("x.wav", b"RIFF\x10\x00\x00\x00WAVEjunk", "audio/wav")}), 415),
        "no file field": (dict(files={"other": ("a.wav", sample_wav(1.0, 1.0), "audio/wav")}), 422),
        "silence": (dict(files={"file": ("quiet.wav", wav_bytes(np.zeros(32000, np.float32), 16000), "audio/wav")}),
                    422),
        "too short": (dict(files={"file": ("blip.wav", wav_bytes(synth("Hi.", 16000)[:3000], 16000), "audio/wav")}),
                      422),
    }
    for label, (kwargs, status) in cases.items():
        response = await post(vs, **kwargs)
        assert response.status_code == status, (label, response.status_code, response.text)
        assert response.json()["detail"], label

    async def chunks():  # no Content-Length: the size cannot be known up front
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        yield b"RIFF" + bytes(100)
        yield b"\r\n--x--\r\n"

    response = await post(vs, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 411


# --- cloned voices on phone calls ---------------------------------------------------------------------------


def test_agents_name_store_voices_in_their_tts_config(vs):
    runtime = vs.runtime
    assert runtime.resolve_tts(TTS.Piper(voice="slow")) == TTS.Piper(length_scale=1.2)
    assert runtime.resolve_tts(TTS.Piper(length_scale=0.9)) == TTS.Piper(length_scale=0.9)
    with pytest.raises(UnknownVoice):
        runtime.resolve_tts(TTS.Piper(voice="nobody"))


async def ended(path: Path, timeout: float = 10.0) -> list[dict]:
    """A recording once the server has closed it (that lands a moment after the simulator hangs up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = read_recording(path)
        if records and records[-1]["data"]["type"] == ENDED or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.05)


async def test_phone_calls_with_a_cloned_voice_and_recordings(vs, auth_token, caplog):
    """Four concurrent calls: a cloned voice (recorded), the default voice (not recorded), and two that
    consent to recording, one of which withdraws it mid-call ("stop the recording")."""
    caplog.set_level("INFO", logger="telebridge.recording")
    response = await post(vs, files={"file": ("high.wav", sample_wav(pitch=1.3, length_scale=1.0), "audio/wav")})
    clone = response.json()["name"]

    def call(parameters: dict[str, str], question: str = "What are your opening hours?"):
        return simulate_call(vs.url, script=[Say(at=None, text=question, after_agent_quiet=0.6)],
                             auth_token=auth_token, duration=20, end_when_quiet=1.2, transcribe=False,
                             custom_parameters=parameters)

    cloned, plain, kept, withdrawn = await asyncio.gather(
        call({"voice": clone, "allow_recording": "true"}),
        call({}),
        call({"allow_recording": "true"}),
        call({"allow_recording": "true"}, "Please stop the recording."),
    )
    # The clone is Piper's voice at the sample's pitch: the caller hears it ~1.3 times higher.
    f0 = [median_f0(prepare(resample(c.heard, 8000, 16000), 16000))[0] for c in (cloned, plain)]
    assert 1.15 < f0[0] / f0[1] < 1.45, f0
    for c in (cloned, plain, kept):
        assert len(c.agent_segments) >= 2, c.agent_segments  # the greeting and the answer

    # Recordings: only the consenting calls that kept their consent, named by call SID.
    directory = vs.settings.recordings_dir
    files = {f.name.split("_", 1)[1].removesuffix(".jsonl"): f for f in directory.glob("*.jsonl")}
    assert set(files) == {cloned.call_sid, kept.call_sid}, files
    records = await ended(files[kept.call_sid])
    meta = records[0]["data"]
    assert meta["type"] == STARTED and meta["transport"] == "phone"
    assert meta["call_sid"] == kept.call_sid and meta["agent"] == "voice-test-agent"
    assert records[-1]["data"]["type"] == ENDED and records[-1]["data"]["voice"] == "piper"
    kinds = [r["data"]["type"] for r in records]
    assert ANONYMIZED_AUDIO in kinds and "response.audio.delta" in kinds
    caller_samples = sum(r["data"]["number_of_samples"] for r in records if r["data"]["type"] == ANONYMIZED_AUDIO)
    assert caller_samples / 8000 > 2.0
    heard = [r["data"]["transcript"] for r in records
             if r["data"]["type"] == "conversation.item.input_audio_transcription.completed"]
    assert heard and fuzzy_ratio(heard[0], "What are your opening hours?") > 0.7
    said = [r["data"]["text"] for r in records if r["data"]["type"] == "response.text.done"]
    assert said[:2] == ["Hello there.", HOURS]
    assert not any(r["event_sender"] == "client" and r["data"]["type"] != ANONYMIZED_AUDIO for r in records)
    assert (await ended(files[cloned.call_sid]))[-1]["data"]["voice"] == clone
    # The withdrawn call was recorded until the agent cleared its consent; then its file was deleted.
    logged = [r.getMessage() for r in caplog.records if r.name == "telebridge.recording"]
    assert any(withdrawn.call_sid in m and " to " in m for m in logged), logged
    assert any(withdrawn.call_sid in m and "deleted" in m for m in logged), logged


def test_voices_list_cli(tmp_path, monkeypatch, capsys):
    from telebridge.cli import main as cli_main

    (tmp_path / "voices.yaml").write_text(VOICES_YAML)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the clone store's default home
    monkeypatch.setenv("TELEBRIDGE_VOICES_FILE", str(tmp_path / "voices.yaml"))
    assert cli_main(["voices", "list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "slow" in listed and "draft" not in listed
    assert cli_main(["voices", "list", "--all"]) == 0
    out = capsys.readouterr().out
    assert "draft" in out and "'pitch': 0.8" in out


# --- cloud voices and cloud cloning (ElevenLabs, Cartesia) ----------------------------------------------------

CLOUD_VOICES = {
    "bella": {"tts": {"provider": "elevenlabs", "voice": "EXAVITQu4vr4xnSDxMaL"}},
    "rachel": {"gender": "female", "tts": {"provider": "elevenlabs", "model": "eleven_flash_v2_5",
                                           "voice": {"id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel",
                                                     "category": "premade"}}},
    "sonic": {"tts": {"provider": "cartesia", "voice": "a0e99841-438c-4a64-b679-ae501e7d6091"}},
}


def test_voices_file_names_cloud_voices_and_keys_come_from_the_environment(tmp_path, monkeypatch):
    from telebridge.runtime import Runtime

    (tmp_path / "voices.json").write_text(json.dumps(CLOUD_VOICES))
    voices = load_voices_file(tmp_path / "voices.json")
    assert voices["bella"].tts == TTS.ElevenLabs(voice=TTS.Voice(id="EXAVITQu4vr4xnSDxMaL", name="bella",
                                                                 category="premade"), api_key=None)
    assert voices["rachel"].tts.model == "eleven_flash_v2_5" and voices["sonic"].tts.provider == "cartesia"
    monkeypatch.setenv("ELEVENLABS_API_KEY", "el-env-key-1")
    monkeypatch.setenv("CARTESIA_API_KEY", "car-env-key-1")
    from telebridge.agent import load_agent

    runtime = Runtime(Settings(_env_file=None, voices_file=tmp_path / "voices.json",
                               voice_store_dir=tmp_path / "clones"), load_agent(AGENT))
    resolved = runtime.resolve_tts(TTS.Piper(voice="rachel"))
    assert resolved.provider == "elevenlabs" and resolved.voice.id == "21m00Tcm4TlvDq8ikWAM"
    assert resolved.api_key.get_secret_value() == "el-env-key-1"
    monkeypatch.setenv("ELEVENLABS_API_KEY", "el-env-key-2")  # a rotated key applies at once
    assert runtime.resolve_tts(TTS.Piper(voice="rachel")).api_key.get_secret_value() == "el-env-key-2"
    assert runtime.resolve_tts(TTS.Piper(voice="sonic")).api_key.get_secret_value() == "car-env-key-1"


def test_the_clone_store_defaults_to_the_xdg_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TELEBRIDGE_VOICE_STORE_DIR", raising=False)
    assert Settings(_env_file=None).voice_store_dir == tmp_path / "xdg" / "telebridge" / "voices"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert Settings(_env_file=None).voice_store_dir == Path.home() / ".local" / "share" / "telebridge" / "voices"
    monkeypatch.setenv("TELEBRIDGE_VOICE_STORE_DIR", str(tmp_path / "mine"))
    assert Settings(_env_file=None).voice_store_dir == tmp_path / "mine"
    monkeypatch.setenv("TELEBRIDGE_VOICE_CLONING_PROVIDER", "cartesia")
    assert Settings(_env_file=None).voice_cloning_provider == "cartesia"


@pytest.fixture()
async def elevenlabs_cloning(tmp_path, monkeypatch):
    from fakes.elevenlabs import FakeElevenLabs
    from fakes.serve import serve_app

    fake = FakeElevenLabs(api_key="el-clone-key-0123456789")
    monkeypatch.setenv("ELEVENLABS_API_KEY", fake.api_key)
    async with serve_app(fake.app) as origin:
        srv = LiveServer(agent=AGENT, voice_store_dir=tmp_path / "clones", voice_cloning_provider="elevenlabs",
                         elevenlabs_base_url=origin).start()
        try:
            yield srv, fake
        finally:
            srv.stop()


async def test_elevenlabs_cloning_through_post_voices_and_the_clone_speaks_in_a_realtime_session(elevenlabs_cloning):
    import base64

    import websockets

    srv, fake = elevenlabs_cloning
    response = await post(srv, files={"file": ("me.mp3", encode(resample(synth(SAMPLE_TEXT, 16000), 16000, 22050),
                                                               22050, "mp3", "libmp3lame"), "audio/mpeg")})
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    assert CLONED.match(name)
    added = fake.voices_added[0]
    assert added["path"] == "/v1/voices/add" and added["key_ok"] and added["name"] == name
    assert added["files"][0][0].endswith(".wav") and added["files"][0][1] > 32000  # the sample, as WAV
    entry = srv.runtime.voices.get(name)
    assert entry.tts.provider == "elevenlabs" and entry.tts.voice.id == added["voice_id"]
    stored = (srv.settings.voice_store_dir / f"{name}.json").read_text()
    assert fake.api_key not in stored and "api_key" not in stored
    assert {"name": name, "language": "en", "gender": "male",
            "source": {"source_type": "file", "path_on_server": f"voices/{name}"}} in (await httpx.AsyncClient().get(
        srv.url + "/v1/voices")).json()

    # A realtime session picks the clone by name: its greeting is spoken by (the fake) ElevenLabs.
    url = srv.url.replace("http", "ws") + "/v1/realtime"
    async with websockets.connect(url, subprotocols=["realtime"]) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": name}}))
        audio, kinds = bytearray(), []
        async with asyncio.timeout(30):
            while True:
                event = json.loads(await ws.recv())
                kinds.append(event["type"])
                if event["type"] == "error":
                    raise AssertionError(event)
                if event["type"] == "response.audio.delta":
                    audio += base64.b64decode(event["delta"])
                if event["type"] == "response.audio.done":
                    break
    assert "session.updated" in kinds
    pcm = np.frombuffer(bytes(audio), dtype="<i2").astype(np.float32) / 32768.0
    from fakes.speech import speech_backend

    said = await speech_backend().transcribe(resample(pcm, 24000, 16000))
    assert fuzzy_ratio(said, "Hello there.") > 0.6, said
    sockets = [s for s in fake.sockets if s["path"] == f"/v1/text-to-speech/{added['voice_id']}/multi-stream-input"]
    assert sockets and sockets[0]["key_ok"] and sockets[0]["query"]["output_format"] == "pcm_22050"


async def test_cloud_cloning_refusals_are_clear(elevenlabs_cloning, monkeypatch):
    srv, fake = elevenlabs_cloning
    silence = wav_bytes(np.zeros(32000, np.float32), 16000)
    response = await post(srv, files={"file": ("quiet.wav", silence, "audio/wav")})
    assert response.status_code == 422 and not fake.voices_added  # refused before any request
    monkeypatch.setenv("ELEVENLABS_API_KEY", "wrong-key-zzz")
    response = await post(srv, files={"file": ("me.wav", sample_wav(1.0, 1.0), "audio/wav")})
    assert response.status_code == 502 and "ELEVENLABS_API_KEY" in response.json()["detail"], response.text
    assert "wrong-key-zzz" not in response.text
    monkeypatch.setenv("ELEVENLABS_API_KEY", fake.api_key)
    fake.statuses = [429]
    response = await post(srv, files={"file": ("me.wav", sample_wav(1.0, 1.0), "audio/wav")})
    assert response.status_code == 200  # retried


async def test_cartesia_cloning_through_post_voices(tmp_path, monkeypatch):
    from fakes.cartesia_clone import FakeCartesiaClone
    from fakes.serve import serve_app

    fake = FakeCartesiaClone()
    monkeypatch.setenv("CARTESIA_API_KEY", fake.api_key)
    async with serve_app(fake.app) as origin:
        srv = LiveServer(agent=AGENT, voice_store_dir=tmp_path / "clones", voice_cloning_provider="cartesia",
                         cartesia_base_url=origin).start()
        try:
            response = await post(srv, files={"file": ("me.wav", sample_wav(1.0, 1.0), "audio/wav")})
        finally:
            srv.stop()
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    sent = fake.requests[0]
    assert sent["path"] == "/voices/clone" and sent["key_ok"] and sent["headers"]["cartesia-version"]
    assert sent["fields"]["name"] == name and sent["fields"]["language"] == "en"
    assert sent["clip"][0].endswith(".wav") and sent["clip"][2] == b"RIFF"
    entry = srv.runtime.voices.get(name)
    assert entry.tts == TTS.Cartesia(voice=sent["voice_id"], language="en", api_key=None) or (
        entry.tts.provider == "cartesia" and entry.tts.voice == sent["voice_id"])
    resolved = srv.runtime.resolve_tts(TTS.Piper(voice=name))  # what a phone call's agent gets
    assert resolved.provider == "cartesia" and resolved.voice == sent["voice_id"]
    assert resolved.api_key.get_secret_value() == fake.api_key
    assert fake.api_key not in (tmp_path / "clones" / f"{name}.json").read_text()
