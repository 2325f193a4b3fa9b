"""Latency each TTS provider client adds between the provider's first audio byte and the caller.

Why: a cloud voice is only as fast as its first byte *plus* what telebridge adds on its way to the phone line
(sending the request on a warm connection, receiving and decoding the first chunk, resampling, μ-law, pacing,
the first Media Streams frame). The target (issue 7) is <= 30 ms added per provider, measured as "first audio
byte to the caller minus the fake's own time to first byte".

How: a real server (``tests/conftest.py``'s ``LiveServer``: uvicorn on loopback, in a thread of this process)
serves ``bench/agents/greeter.py``, which greets with one short sentence (different on every call) through the
TTS provider named by ``BENCH_TTS``. Every provider's local fake (``tests/fakes/``: the documented wire
protocols, real Piper speech behind them) runs in this process too, each on its own thread and event loop
(``fakes.serve.ThreadedApp``), pre-warmed (Piper loaded, one unmeasured call per provider: connections, token
caches, credential checks). The Twilio simulator then places ``--calls`` short calls per provider, one after the
other (greeting only).

Per call, all on the same ``time.perf_counter()`` clock:

* the server's own split (``CallSession.metrics.speech``, recorded in ``CallSession._record_latency``):
  ``tts`` = first sentence handed to the TTS -> the provider's first audio chunk decoded, ``bridge`` = that
  chunk -> the first media message sent to Twilio; their sum is "through the bridge";
* the fake's own time to first byte: each fake records ``(request received, first audio byte written)`` per
  synthesis (``first_bytes`` / ``speech_first_bytes``; for WebSocket providers "received" is the message that
  lets it start: Deepgram's ``Flush``, ElevenLabs' ``flush``, Cartesia's flush/final input). Piper synthesis in
  the fake counts as the fake's time, so it is subtracted;
* added = through the bridge - fake TTFB. The benchmark also wraps ``_record_latency`` (in this process only) to
  keep each reply's absolute timestamps, so the added part splits into request (sentence handed to the TTS ->
  the fake has the request), response (the fake's first byte -> the client's decoded chunk) and bridge.

The embedded Piper is printed for reference: it has no fake, its "own time" is the server's synthesis (``tts``)
and its added latency is the ``bridge`` part alone.

Run: .venv/bin/python bench/provider_latency.py [--quick] [--calls 6] [--providers deepgram,elevenlabs,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

AGENT = ROOT / "bench" / "agents" / "greeter.py"
PROVIDERS = ("deepgram", "elevenlabs", "cartesia", "openai", "azure", "google", "fishaudio", "piper")
TARGET_MS = 30.0
KEYS = {
    "deepgram": ("DEEPGRAM_API_KEY", "dg-bench-key-0123456789"),
    "elevenlabs": ("ELEVENLABS_API_KEY", "el-bench-key-0123456789"),
    "cartesia": ("CARTESIA_API_KEY", "sk_car_bench_0123456789"),
    "openai": ("OPENAI_API_KEY", "sk-bench-0123456789"),
    "azure": ("AZURE_API_KEY", "azure-bench-key-0123456789"),
    "fishaudio": ("FISHAUDIO_API_KEY", "fish-bench-key-0123456789"),
}
GOOGLE_EMAIL = "tts-bench@bench-project.iam.gserviceaccount.com"
GOOGLE_KEY_ID = "0123456789abcdef0123456789abcdef01234567"

# Absolute reply timings (perf_counter), per call id, captured by wrapping CallSession._record_latency.
TIMINGS: dict[str, list[dict[str, float]]] = {}


def instrument_server() -> None:
    """Keep each reply's absolute timestamps (this process's server only; nothing changes in the server)."""
    from telebridge.pipeline.call import CallSession

    original = CallSession._record_latency

    def record(self: Any, reply: Any) -> None:
        TIMINGS.setdefault(self.call_id, []).append(dict(reply.timings))
        original(self, reply)

    CallSession._record_latency = record  # type: ignore[method-assign]


# --- the fakes ------------------------------------------------------------------------------------------------


@dataclass
class Fake:
    name: str
    obj: Any  # the fake's state object
    app: Any  # its ThreadedApp

    @property
    def log(self) -> list[tuple[float, float]]:
        """(request received, first audio byte written) per synthesis."""
        return self.obj.speech_first_bytes if self.name == "openai" else self.obj.first_bytes


def start_fakes(names: list[str]) -> tuple[dict[str, Fake], dict[str, Any]]:
    """Start each provider's fake on its own thread; returns the fakes and the LiveServer settings for them."""
    from fakes.serve import ThreadedApp

    fakes: dict[str, Fake] = {}
    settings: dict[str, Any] = {}
    for name in names:
        if name == "piper":
            continue
        key = KEYS.get(name, ("", ""))[1]
        if name == "deepgram":
            from fakes.deepgram import FakeDeepgram

            obj = FakeDeepgram(api_key=key)
        elif name == "elevenlabs":
            from fakes.elevenlabs import FakeElevenLabs

            obj = FakeElevenLabs(api_key=key)
        elif name == "cartesia":
            from fakes.cartesia import FakeCartesia

            obj = FakeCartesia(api_key=key)
        elif name == "openai":
            from fakes.openai_server import FakeOpenAI

            obj = FakeOpenAI(api_key=key)
        elif name == "azure":
            from fakes.azure_speech import FakeAzureSpeech

            obj = FakeAzureSpeech(key=key)
        elif name == "google":
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            from fakes.google_tts import FakeGoogleTTS

            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            obj = FakeGoogleTTS(public_key=private.public_key(), client_email=GOOGLE_EMAIL, key_id=GOOGLE_KEY_ID)
        elif name == "fishaudio":
            from fakes.fishaudio import FakeFishAudio

            obj = FakeFishAudio(api_key=key)
        else:
            raise SystemExit(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
        app = ThreadedApp(obj.app).start()
        fakes[name] = Fake(name, obj, app)
        if name in KEYS:
            os.environ[KEYS[name][0]] = key
        if name == "openai":
            os.environ["OPENAI_BASE_URL"] = app.origin + "/v1"
        elif name == "azure":
            os.environ["AZURE_REGION"] = "eastus"
            settings["azure_speech_base_url"] = app.origin
        elif name == "google":
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
            os.environ["GOOGLE_CREDENTIALS"] = json.dumps({
                "type": "service_account", "project_id": "bench-project", "private_key_id": GOOGLE_KEY_ID,
                "private_key": pem, "client_email": GOOGLE_EMAIL, "client_id": "1234567890",
                "token_uri": app.origin + "/token"})
            settings["google_tts_base_url"] = app.origin
        else:
            settings[f"{name}_base_url"] = app.origin
    return fakes, settings


# --- calls ----------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    through: float  # tts + bridge: first sentence handed to the TTS -> first media message sent
    tts: float
    bridge: float
    own: float  # the fake's time to first byte (piper: the server's synthesis)
    request: float = math.nan  # sentence handed to the TTS -> the fake has the request
    response: float = math.nan  # the fake's first byte -> the client's first decoded chunk

    @property
    def added(self) -> float:
        return self.through - self.own


@dataclass
class Result:
    provider: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def one_call(url: str, token: str) -> Any:
    from telebridge.simulator import simulate_call

    return await simulate_call(url, script=[], auth_token=token, end_when_quiet=0.6, transcribe=False, duration=15.0)


def wait_finished(server: Any, call_sid: str, timeout: float = 15.0) -> Any | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in list(server.runtime.finished):
            if session.call_id == call_sid:
                return session
        time.sleep(0.02)
    return None


def measure_call(server: Any, token: str, provider: str, fake: Fake | None) -> tuple[Sample | None, str | None]:
    before = len(fake.log) if fake is not None else 0
    call = asyncio.run(one_call(server.url, token))
    session = wait_finished(server, call.call_sid)
    if session is None:
        return None, "the server never finished the call"
    if not session.metrics.speech:
        return None, f"no reply was timed (fallbacks: {getattr(session, 'speech', None) and session.speech.fallbacks})"
    fallbacks = session.speech.fallbacks if getattr(session, "speech", None) is not None else []
    if fallbacks:
        return None, f"the provider failed, the call fell back: {fallbacks[:1]}"
    row = session.metrics.speech[0]
    tts, bridge = float(row["tts"]), float(row["bridge"])
    if fake is None:  # piper: the synthesis is the "provider's own" time
        return Sample(tts + bridge, tts, bridge, own=tts), None
    entries = fake.log[before:]
    timings = (TIMINGS.get(call.call_sid) or [{}])[0]
    t_req, t_first = timings.get("tts_request"), timings.get("tts_first_audio")
    if t_req is not None and t_first is not None:
        # the synthesis this sentence caused: received after the sentence went to the TTS, answered before the
        # client decoded its first chunk
        entries = [e for e in entries if t_req - 1e-4 <= e[0] and e[1] <= t_first + 1e-4] or entries
    if not entries:
        return None, "the fake recorded no synthesis for this call"
    received, first = entries[0]
    sample = Sample(tts + bridge, tts, bridge, own=first - received)
    if t_req is not None and t_first is not None:
        sample.request, sample.response = received - t_req, t_first - first
    return sample, None


def pct(values: list[float], q: float) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.percentile(values, q)) if values else math.nan


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{1000 * x:.1f}"


def print_report(results: list[Result]) -> None:
    print()
    print("Added latency per TTS provider through the bridge (ms; per call: first sentence handed to the TTS -> "
          "first media frame sent, minus the fake's own request -> first byte)")
    head = (f"{'provider':11} {'n':>3} {'fake TTFB p50':>13} {'through p50':>11} {'through p95':>11} "
            f"{'added p50':>9} {'added p95':>9} {'target':>6}  verdict")
    print(head)
    print("-" * len(head))
    for r in results:
        s = r.samples
        own, through, added = [x.own for x in s], [x.through for x in s], [x.added for x in s]
        a50, a95 = pct(added, 50), pct(added, 95)
        if not s:
            verdict = "no data"
        elif r.provider == "piper":
            verdict = "reference"
        else:
            verdict = "pass" if a50 * 1000 <= TARGET_MS else "FAIL"
            if verdict == "pass" and a95 * 1000 > TARGET_MS:
                verdict += " (p95 over)"
        name = r.provider + (" *" if r.provider == "piper" else "")
        print(f"{name:11} {len(s):3d} {ms(pct(own, 50)):>13} {ms(pct(through, 50)):>11} {ms(pct(through, 95)):>11} "
              f"{ms(a50):>9} {ms(a95):>9} {TARGET_MS:6.0f}  {verdict}")
    print("(verdict on the median; * piper is embedded: its 'fake TTFB' is the server's own synthesis and "
          "'added' is the bridge part alone)")
    print()
    print("Where the added time goes (ms, p50): request = sentence handed to the TTS -> the fake has the request; "
          "response = the fake's first byte -> the client's first decoded chunk; bridge = that chunk -> first "
          "media frame sent (resample, μ-law, pacing, send)")
    head2 = f"{'provider':11} {'request':>8} {'fake TTFB':>9} {'response':>8} {'bridge':>7} {'bridge p95':>10}"
    print(head2)
    print("-" * len(head2))
    for r in results:
        s = r.samples
        print(f"{r.provider:11} {ms(pct([x.request for x in s], 50)):>8} {ms(pct([x.own for x in s], 50)):>9} "
              f"{ms(pct([x.response for x in s], 50)):>8} {ms(pct([x.bridge for x in s], 50)):>7} "
              f"{ms(pct([x.bridge for x in s], 95)):>10}")
    problems = [(r.provider, p) for r in results for p in r.problems]
    if problems:
        print()
        print("Problems:")
        for provider, p in problems:
            print(f"  {provider}: {p}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 measured calls per provider")
    ap.add_argument("--calls", type=int, default=8, help="measured calls per provider (after one warm-up call)")
    ap.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated; piper is the reference")
    args = ap.parse_args()
    calls = 3 if args.quick else args.calls
    names = [p for p in args.providers.split(",") if p]
    logging.basicConfig(level=logging.WARNING)

    from conftest import AUTH_TOKEN, LiveServer
    from fakes.speech import speech_backend

    t0 = time.monotonic()
    speech_backend().piper_rate  # load the fakes' Piper (and Whisper) before anything is timed
    fakes, settings = start_fakes(names)
    instrument_server()
    server = LiveServer(agent=str(AGENT), **settings).start()
    print(f"provider_latency: {len(names)} providers x ({calls} calls + 1 warm-up), greeting only; server "
          f"{server.url}, fakes in this process on their own threads (ready in {time.monotonic() - t0:.1f} s)",
          flush=True)
    results: list[Result] = []
    try:
        for name in names:
            os.environ["BENCH_TTS"] = name
            fake = fakes.get(name)
            result = Result(name)
            _, problem = measure_call(server, AUTH_TOKEN, name, fake)  # warm-up: not counted
            if problem:
                result.problems.append(f"warm-up call: {problem}")
            for _ in range(calls):
                sample, problem = measure_call(server, AUTH_TOKEN, name, fake)
                if sample is not None:
                    result.samples.append(sample)
                if problem:
                    result.problems.append(problem)
            s = result.samples
            print(f"  {name:11} n={len(s)}  fake TTFB p50 {ms(pct([x.own for x in s], 50))} ms  added p50 "
                  f"{ms(pct([x.added for x in s], 50))} ms", flush=True)
            results.append(result)
    finally:
        server.stop()
        for fake in fakes.values():
            fake.app.stop()
    print_report(results)


if __name__ == "__main__":
    main()
