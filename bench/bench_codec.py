"""Per-frame cost of the Twilio Media Streams codec.

Why: every call sends 50 media frames a second and telebridge aims at 50 concurrent calls, i.e. 2,500
frames a second on a 2-core box. This prints µs per media frame for ``StreamDecoder.receive``'s fast path
(json.loads + type checks + direct model construction) and for full pydantic validation; for ``receive_audio``, the
media route's hot path, on frames in the text Twilio writes (read without parsing the JSON) and on the same frames
with spaces (the JSON way); plus the outbound encoder. The target is judged on ``receive_audio`` on Twilio's text.
Run: .venv/bin/python bench/bench_codec.py [--frames N]
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from telebridge.simulator.wire import twilio_connected, twilio_media, twilio_start  # noqa: E402
from telebridge.twilio.stream import MediaEvent, StreamDecoder, encode_media  # noqa: E402

STREAM_SID = "MZ" + "0123456789abcdef" * 2
CALL_SID = "CA" + "fedcba9876543210" * 2
ACCOUNT_SID = "AC" + "00112233445566778899aabbccddeeff"
TARGET_US = 8.0


def _frames(n: int) -> list[str]:
    """Realistic 20 ms frames: 160 bytes of μ-law, counters as Twilio sends them."""
    payload = os.urandom(160)
    return [twilio_media(STREAM_SID, payload, i + 1, 20 * i, i + 2) for i in range(n)]


def _started(fast_path: bool) -> StreamDecoder:
    dec = StreamDecoder(fast_path=fast_path)
    dec.receive(twilio_connected())
    dec.receive(twilio_start(STREAM_SID, CALL_SID, ACCOUNT_SID, {"agent": "demo"}, 1))
    return dec


def _time_receive(frames: list[str], fast_path: bool, audio: bool = False) -> float:
    """µs per frame for one pass of a fresh decoder over all frames (``receive``, or ``receive_audio``)."""
    dec = _started(fast_path)
    receive = dec.receive_audio if audio else dec.receive
    t0 = time.perf_counter()
    for f in frames:
        receive(f)
    elapsed = time.perf_counter() - t0
    assert dec.stats.media == len(frames), dec.stats  # every frame must have been accepted
    return elapsed / len(frames) * 1e6


def _time_call(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _best(samples: list[float]) -> str:
    return f"median {statistics.median(samples):6.2f} µs   best {min(samples):6.2f} µs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    frames = _frames(args.frames)
    print(f"media frame: {len(frames[0])} chars, 160-byte payload; {args.frames} frames x {args.repeats} runs")

    fast = [_time_receive(frames, True) for _ in range(args.repeats)]
    full = [_time_receive(frames, False) for _ in range(args.repeats)]
    wire = [_time_receive(frames, True, audio=True) for _ in range(args.repeats)]
    spaced_frames = [json.dumps(json.loads(f)) for f in frames]
    spaced = [_time_receive(spaced_frames, True, audio=True) for _ in range(args.repeats)]
    msg = json.loads(frames[0])
    loads = [_time_call(lambda: json.loads(frames[0]), args.frames) for _ in range(args.repeats)]
    validate_json = [
        _time_call(lambda: MediaEvent.model_validate_json(frames[0]), args.frames) for _ in range(args.repeats)
    ]
    validate_py = [_time_call(lambda: MediaEvent.model_validate(msg), args.frames) for _ in range(args.repeats)]
    fields = {"event", "sequence_number", "stream_sid", "track", "chunk", "timestamp", "payload"}

    def loads_and_model_construct() -> object:
        m = json.loads(frames[0])
        media = m["media"]
        return MediaEvent.model_construct(
            fields,
            sequence_number=int(m["sequenceNumber"]),
            stream_sid=m["streamSid"],
            track=media["track"],
            chunk=int(media["chunk"]),
            timestamp=int(media["timestamp"]),
            payload=binascii.a2b_base64(media["payload"], strict_mode=True),
        )

    construct = [_time_call(loads_and_model_construct, args.frames) for _ in range(args.repeats)]
    payload = os.urandom(160)
    enc = [_time_call(lambda: encode_media(STREAM_SID, payload), args.frames) for _ in range(args.repeats)]

    print(f"receive(), fast path            : {_best(fast)}")
    print(f"receive(), full pydantic        : {_best(full)}")
    print(f"receive_audio(), Twilio's text  : {_best(wire)}")
    print(f"receive_audio(), spaced JSON    : {_best(spaced)}")
    print(f"  (json.loads alone             : {_best(loads)})")
    print(f"  (json.loads+model_construct   : {_best(construct)})")
    print(f"  (MediaEvent.model_validate    : {_best(validate_py)})")
    print(f"  (MediaEvent.model_validate_json: {_best(validate_json)})")
    print(f"encode_media() 160 bytes        : {_best(enc)}")
    med = statistics.median(wire)  # (what the media route does per frame)
    verdict = "OK" if med < TARGET_US else "OVER"
    print(f"target < {TARGET_US:.0f} µs per media frame (receive_audio on Twilio's text, median): {verdict}")
    calls = 1e6 / med / 50
    print(f"=> one core could decode media for ~{calls:,.0f} concurrent calls at 50 frames/s")


if __name__ == "__main__":
    main()
