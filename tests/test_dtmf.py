"""Keypad tones, sans-I/O: generating them (decoded back with the Goertzel detector, through μ-law), validating
what an LLM asks to press, the ``send_dtmf`` tool, and the call-side bookkeeping (order, floor, echo)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from telebridge.audio.dtmf import (
    DTMF_FREQS,
    DtmfDetector,
    detect_dtmf,
    dtmf_duration,
    dtmf_tones,
    normalise_digits,
)
from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.pipeline.keypad import ECHO_WINDOW, KeypadTones, Tones, queue_tones
from telebridge.pipeline.sentences import SentenceChunker
from telebridge.pipeline.turns import Pause, State, TurnEngine, TurnParams
from telebridge.session import SessionConfig
from telebridge.tools import SEND_DTMF_SCHEMA, builtin_tool_schemas, make_builtin_tools

RATE = 8000
ALL_KEYS = "1234567890*#"


def phone_line(audio: np.ndarray) -> np.ndarray:
    return ulaw_decode_float(ulaw_encode(audio))


# --- generation, decoded back --------------------------------------------------------------------------------
def test_every_key_survives_mu_law_and_is_decoded_in_order():
    audio = dtmf_tones(ALL_KEYS)
    assert detect_dtmf(phone_line(audio)) == ALL_KEYS
    assert len(audio) == round(dtmf_duration(ALL_KEYS) * RATE)
    assert float(np.max(np.abs(audio))) < 0.6  # both tones together never clip
    assert np.array_equal(audio, dtmf_tones(ALL_KEYS))  # pure: same keys, same samples


def test_each_tone_is_its_q23_frequency_pair_with_a_little_positive_twist():
    for key, (low, high) in DTMF_FREQS.items():
        if key not in ALL_KEYS:
            continue
        tone = dtmf_tones(key)[: int(0.12 * RATE)].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone)), 8 * len(tone)))
        freqs = np.fft.rfftfreq(8 * len(tone), 1 / RATE)
        peaks = sorted(freqs[np.argsort(spectrum)[-40:]])
        near_low = [f for f in peaks if abs(f - low) < 10]
        near_high = [f for f in peaks if abs(f - high) < 10]
        assert near_low and near_high, (key, peaks)
        p_low = spectrum[np.argmin(abs(freqs - low))]
        p_high = spectrum[np.argmin(abs(freqs - high))]
        assert 1.0 < p_high / p_low < 1.6  # high group ~2 dB above the low group


def test_tones_and_gaps_last_what_was_asked_and_w_pauses_half_a_second():
    audio = dtmf_tones("1w2")
    frames = audio[: len(audio) // 40 * 40].reshape(-1, 40)  # 5 ms frames
    loud = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 0.01
    edges = np.flatnonzero(np.diff(loud.astype(int))) + 1
    first_on, first_off, second_on = 0, edges[0], edges[1]
    assert abs((first_off - first_on) * 0.005 - 0.12) <= 0.006
    assert abs((second_on - first_off) * 0.005 - (0.12 + 0.5)) <= 0.006
    assert detect_dtmf(audio) == "12"


def test_repeated_keys_are_separate_presses():
    assert detect_dtmf(phone_line(dtmf_tones("1100##"))) == "1100##"


@pytest.mark.parametrize("offset", [0, 17, 51, 101])
def test_q24_shortest_tones_and_gaps_are_accepted_at_any_alignment(offset):
    audio = np.concatenate([np.zeros(offset, np.float32), dtmf_tones(ALL_KEYS + "55", tone=0.04, gap=0.04)])
    assert detect_dtmf(phone_line(audio)) == ALL_KEYS + "55"


def test_a_20_ms_blip_is_not_a_key_press():
    blip = dtmf_tones("5")[: int(0.02 * RATE)]
    assert detect_dtmf(np.concatenate([np.zeros(400, np.float32), blip, np.zeros(2000, np.float32)])) == ""


def test_speech_like_sound_noise_and_a_beep_are_not_keys():
    rng = np.random.default_rng(1)
    t = np.arange(5 * RATE) / RATE
    phase = np.cumsum(2 * np.pi * (120 + 25 * np.sin(2 * np.pi * 0.7 * t)) / RATE)
    voiced = 0.1 * sum(np.sin(k * phase) / k for k in range(1, 30))  # a gliding voice with many harmonics
    noise = rng.standard_normal(len(t)) * 0.1
    beep = 0.3 * np.sin(2 * np.pi * 1000 * t)
    for sound in (voiced, noise, beep, np.zeros(len(t))):
        assert detect_dtmf(phone_line(sound.astype(np.float32))) == ""


def test_keys_are_heard_over_line_noise_and_in_any_chunking():
    rng = np.random.default_rng(2)
    audio = dtmf_tones("9#*0")
    noisy = phone_line(audio + (rng.standard_normal(len(audio)) * 0.02).astype(np.float32))
    detector = DtmfDetector()
    hits = []
    for i in range(0, len(noisy), 160):  # the simulator's 20 ms ticks
        hits += detector.push(noisy[i: i + 160])
    assert "".join(h.key for h in hits) == "9#*0"
    assert abs(hits[1].start - 0.24) < 0.03 and all(h.at > h.start for h in hits)


def test_other_sample_rates():
    assert detect_dtmf(dtmf_tones("147", 16000), 16000) == "147"


# --- what an LLM may ask for ---------------------------------------------------------------------------------
@pytest.mark.parametrize("given, keys", [
    ("1", "1"), ("1 2 3", "123"), ("415-555-0123#", "4155550123#"), ("ww1W2", "ww1w2"), ("(0)*", "0*"),
])
def test_digits_are_normalised(given, keys):
    assert normalise_digits(given) == keys


@pytest.mark.parametrize("given, why", [
    ("", "at least one key"), ("ww", "at least one key"), ("1a", "'a'"), ("one", "'eno'"), ("1" * 41, "at most 40"),
    ("1,2", "','"), (7, "must be a string"),
])
def test_bad_digits_are_refused_with_a_reason(given, why):
    with pytest.raises(ValueError, match=why):
        normalise_digits(given)  # type: ignore[arg-type]


def test_tone_timing_outside_q24_is_refused():
    with pytest.raises(ValueError, match="40 ms"):
        dtmf_tones("1", tone=0.02)


# --- the tool ------------------------------------------------------------------------------------------------
class Presser:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.sent: list[str] = []

    def request_end_call(self, reason: str) -> None: ...

    def request_transfer(self, target: str, name: str) -> None: ...

    async def send_dtmf(self, keys: str) -> bool:
        self.sent.append(keys)
        return self.ok


async def test_send_dtmf_tool_validates_presses_and_reports_what_was_sent():
    presser = Presser()
    tool = make_builtin_tools(["send_dtmf"], presser, {})["send_dtmf"]
    result = await tool(digits="1 2w#")
    assert presser.sent == ["12w#"]
    assert result.startswith("Pressed 1 2 (pause) # on the keypad.") and "wait" in result
    refused = await tool(digits="12ab")
    assert refused.startswith("Error: nothing was pressed") and "'ab'" in refused and presser.sent == ["12w#"]
    busy = await make_builtin_tools(["send_dtmf"], Presser(ok=False), {})["send_dtmf"](digits="1")
    assert busy.startswith("Error: nothing was pressed")
    assert make_builtin_tools(["end_call"], presser, {}).keys() == {"end_call"}


def test_send_dtmf_is_opt_in_with_its_schema():
    assert builtin_tool_schemas(SessionConfig(initial_messages=[])) == []
    cfg = SessionConfig(initial_messages=[], builtin_tools=["send_dtmf"])
    assert builtin_tool_schemas(cfg) == [SEND_DTMF_SCHEMA]
    assert SEND_DTMF_SCHEMA["function"]["parameters"]["required"] == ["digits"]
    with pytest.raises(ValueError):
        SessionConfig(initial_messages=[], builtin_tools=["press_keys"])


# --- the call's side -----------------------------------------------------------------------------------------
class _Reply:
    def __init__(self) -> None:
        self.sentences: asyncio.Queue = asyncio.Queue(maxsize=8)
        self.chunker = SentenceChunker()
        self.text_done = False


async def test_tones_follow_the_text_said_before_the_tool_call():
    reply = _Reply()
    assert reply.chunker.push("Sure, I will press one for sales now.") == []  # held: its end is not confirmed
    tones = KeypadTones(RATE).make("1")
    assert await queue_tones(reply, tones)
    assert reply.sentences.get_nowait() == "Sure, I will press one for sales now."
    assert reply.sentences.get_nowait() is tones
    reply.text_done = True
    assert not await queue_tones(reply, tones)  # the reply is over: nothing to press into


def test_tones_hold_the_floor_while_in_flight_then_their_echo_is_ignored():
    keypad = KeypadTones(RATE)
    assert isinstance(keypad.make("12"), Tones) and not keypad.pending
    keypad.placed(7, start=8000, end=8000 + 3840, keys="12")  # after a second of speech
    assert not keypad.holds_floor(7, heard=4000, now=10.0)  # the speech before them is playing
    assert keypad.holds_floor(7, heard=8000 - 1000, now=10.5)  # queued at Twilio's: no clear now
    assert keypad.holds_floor(7, heard=9000, now=10.6)
    assert keypad.is_echo("2", 10.6 + ECHO_WINDOW - 0.05) and not keypad.is_echo("5", 10.6)
    assert not keypad.holds_floor(7, heard=8000 + 3840, now=11.0) and not keypad.pending  # played out
    assert not keypad.is_echo("1", 10.6 + ECHO_WINDOW + 0.1)
    keypad.placed(8, 0, 100, "3")
    assert not keypad.holds_floor(None, 0, 12.0) and not keypad.pending  # the reply is gone
    assert keypad.sent == ["12", "3"]


def test_the_engine_never_pauses_over_held_tones():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.3))
    (reply,) = engine.greet("Pressing one.")
    engine.reply_audio_started(reply.turn_id, 0.1)
    engine.floor_held = True
    engine.speech_started(1.0)
    t, actions = 1.0, []
    while t < 2.0:
        t += 0.032
        engine.speech_continues(t)
        actions += engine.tick(t)
    assert not [a for a in actions if isinstance(a, Pause)] and engine.state is State.SPEAKING
    assert not engine.wants_interim
    engine.floor_held = False  # tones done, the menu is still talking: now the usual rules apply
    engine.speech_continues(t + 0.032)
    assert engine.tick(t + 0.032) == [Pause(reply.turn_id)]


def test_tones_cut_off_before_they_played_are_reported_once():
    keypad = KeypadTones(RATE)
    keypad.placed(3, start=8000, end=9920, keys="1")
    keypad.placed(3, start=12000, end=13920, keys="2#")
    assert keypad.unplayed(3, heard=10000) == "2#"  # 1 went out, 2# never did
    assert keypad.unplayed(3, heard=10000) == "" and keypad.pending
