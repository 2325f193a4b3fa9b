"""The realtime API's audio formats: bytes of an ``input_audio_buffer.append`` → float samples, and back.

* ``pcm16``: 24 kHz mono little-endian 16-bit (OpenAI's default); an odd byte is carried to the next append.
* ``g711_ulaw``: 8 kHz μ-law, one byte per sample.
* ``opus``: one continuous Ogg/Opus stream per direction, 24 kHz mono — what Unmute's web frontend and its
  load-test client send and expect, made and read with Kyutai's ``sphn`` like Unmute itself. Appends may cut
  pages anywhere (the reader buffers). Unmute's clients never name a format, so a session whose first append
  starts with the Ogg capture pattern ``OggS`` is taken to speak Opus (:func:`sniff`).

Cost, measured with sphn 0.2.1 on one core: encoding a 40 ms frame takes ~0.34 ms (0.8 % of real time),
decoding one ~0.07 ms — cheaper than a hop to a worker thread, so both run on the event loop.
"""

from __future__ import annotations

import numpy as np

from ..audio.g711 import ulaw_decode_float, ulaw_encode
from ..audio.pcm import to_int16
from ..audio.resample import Resampler
from .protocol import FORMAT_RATES

OGG_CAPTURE = b"OggS"
OPUS_RATE = 24000
OPUS_FRAME = 960  # 40 ms at 24 kHz: sphn's writer takes whole Opus frames only (a partial one is dropped)


def sniff(data: bytes) -> str | None:
    """``"opus"`` when the bytes open an Ogg stream, else None (nothing to tell PCM16 from noise)."""
    return "opus" if data[:4] == OGG_CAPTURE else None


class AudioDecoder:
    """Bytes of one input format → float32 samples at that format's rate (streaming, per session)."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self._leftover = b""
        self._opus = None
        if fmt == "opus":
            import sphn

            self._opus = sphn.OpusStreamReader(OPUS_RATE)

    def decode(self, data: bytes) -> np.ndarray:
        """Raises ``ValueError`` on bytes that are not the Ogg/Opus stream this decoder is reading."""
        if self._opus is not None:
            return np.asarray(self._opus.append_bytes(data), dtype=np.float32)
        if self.format == "g711_ulaw":
            return ulaw_decode_float(data)
        data = self._leftover + data
        usable = len(data) - len(data) % 2
        self._leftover = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / np.float32(32768.0)


class OpusEncoder:
    """Float32 at 24 kHz → Ogg/Opus bytes of one continuous stream, in whole 40 ms frames.

    Samples short of a frame wait for the next call; :meth:`flush` pads them with silence (the end of a
    reply), :meth:`drop` forgets them (the client cleared its buffer). The stream's header pages come with the
    first bytes returned, so the whole session is one Ogg stream, as Unmute sends it.
    """

    def __init__(self) -> None:
        import sphn

        self._writer = sphn.OpusStreamWriter(OPUS_RATE)
        self._pending = np.zeros(0, dtype=np.float32)

    def encode(self, audio: np.ndarray) -> bytes:
        buf = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32)]) if len(self._pending) else \
            np.asarray(audio, dtype=np.float32)
        whole = len(buf) - len(buf) % OPUS_FRAME
        self._pending = buf[whole:].copy()
        out = bytearray()
        for i in range(0, whole, OPUS_FRAME):
            out += self._writer.append_pcm(np.clip(buf[i : i + OPUS_FRAME], -1.0, 1.0))
        return bytes(out)

    def flush(self) -> bytes:
        if not len(self._pending):
            return b""
        return self.encode(np.zeros(OPUS_FRAME - len(self._pending), dtype=np.float32))

    def drop(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)


def encode_plain(audio: np.ndarray, fmt: str) -> bytes:
    """Float samples (already at the format's rate) → ``pcm16`` or ``g711_ulaw`` bytes."""
    if fmt == "g711_ulaw":
        return ulaw_encode(audio)
    return to_int16(audio).astype("<i2", copy=False).tobytes()


def choose_formats(chosen: dict[str, str], sniffed: str | None, typed_instructions: bool) -> tuple[str, str]:
    """A session's (input, output) formats. ``chosen``: the formats the client set. Otherwise the input is
    Opus when the first append opened an Ogg stream, else PCM16; the output is Opus for a session that speaks
    Opus or sends Unmute's typed instructions (Unmute's clients always read Ogg/Opus), else PCM16."""
    fmt_in = chosen.get("input_audio_format") or sniffed or "pcm16"
    fmt_out = chosen.get("output_audio_format") or ("opus" if fmt_in == "opus" or typed_instructions else "pcm16")
    return fmt_in, fmt_out


class InputAudio:
    """One session's incoming audio: format (sniffed from the first append unless chosen), decoder, resampler
    to the conversation loop's rate."""

    def __init__(self, pipeline_rate: int) -> None:
        self.pipeline_rate = pipeline_rate
        self.sniffed: str | None = None
        self._first = True
        self.decoder = AudioDecoder("pcm16")
        self.resampler = Resampler(FORMAT_RATES["pcm16"], pipeline_rate)

    @property
    def format(self) -> str:
        return self.decoder.format

    def sniff_first(self, data: bytes, format_chosen: bool) -> bool:
        """Look at the first append (only): True when it revealed an Ogg/Opus stream the client did not name."""
        first, self._first = self._first, False
        if first and not format_chosen and sniff(data) == "opus":
            self.sniffed = "opus"
            return True
        return False

    def use(self, fmt: str) -> None:
        if fmt != self.decoder.format:
            self.decoder = AudioDecoder(fmt)
            self.resampler = Resampler(FORMAT_RATES[fmt], self.pipeline_rate)

    def decode(self, data: bytes) -> tuple[int, np.ndarray]:
        """(samples decoded at the format's rate, the audio at the loop's rate); ``ValueError`` on bad Ogg."""
        pcm = self.decoder.decode(data)
        return len(pcm), (self.resampler.process(pcm) if len(pcm) else pcm)
