"""Pure-numpy audio layer: G.711 codecs, streaming resampling, PCM helpers and WAV I/O."""

from telebridge.audio.g711 import alaw_decode, ulaw_decode, ulaw_decode_float, ulaw_encode
from telebridge.audio.pcm import rms_dbfs, to_float32, to_int16
from telebridge.audio.resample import Resampler, resample_once
from telebridge.audio.wav import WavError, read_wav, wav_bytes, write_wav

__all__ = [
    "alaw_decode",
    "ulaw_decode",
    "ulaw_decode_float",
    "ulaw_encode",
    "rms_dbfs",
    "to_float32",
    "to_int16",
    "Resampler",
    "resample_once",
    "WavError",
    "read_wav",
    "wav_bytes",
    "write_wav",
]
