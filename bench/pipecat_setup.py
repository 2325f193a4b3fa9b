"""What the Pipecat comparison server needs from the bench side: its own venv, and the talker's audio.

Why a separate environment: ``cpu_per_call.py`` measures Pipecat itself, shaped like its ``twilio-chatbot``
example (``bench/pipecat_server.py``), so the telebridge/Pipecat ratio is measured in the same run instead of
quoted. Pipecat's server needs FastAPI and Pipecat's own extras; installing them into telebridge's environment
would change what telebridge is measured with. So the bench keeps ``bench/.venv-pipecat`` (gitignored), made on
first use with ``python -m venv`` + ``pip install`` (PyPI only), and runs the Pipecat server from it.

``uvloop`` is installed too but is NOT used unless asked for (``BENCH_PIPECAT_LOOP=uvloop`` in the server's
environment): the example's ``uvicorn`` comes without it, so by default Pipecat runs on asyncio's own loop, as
its users get it; telebridge depends on uvloop and runs on it.

The ``pipecat-duplex`` server plays pre-synthesized speech: the talker agent's monologue
(``bench/agents/talker.py``), synthesized here once per run with Piper in telebridge's environment, at 8 kHz
16-bit PCM, which is what a cloud TTS sends a Pipecat pipeline whose ``audio_out_sample_rate`` is 8000.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv-pipecat"
REQUIREMENTS = ("pipecat-ai[silero,websocket]==1.14.*", "fastapi", "uvicorn", "uvloop")
_STAMP = VENV / "bench-requirements.txt"  # what the venv was made with: a changed list remakes it


def pipecat_python() -> Path:
    """The Pipecat venv's interpreter, creating the venv first if it is missing or was made differently."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    print(f"  creating {VENV.relative_to(ROOT)} (first use): pip install {' '.join(REQUIREMENTS)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    _STAMP.write_text(wanted)
    return python


def talker_audio(path: Path) -> Path:
    """Write the talker's monologue as 8 kHz int16 PCM to ``path`` (once: an existing file is reused)."""
    if path.exists():
        return path
    from bench.agents.talker import SENTENCES
    from telebridge.audio.resample import resample_once
    from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

    piper = load_piper_voice(default_piper_voice())
    rate = int(piper.config.sample_rate)
    speech = [c.audio_int16_array for s in SENTENCES for c in piper.synthesize(s)]
    pcm = np.concatenate(speech).astype(np.float32) / 32768.0
    pcm8k = resample_once(pcm, rate, 8000)
    path.write_bytes((np.clip(pcm8k, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path
