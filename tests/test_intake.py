"""The inbound hot path (``pipeline/intake.py``) with the echo canceller on, as on every phone call: a μ-law STT
stream gets the caller's frames as Twilio sent them whenever the canceller left them unchanged (the agent silent
long enough, or no echo of it found), and the cancelled audio, re-encoded, when it took an echo away. Every phone
frame waits for the VAD's pass and is cancelled there, with the reference noted as it arrived: the same as cancelling
it as it came."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.pipeline.aec import Verdict
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
    audio, speech, vad, _ = _call(gate)
    # The agent's voice was on the line a moment ago (the canceller remembers it: it is not asleep) ...
    rng = np.random.default_rng(3)
    far = (rng.standard_normal(FRAME) * 0.3).astype(np.float32)
    gate.aec.process(np.zeros(FRAME, np.float32), far)
    assert not gate.aec.dormant
    frame = _frames(0.02, 2)[0]
    # ... but no echo of it was found: the canceller takes nothing away, and the frame goes through as received.
    audio.on_ulaw(frame)
    assert not speech.fed  # (held for the VAD's pass)
    vad.before_take()
    assert len(speech.fed) == 1 and speech.fed[0][1] == frame
    # An echo path found (the filter starts from it, 200 samples late) and the agent's echo in the next frame: the
    # canceller takes its estimate away, and the STT gets that audio, re-encoded by the stream, not Twilio's bytes.
    gate.aec.filter.seed(200.0, 0.5)
    echo = np.zeros(FRAME, np.float32)
    echo[:40] = 0.5 * far[FRAME - 40 :]  # (200 samples after the reference: two frames on, its last 40 samples)
    echoed = ulaw_encode(echo + ulaw_decode_float(frame))
    audio.on_ulaw(echoed)
    vad.before_take()
    assert len(speech.fed) == 2 and speech.fed[1][1] is None
    cancelled = speech.fed[1][0]
    assert np.mean(cancelled**2) < 0.1 * np.mean(ulaw_decode_float(echoed) ** 2)
    # Without a canceller (the energy guard), every frame goes through as received.
    guard_audio, guard_speech, _, _ = _call(InboundGate(RATE, RATE, canceller=False, guard=True))
    guard_audio.on_audio(ulaw_decode_float(frame), frame)
    assert guard_speech.fed[0][1] == frame


class _Audio:
    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples

    def view(self, start: int, end: int) -> np.ndarray:
        return self.samples[max(0, start) : max(0, end)]


def test_frames_held_for_the_vad_pass_are_cancelled_as_frames_cancelled_as_they_came():
    """A phone frame waits for the VAD's pass and is cancelled there, with the reference noted as it arrived: the
    output, the verdicts and the canceller's findings are those of cancelling each frame as it came (``on_audio``),
    wherever the passes fall -- through two replies that echo 12 dB down 250 ms late (placed by marks that come
    back 60 ms after their chunk played, the second reply's late), a caller talking over the first, which pauses
    for 0.3 s and resumes where it stopped, and 3 s of silence between the replies (the canceller asleep)."""
    rng = np.random.default_rng(11)
    seconds = 12.5
    total = int(seconds * RATE)
    far = [(rng.standard_normal(int(s * RATE)) * 0.1).astype(np.float32) * np.repeat(
        rng.uniform(0.2, 1.0, int(s * 10)), RATE // 10).astype(np.float32) for s in (4.0, 3.0)]
    stop, gap = int(2.5 * RATE), 15 * FRAME  # the first reply pauses 2.5 s in, for 0.3 s
    # (call clock, reply, reply offset, samples): the segments the caller's phone plays
    segments = [(20 * FRAME, 0, 0, stop), (20 * FRAME + stop + gap, 0, stop, len(far[0]) - stop)]
    segments.append((segments[1][0] + segments[1][3] + 3 * RATE, 1, 0, len(far[1])))
    played = np.zeros(total + 2000, np.float32)
    for s, k, base, n in segments:
        played[s : s + n] = far[k][base : base + n]
    near = np.zeros(total, np.float32)
    near[2000:] = 0.25 * played[: total - 2000]  # the echo, 12 dB down, 250 ms late
    near += (rng.standard_normal(total) * 2e-3).astype(np.float32)
    near[3 * RATE : int(3.8 * RATE)] += (rng.standard_normal(int(0.8 * RATE)) * 0.2).astype(np.float32)  # caller
    frames = [ulaw_encode(near[i : i + FRAME]) for i in range(0, total, FRAME)]

    def run(held: bool) -> tuple[np.ndarray, InboundGate]:
        gate = InboundGate(RATE, RATE, canceller=True, guard=False)
        audio, speech, vad, session = _call(gate)
        state = {"heard": 0}
        session.outbound = SimpleNamespace(heard=lambda segment: state["heard"])
        passes = np.random.default_rng(5)
        for i, frame in enumerate(frames):
            t = i * FRAME
            for seg, (s, k, base, n) in enumerate(segments):
                if t == s:  # a segment starts: the echo's clocks start with it
                    session._reply = SimpleNamespace(audible=True, paused=False, base=base, segment=seg + 1,
                                                     audio=_Audio(far[k]), enqueued=n)
                    state["heard"] = 0
                    gate.restart(base, audio.fed)
                reply = session._reply
                if reply is not None and reply.segment == seg + 1:
                    mark_lag = 480 if k == 0 else 1600  # (the second reply's marks come back late)
                    played_now = min(max(t - s - mark_lag, 0), n)
                    state["heard"] = played_now - played_now % 640  # (a mark every 80 ms chunk)
                    if seg == 0 and t >= s + n:
                        reply.paused = True  # the caller's phone stops playing it (resumed by the next segment)
                    elif t >= s + n + RATE // 2:
                        session._reply = None  # played out: the agent is silent
            if held:
                audio.on_ulaw(frame)
                if passes.random() < 0.6:
                    vad.before_take()  # the VAD's pass (every one to a few frames)
            else:
                audio.on_audio(ulaw_decode_float(frame), frame)
        vad.before_take()
        return np.concatenate([p for p, _ in speech.fed]), gate

    direct, direct_gate = run(held=False)
    held, held_gate = run(held=True)
    assert len(direct) == len(held) == total
    assert np.array_equal(direct, held)
    a, b = direct_gate.aec, held_gate.aec
    assert b.echo_gain == a.echo_gain > 0.0 and b.line_gain == a.line_gain
    assert not np.array_equal(direct, ulaw_decode_float(b"".join(frames)))  # (the echo was taken away)
    verdicts = [(a.verdict(i, i + 256), b.verdict(i, i + 256)) for i in range(0, total - 256, 256)]
    assert all(x == y for x, y in verdicts)
    assert {x for x, _ in verdicts} >= {Verdict.ECHO, Verdict.PASS}


def test_frames_wait_for_the_vad_pass_at_most_a_second():
    """With the VAD hub stalled (or stopped), held frames do not pile up: after a second they go on to the STT and
    the VAD stream (which bounds its own backlog) without waiting for a pass."""
    audio, speech, vad, _ = _call(InboundGate(RATE, RATE, canceller=True, guard=False))
    frames = _frames(2.5, 3)
    for frame in frames[:50]:
        audio.on_ulaw(frame)
    assert not speech.fed and vad.samples == 0 and vad.held() == 1.0
    audio.on_ulaw(frames[50])
    assert vad.samples == 51 * FRAME and vad.held() == 0.0
    for frame in frames[51:]:
        audio.on_ulaw(frame)
    assert vad.samples == 102 * FRAME and vad.held() == (len(frames) - 102) * FRAME / RATE
    assert b"".join(u for _, u in speech.fed) == b"".join(frames[:102])
