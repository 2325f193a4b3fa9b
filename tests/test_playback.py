"""PlaybackBuffer reproduces Twilio's outbound buffer: ordered playback, marks, clear, silence padding."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.simulator.playback import SILENCE_BYTE, PlaybackBuffer


def test_plays_in_order_and_pads_with_silence() -> None:
    buf = PlaybackBuffer()
    buf.media(b"\x01\x02\x03")
    buf.media(b"\x04\x05")
    assert buf.buffered_samples == 5
    out, marks = buf.advance(4)
    assert out == b"\x01\x02\x03\x04" and marks == []
    out, marks = buf.advance(4)
    assert out == b"\x05" + bytes([SILENCE_BYTE]) * 3
    assert buf.played_samples == 5
    assert buf.elapsed_samples == 8
    assert buf.buffered_samples == 0


def test_mark_echoed_exactly_when_playback_reaches_it() -> None:
    buf = PlaybackBuffer()
    buf.media(b"\x10" * 300)
    buf.mark("a")
    buf.media(b"\x20" * 100)
    buf.mark("b")
    buf.mark("c")
    assert buf.advance(160) == (b"\x10" * 160, [])
    out, marks = buf.advance(140)  # lands exactly on mark "a"
    assert out == b"\x10" * 140 and marks == ["a"]
    out, marks = buf.advance(160)  # passes "b" and "c" (same position) mid-tick
    assert out[:100] == b"\x20" * 100 and out[100:] == bytes([SILENCE_BYTE]) * 60
    assert marks == ["b", "c"]
    assert buf.pending_marks == []


def test_mark_on_empty_buffer_is_reached_on_next_advance() -> None:
    buf = PlaybackBuffer()
    buf.mark("now")
    assert buf.advance(0) == (b"", ["now"])
    buf.advance(500)  # silence
    buf.mark("later")
    buf.media(b"\x33")  # audio after the mark does not hold it back
    assert buf.advance(1) == (b"\x33", ["later"])


def test_clear_drops_audio_and_returns_every_pending_mark() -> None:
    buf = PlaybackBuffer()
    buf.media(b"\x01" * 200)
    buf.mark("m1")
    buf.media(b"\x02" * 200)
    buf.mark("m2")
    out, marks = buf.advance(250)
    assert marks == ["m1"]
    assert buf.clear() == ["m2"]
    assert buf.buffered_samples == 0
    assert buf.clear() == []
    out, marks = buf.advance(10)
    assert out == bytes([SILENCE_BYTE]) * 10 and marks == []
    # The stream keeps working after a clear; positions restart at the new end.
    buf.media(b"\x07" * 5)
    buf.mark("m3")
    assert buf.advance(5) == (b"\x07" * 5, ["m3"])
    assert buf.played_samples == 255


def test_buffer_limit_discards_excess_audio() -> None:
    buf = PlaybackBuffer(max_buffered_samples=10)
    buf.media(b"\x01" * 8)
    buf.media(b"\x02" * 5)
    assert buf.buffered_samples == 10 and buf.discarded_samples == 3
    out, _ = buf.advance(10)
    assert out == b"\x01" * 8 + b"\x02" * 2


def test_rejects_negative_advance() -> None:
    with pytest.raises(ValueError):
        PlaybackBuffer().advance(-1)


def test_long_stream_compacts_without_losing_positions() -> None:
    """Play far more than the compaction threshold; marks must still land on their exact byte."""
    buf = PlaybackBuffer()
    expected: list[str] = []
    for i in range(200):
        buf.media(bytes([i % 250]) * 1000)
        buf.mark(f"m{i}")
        expected.append(f"m{i}")
    got: list[str] = []
    for k in range(200):
        out, marks = buf.advance(1000)
        assert out == bytes([k % 250]) * 1000
        assert marks == [f"m{k}"]
        got += marks
    assert got == expected


# -------------------------------------------------------------------------------------------------------------
# Property test: arbitrary interleavings of media / mark / clear / advance
# -------------------------------------------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("media"), st.binary(min_size=0, max_size=400)),
    st.tuples(st.just("mark"), st.none()),
    st.tuples(st.just("clear"), st.none()),
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=500)),
)


@dataclass
class _Epoch:
    """Everything between two clears: audio sent, audio played, marks and where they sit."""

    sent: bytearray = field(default_factory=bytearray)
    played: bytearray = field(default_factory=bytearray)
    marks: list[tuple[int, str]] = field(default_factory=list)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=60))
def test_random_operation_sequences_keep_twilio_invariants(ops: list[tuple[str, object]]) -> None:
    buf = PlaybackBuffer()
    epochs = [_Epoch()]
    sent_marks: list[str] = []
    echoed: list[str] = []
    how: dict[str, str] = {}
    n = 0
    for kind, arg in ops:
        ep = epochs[-1]
        if kind == "media":
            assert isinstance(arg, bytes)
            buf.media(arg)
            ep.sent += arg
        elif kind == "mark":
            name = f"m{n}"
            n += 1
            buf.mark(name)
            sent_marks.append(name)
            ep.marks.append((len(ep.sent), name))
        elif kind == "clear":
            flushed = buf.clear()
            # Exactly the marks of this epoch not yet echoed, in order.
            assert flushed == [m for _, m in ep.marks if m not in how]
            for m in flushed:
                how[m] = "clear"
            echoed += flushed
            epochs.append(_Epoch())
        else:
            assert isinstance(arg, int)
            before = buf.buffered_samples
            out, reached = buf.advance(arg)
            assert len(out) == arg
            real = min(arg, before)
            assert out[real:] == bytes([SILENCE_BYTE]) * (arg - real)  # padding only at the end
            ep.played += out[:real]
            for m in reached:
                how[m] = "played"
                pos = dict((name, p) for p, name in ep.marks)[m]
                assert pos <= len(ep.played)  # reached only once its audio has played
            echoed += reached
            # No pending mark of this epoch has been passed by playback.
            for pos, m in ep.marks:
                if m not in how:
                    assert pos > len(ep.played)
        # Audio played in each epoch is a prefix of the audio sent in it.
        assert bytes(ep.played) == bytes(ep.sent[: len(ep.played)])
        assert buf.buffered_samples == len(epochs[-1].sent) - len(epochs[-1].played)
    # Flush the remainder: every mark is echoed exactly once, in the order sent.
    echoed += buf.clear()
    assert echoed == sent_marks
    assert len(set(echoed)) == len(echoed)
    assert buf.played_samples == sum(len(e.played) for e in epochs)
