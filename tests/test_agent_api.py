"""The agent-facing API: config models against Jay's reference table, validation, secrets, loading, configure()."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from telebridge.agent import Agent, AgentConfigError, AgentLoadError, configure, load_agent
from telebridge.config import (
    IMPLEMENTED_STT,
    IMPLEMENTED_TTS,
    STT,
    TTS,
    VAD,
    ProviderNotAvailable,
    check_implemented,
)
from telebridge.session import SessionConfig

KEY_VARS = ["DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "CARTESIA_API_KEY", "FISHAUDIO_API_KEY",
            "AZURE_API_KEY", "AZURE_REGION", "GOOGLE_CREDENTIALS"]


@pytest.fixture(autouse=True)
def no_keys_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)


def settings_of(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude={"provider", "api_key", "credentials", "region"})


# --- defaults equal the reference table ---------------------------------------------------------------------

BELLA = {"id": "EXAVITQu4vr4xnSDxMaL", "name": "Bella", "category": "premade",
         "settings": {"stability": 0.71, "similarity_boost": 0.5, "style": 0.0, "use_speaker_boost": True}}

REFERENCE_DEFAULTS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (VAD.Silero, {"min_speech_duration": 0.05, "min_silence_duration": 0.55, "prefix_padding_duration": 0.5,
                  "max_buffered_speech": 60.0, "activation_threshold": 0.5, "sample_rate": 16000}),
    (STT.Deepgram, {"model": "nova-2-general", "language": "en-US", "interim_results": True, "punctuate": True,
                    "smart_format": True, "sample_rate": 16000, "no_delay": True, "endpointing_ms": 25,
                    "filler_words": True, "keywords": [], "profanity_filter": False}),
    (STT.Azure, {"sample_rate": 16000, "num_channels": 1, "languages": ["en-US"]}),
    (STT.OpenAI, {"language": "en", "model": "whisper-1"}),
    (STT.Whisper, {"model": None, "language": "en", "beam_size": 1, "short_window": True}),
    (TTS.ElevenLabs, {"voice": BELLA, "model": "eleven_turbo_v2_5", "encoding": "mp3_22050_32",
                      "enable_ssml_parsing": False, "chunk_length_schedule": [80, 120, 200, 260]}),
    (TTS.OpenAI, {"model": "tts-1", "voice": "alloy", "speed": 1.0}),
    (TTS.Google, {"language": "en-US", "gender": "neutral", "voice_name": "", "encoding": "linear16",
                  "sample_rate": 24000, "pitch": 0.0, "effects_profile_id": "", "speaking_rate": 1.0}),
    (TTS.Azure, {"sample_rate": 24000, "voice": None, "language": None, "prosody": None, "endpoint_id": None}),
    (TTS.Deepgram, {"model": "aura-asteria-en", "encoding": "linear16", "sample_rate": 24000}),
    (TTS.Cartesia, {"model": "sonic-english", "language": "en", "encoding": "pcm_s16le",
                    "voice": "c2ac25f9-ecc4-4f56-9095-651354df60c0", "speed": None, "emotion": None,
                    "sample_rate": 24000}),
    (TTS.FishAudio, {"model_id": "802e3bc2b27e49c2995d23ef70e6ac89", "latency": "balanced", "normalize": True}),
    (TTS.Piper, {"model": None, "speaker": None, "length_scale": 1.0, "noise_scale": None}),
]


@pytest.mark.parametrize(("model", "expected"), REFERENCE_DEFAULTS, ids=lambda v: getattr(v, "__name__", ""))
def test_defaults_match_the_reference(model: type[BaseModel], expected: dict[str, Any]) -> None:
    assert settings_of(model()) == expected


def test_session_config_defaults() -> None:
    cfg = SessionConfig(initial_messages=[])
    assert cfg.vad == VAD.Silero() and cfg.stt == STT.Whisper() and cfg.tts == TTS.Piper()
    assert cfg.session_data == {} and cfg.first_message is None and cfg.allow_interruptions is True
    assert (cfg.interrupt_time_threshold, cfg.interrupt_word_threshold) == (0.5, 0)
    assert (cfg.min_endpointing_delay, cfg.max_endpointing_delay, cfg.max_nested_function_calls) == (0.5, 3.0, 1)
    with pytest.raises(ValidationError, match="initial_messages"):
        SessionConfig()  # type: ignore[call-arg]


def test_the_elevenlabs_voice_models_are_reachable_from_the_namespace() -> None:
    voice = TTS.ElevenLabs.Voice(id="x", name="Rachel", category="premade",
                                 settings=TTS.VoiceSettings(stability=0.3, similarity_boost=0.8))
    assert TTS.ElevenLabs(voice=voice).voice.settings.style == 0.0  # type: ignore[union-attr]
    assert TTS.ElevenLabs.DEFAULT_VOICE.name == "Bella"
    first, second = TTS.ElevenLabs(), TTS.ElevenLabs()
    first.voice.name = "changed"
    assert second.voice.name == "Bella"  # the default is not shared between instances


def test_model_names_are_not_restricted_to_a_list() -> None:
    assert STT.Deepgram(model="nova-3").model == "nova-3"
    assert TTS.OpenAI(model="gpt-4o-mini-tts", voice="coral").voice == "coral"
    assert TTS.ElevenLabs(model="eleven_flash_v2_5").model == "eleven_flash_v2_5"


# --- aliases and validation ---------------------------------------------------------------------------------


def test_both_interruption_spellings() -> None:
    livekit = SessionConfig(initial_messages=[], min_interruption_duration=0.8, min_interruption_words=2)
    jay = SessionConfig(initial_messages=[], interrupt_time_threshold=0.8, interrupt_word_threshold=2)
    for cfg in (livekit, jay):
        assert (cfg.interrupt_time_threshold, cfg.interrupt_word_threshold) == (0.8, 2)
        assert (cfg.min_interruption_duration, cfg.min_interruption_words) == (0.8, 2)
    same = SessionConfig(initial_messages=[], min_interruption_words=3, interrupt_word_threshold=3)
    assert same.interrupt_word_threshold == 3
    with pytest.raises(ValidationError, match="same setting"):
        SessionConfig(initial_messages=[], min_interruption_words=3, interrupt_word_threshold=1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: VAD.Silero(sample_rate=44100), "8000 or 16000"),
        (lambda: VAD.Silero(activation_threshold=1.0), "less than 1"),
        (lambda: VAD.Silero(min_silence_duration=-0.1), "greater than 0"),
        (lambda: TTS.Google(pitch=25), "less than or equal to 20"),
        (lambda: TTS.Google(speaking_rate=0.1), "greater than or equal to 0.25"),
        (lambda: TTS.ElevenLabs(chunk_length_schedule=[80, 20]), "between 50 and 500"),
        (lambda: TTS.Azure(sample_rate=12345), "22050"),
        (lambda: TTS.Azure(prosody=TTS.ProsodyConfig(rate=3.0)), "between 0.5 and 2.0"),
        (lambda: TTS.ProsodyConfig(volume="booming"), "x-loud"),
        (lambda: TTS.Cartesia(voice=[0.1] * 10), "192 numbers"),
        (lambda: TTS.Cartesia(speed=2), "between -1.0 and 1.0"),
        (lambda: TTS.Piper(length_scale=3), "less than or equal to 2"),
        (lambda: STT.Deepgram(modle="nova-3"), "modle"),
        (lambda: SessionConfig(initial_messages=[], first_mesage="x"), "'first_mesage' \\(did you mean 'first_message'"),
        (lambda: SessionConfig(initial_messages=[{"role": "bot", "content": "hi"}]), "'system', 'user'"),
        (lambda: SessionConfig(initial_messages=[], min_endpointing_delay=2, max_endpointing_delay=1),
         "max_endpointing_delay"),
    ],
)
def test_validation_errors_are_clear(build: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_named_and_numeric_forms() -> None:
    assert TTS.Cartesia(speed="slow", voice=[0.0] * 192, emotion=["positivity:high"]).speed == "slow"
    assert TTS.Cartesia(speed=-0.5).speed == -0.5
    prosody = TTS.ProsodyConfig(rate="fast", volume=75, pitch="high")
    assert (prosody.rate, prosody.volume, prosody.pitch) == ("fast", 75.0, "high")


def test_messages_are_plain_dicts_including_tool_calls() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    ]
    cfg = SessionConfig(initial_messages=messages)
    assert cfg.initial_messages == messages and isinstance(cfg.initial_messages[0], dict)


def test_providers_can_be_given_as_dicts() -> None:
    cfg = SessionConfig.model_validate(
        {"initial_messages": [], "stt": {"provider": "deepgram", "model": "nova-3"}, "tts": {"provider": "piper"}}
    )
    assert isinstance(cfg.stt, STT.Deepgram) and cfg.stt.model == "nova-3"
    assert isinstance(cfg.tts, TTS.Piper)


# --- which providers run -------------------------------------------------------------------------------------


def test_local_providers_are_implemented() -> None:
    assert "whisper" in IMPLEMENTED_STT and "piper" in IMPLEMENTED_TTS
    check_implemented(SessionConfig(initial_messages=[]))


ALL_STT = [STT.Deepgram, STT.Azure, STT.OpenAI]
ALL_TTS = [TTS.ElevenLabs, TTS.OpenAI, TTS.Google, TTS.Azure, TTS.Deepgram, TTS.Cartesia, TTS.FishAudio]


@pytest.mark.parametrize("model", ALL_STT + ALL_TTS, ids=lambda m: m.model_config["title"])
def test_every_jay_provider_has_a_client_in_this_build(model: type[BaseModel]) -> None:
    kind = "stt" if model in ALL_STT else "tts"
    check_implemented(SessionConfig(initial_messages=[], **{kind: model()}))


def _without_client(monkeypatch: pytest.MonkeyPatch, kind: str, provider: str) -> None:
    """As if this build had no client module for ``provider`` (e.g. an optional extra not installed)."""
    from telebridge.providers import registry

    table = registry.STT_MODULES if kind == "stt" else registry.TTS_MODULES
    monkeypatch.setitem(table, provider, f"telebridge.providers.{kind}._not_in_this_build")
    name = "telebridge.config.IMPLEMENTED_STT" if kind == "stt" else "telebridge.config.IMPLEMENTED_TTS"
    monkeypatch.setattr(name, {"whisper"} if kind == "stt" else {"piper"})


@pytest.mark.parametrize("stt", ALL_STT)
def test_a_missing_stt_client_is_rejected_clearly(stt: type[BaseModel], monkeypatch: pytest.MonkeyPatch) -> None:
    _without_client(monkeypatch, "stt", stt().provider)  # type: ignore[attr-defined]
    with pytest.raises(ProviderNotAvailable) as caught:
        check_implemented(SessionConfig(initial_messages=[], stt=stt()))
    name = stt.model_config["title"]
    assert f"{name} is not available in this telebridge build yet" in str(caught.value)
    assert "STT.Whisper()" in str(caught.value) and "telebridge[cloud]" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("tts", ALL_TTS)
def test_a_missing_tts_client_is_rejected_clearly(tts: type[BaseModel], monkeypatch: pytest.MonkeyPatch) -> None:
    _without_client(monkeypatch, "tts", tts().provider)  # type: ignore[attr-defined]
    with pytest.raises(ProviderNotAvailable, match=rf"{tts.model_config['title']} is not available.*TTS\.Piper\(\)"):
        check_implemented(SessionConfig(initial_messages=[], tts=tts()))


def test_a_missing_fallback_client_is_rejected_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_client(monkeypatch, "tts", "cartesia")
    with pytest.raises(ProviderNotAvailable, match="TTS.Cartesia"):
        check_implemented(SessionConfig(initial_messages=[], fallback_tts=[TTS.Cartesia()]))


def test_registering_a_provider_makes_it_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("telebridge.config.IMPLEMENTED_STT", IMPLEMENTED_STT | {"deepgram"})
    check_implemented(SessionConfig(initial_messages=[], stt=STT.Deepgram()))


# --- secrets -------------------------------------------------------------------------------------------------

SECRET = "sk-live-5up3r-s3cr3t"


def test_keys_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-key")
    monkeypatch.setenv("AZURE_API_KEY", "az-key")
    monkeypatch.setenv("AZURE_REGION", "eastus")
    monkeypatch.setenv("GOOGLE_CREDENTIALS", json.dumps({"type": "service_account", "private_key": SECRET}))
    assert STT.Deepgram().api_key.get_secret_value() == "dg-key"  # type: ignore[union-attr]
    assert TTS.Deepgram().api_key.get_secret_value() == "dg-key"  # type: ignore[union-attr]
    azure = TTS.Azure()
    assert azure.api_key.get_secret_value() == "az-key" and azure.region == "eastus"  # type: ignore[union-attr]
    assert TTS.Google().credentials.get_secret_value() == {  # type: ignore[union-attr]
        "type": "service_account",
        "private_key": SECRET,
    }
    assert STT.Deepgram(api_key="given").api_key.get_secret_value() == "given"  # type: ignore[union-attr]
    assert STT.OpenAI().api_key is None  # unset stays None; the provider client reports it


@pytest.mark.parametrize(
    "build",
    [
        lambda: STT.Deepgram(api_key=SECRET),
        lambda: STT.Azure(api_key=SECRET),
        lambda: TTS.ElevenLabs(api_key=SECRET),
        lambda: TTS.Cartesia(api_key=SECRET),
        lambda: TTS.FishAudio(api_key=SECRET),
        lambda: TTS.Google(credentials={"private_key": SECRET}),
        lambda: SessionConfig(initial_messages=[], stt=STT.OpenAI(api_key=SECRET)),
    ],
)
def test_secrets_stay_out_of_repr_str_and_json(build: Any) -> None:
    model = build()
    for text in (repr(model), str(model), model.model_dump_json()):
        assert SECRET not in text


def test_secrets_stay_out_of_validation_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        SessionConfig.model_validate(
            {"initial_messages": [], "stt": {"provider": "deepgram", "api_key": SECRET, "modle": "x"}}
        )
    assert SECRET not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        TTS.Google(credentials="{" + SECRET)
    assert SECRET not in str(caught.value)


# --- Agent ---------------------------------------------------------------------------------------------------


async def configure_ok(input: Any) -> SessionConfig:
    return SessionConfig(initial_messages=[], session_data={"city": input["custom_data"].get("city")})


async def handler_ok(input: Any) -> Any:
    return None


def test_agent_accepts_jay_arguments_and_async_generators() -> None:
    async def handler_gen(input: Any) -> Any:
        yield "hi"

    async def on_agent_interrupted(input: Any) -> None:
        pass

    async def get_weather(location: str) -> str:
        return "sunny"

    agent = Agent(id="a", configure_session=configure_ok, llm_response_handler=handler_gen, tools=[get_weather],
                  on_agent_interrupted=on_agent_interrupted)
    assert agent.handler("on_agent_interrupted") is on_agent_interrupted
    assert agent.handler("on_user_started_speaking") is None
    assert agent.tools_by_name == {"get_weather": get_weather}
    with pytest.raises(ValueError, match="unknown agent event 'on_speech'"):
        agent.handler("on_speech")


def test_agent_rejects_sync_callables_and_typos_clearly() -> None:
    def sync(input: Any) -> None:
        pass

    async def tool(x: int) -> int:
        return x

    cases: list[tuple[dict[str, Any], str]] = [
        ({"configure_session": sync}, "configure_session must be an async function"),
        ({"llm_response_handler": sync}, "llm_response_handler must be an `async def`"),
        ({"tools": [sync]}, "tool 'sync' must be an async function"),
        ({"tools": [tool, tool]}, "two tools are named 'tool'"),
        ({"on_user_stopped_speaking": sync}, "on_user_stopped_speaking must be an async function"),
        ({"on_user_speaking": handler_ok}, "did you mean 'on_user_started_speaking'|did you mean 'on_user_stopped"),
    ]
    for override, message in cases:
        arguments = {"id": "a", "configure_session": configure_ok, "llm_response_handler": handler_ok, **override}
        with pytest.raises(ValidationError, match=message):
            Agent(**arguments)


# --- load_agent ----------------------------------------------------------------------------------------------

AGENT_FILE = """
from telebridge import Agent, SessionConfig

async def configure_session(input):
    return SessionConfig(initial_messages=[])

async def llm_response_handler(input):
    return None

{extra}
"""


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_load_agent_from_a_file(tmp_path: Path) -> None:
    body = AGENT_FILE.format(extra='agent = Agent(id="{id}", configure_session=configure_session, '
                                   'llm_response_handler=llm_response_handler)')
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write(tmp_path / "one", "agent.py", body.replace("{id}", "first"))
    second = write(tmp_path / "two", "agent.py", body.replace("{id}", "second"))
    assert load_agent(str(first)).id == "first"
    assert load_agent(str(second)).id == "second"  # same file name, separate modules


def test_load_agent_from_a_module() -> None:
    assert load_agent("telebridge.agents.demo").id == load_agent("telebridge.agents.demo:agent").id


def test_load_agent_errors(tmp_path: Path) -> None:
    with pytest.raises(AgentLoadError, match="agent file not found: .*missing.py"):
        load_agent(str(tmp_path / "missing.py"))
    broken = write(tmp_path, "broken.py", "import not_a_real_module_xyz\n")
    with pytest.raises(AgentLoadError, match="could not import agent file .*ModuleNotFoundError.*not_a_real_module"):
        load_agent(str(broken))
    syntax = write(tmp_path, "syntax.py", "def f(:\n")
    with pytest.raises(AgentLoadError, match="SyntaxError"):
        load_agent(str(syntax))
    no_attr = write(tmp_path, "no_attr.py", AGENT_FILE.format(extra=""))
    with pytest.raises(AgentLoadError, match="has no attribute 'agent'"):
        load_agent(str(no_attr))
    wrong = write(tmp_path, "wrong.py", "agent = {'id': 'x'}\n")
    with pytest.raises(AgentLoadError, match="is a builtins.dict, expected telebridge.Agent"):
        load_agent(str(wrong))
    with pytest.raises(AgentLoadError, match="no module named 'no_such_pkg.agent'"):
        load_agent("no_such_pkg.agent")
    with pytest.raises(AgentLoadError, match="has no attribute 'bot'"):
        load_agent("telebridge.agents.demo:bot")


# --- configure -----------------------------------------------------------------------------------------------


def agent_returning(result: Any) -> Agent:
    async def configure_session(input: Any) -> Any:
        if isinstance(result, Exception):
            raise result
        return result

    return Agent(id="cfg", configure_session=configure_session, llm_response_handler=handler_ok)


async def test_configure_passes_custom_data_and_validates() -> None:
    agent = Agent(id="a", configure_session=configure_ok, llm_response_handler=handler_ok)
    cfg = await configure(agent, {"city": "Oslo"})
    assert cfg.session_data == {"city": "Oslo"}
    from_dict = await configure(agent_returning({"initial_messages": [], "first_message": "Hi"}), {})
    assert from_dict.first_message == "Hi"


async def test_configure_gives_each_call_its_own_session_data() -> None:
    shared = SessionConfig(initial_messages=[{"role": "system", "content": "x"}], session_data={"n": 0})
    agent = agent_returning(shared)
    one, two = await configure(agent, {}), await configure(agent, {})
    one.session_data["n"] = 1
    one.initial_messages.append({"role": "user", "content": "hi"})
    assert two.session_data == {"n": 0} and shared.session_data == {"n": 0}
    assert len(two.initial_messages) == 1


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (RuntimeError("database down"), "configure_session of agent 'cfg' raised RuntimeError: database down"),
        ({"initial_messages": [], "vad": "silero"}, "returned an invalid session config"),
        ("not a config", "returned str; expected a SessionConfig"),
        (SessionConfig(initial_messages=[], tts=TTS.Cartesia()), "TTS.Cartesia is not available"),
    ],
)
async def test_configure_failures_are_agent_config_errors(result: Any, message: str) -> None:
    if isinstance(result, SessionConfig) and result.tts.provider in IMPLEMENTED_TTS:
        pytest.skip("implemented in this build")
    with pytest.raises(AgentConfigError, match=message):
        await configure(agent_returning(result), {})


# --- the demo agent ------------------------------------------------------------------------------------------


async def test_demo_agent_copies_caller_metadata() -> None:
    from telebridge.agents.demo import GREETING, agent

    cfg = await configure(agent, {"From": "+15551230000", "FromCity": "PORTLAND", "FromState": "ME", "CallSid": "CA1"})
    assert cfg.first_message == GREETING
    assert cfg.session_data["caller_city"] == "Portland" and cfg.session_data["call_sid"] == "CA1"
    assert "Portland" in cfg.initial_messages[0]["content"]
    bare = await configure(agent, {})
    assert "caller_city" not in bare.session_data
