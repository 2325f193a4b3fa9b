"""The inbound hot path (``pipeline/intake.py``) with the echo canceller on, as on every phone call: a μ-law STT
stream gets the caller's frames as Twilio sent them whenever the canceller left them unchanged (the agent silent
long enough, or no echo of it found), and the cancelled audio, re-encoded, when it took an echo away."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.pipeline.inbound_gate import InboundGate
from telebridge.pipeline.intake import CallerAudio

RATE = 8000
FRAME = 160


class Speech:
    def __init__(self) -> None:
        self.fed: list[tuple[np.ndarray, bytes | None]] = []

    def feed(self, pcm: np.ndarray, ulaw: bytes | None = None) -> None:
        self.fed.append((pcm, ulaw))


class Vad:
    def __init__(self) -> None:
        self.samples = 0
        self.before_take = None
        self.held = None

    def feed(self, pcm: np.ndarray) -> None:
        self.samples += len(pcm)


def _call(gate: InboundGate) -> tuple[CallerAudio, Speech, Vad, SimpleNamespace]:
    speech, vad = Speech(), Vad()
    session = SimpleNamespace(input_rate=RATE, _ready=True, _closed=False, gate=gate, _reply=None, outbound=None,
                              callee=None, speech=speech)
    audio = CallerAudio(session)  # type: ignore[arg-type]
    audio.connect(vad, RATE)
    return audio, speech, vad, session


def _frames(seconds: float, seed: int) -> list[bytes]:
    """μ-law line noise with both μ-law zeros (0x7F, 0xFF): re-encoding turns every 0x7F into 0xFF, so a 0x7F
    that reaches the STT was forwarded, not re-encoded."""
    rng = np.random.default_rng(seed)
    data = bytes(rng.choice([0x7F, 0xFF, 0x7E, 0xFE, 0x7D, 0xFD], size=int(seconds * RATE)).astype(np.uint8))
    return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]


def test_frames_the_canceller_leaves_unchanged_reach_a_mulaw_stt_as_received():
    gate = InboundGate(RATE, RATE, canceller=True, guard=False)
    audio, speech, vad, _ = _call(gate)
    frames = _frames(3.0, 1)
    for i, frame in enumerate(frames):
        audio.on_ulaw(frame)
        if i % 2 == 1:
            vad.before_take()  # the VAD hub's pass: held frames are decoded and delivered
    vad.before_take()
    sent = b"".join(u for _, u in speech.fed if u is not None)
    assert all(u is not None for _, u in speech.fed)  # the reference never sounded: nothing was changed
    assert sent == b"".join(frames) and b"\x7f" in sent
    assert vad.samples == len(sent)
    pcm = np.concatenate([p for p, _ in speech.fed])
    assert np.array_equal(pcm, ulaw_decode_float(b"".join(frames)))


def test_frames_the_canceller_changes_reach_the_stt_as_the_cancelled_audio():
    gate = InboundGate(RATE, RATE, canceller=True, guard=False)
    audio, speech, _, _ = _call(gate)
    # The agent's voice was on the line a moment ago (the canceller remembers it: no frame is held) ...
    rng = np.random.default_rng(3)
    far = (rng.standard_normal(FRAME) * 0.3).astype(np.float32)
    gate.aec.process(np.zeros(FRAME, np.float32), far)
    assert not gate.aec.dormant
    frame = _frames(0.02, 2)[0]
    # ... but no echo of it was found: the canceller takes nothing away, and the frame goes through as received.
    audio.on_ulaw(frame)
    assert len(speech.fed) == 1 and speech.fed[0][1] == frame
    # An echo path found (the filter starts from it, 200 samples late) and the agent's echo in the next frame: the
    # canceller takes its estimate away, and the STT gets that audio, re-encoded by the stream, not Twilio's bytes.
    gate.aec.filter.seed(200.0, 0.5)
    echo = np.zeros(FRAME, np.float32)
    echo[:40] = 0.5 * far[FRAME - 40 :]  # (200 samples after the reference: two frames on, its last 40 samples)
    echoed = ulaw_encode(echo + ulaw_decode_float(frame))
    audio.on_ulaw(echoed)
    assert len(speech.fed) == 2 and speech.fed[1][1] is None
    cancelled = speech.fed[1][0]
    assert np.mean(cancelled**2) < 0.1 * np.mean(ulaw_decode_float(echoed) ** 2)
    # Without a canceller (the energy guard), every frame goes through as received.
    guard_audio, guard_speech, _, _ = _call(InboundGate(RATE, RATE, canceller=False, guard=True))
    guard_audio.on_audio(ulaw_decode_float(frame), frame)
    assert guard_speech.fed[0][1] == frame
