"""``GET /v1/health``: is each backing part up, and is the service as a whole usable?

Meant to be polled every second by a load balancer or a frontend, so it never runs a model or touches the
network: each check looks at state the process already has (loaded engines, pools, the VAD task, whether a
package or a model file is present, whether a directory is writable). Package and file checks are cached.

``ok`` is false when a required part (VAD, STT, TTS, LLM) is down or the process is draining. ``redis`` reports
the shared state (:mod:`telebridge.state`): with Redis away, calls go on and the features needing it are listed. Voice cloning
and recording storage are reported but optional. ``process`` gives this worker's resident memory, threads, open
file descriptors and asyncio tasks (what a soak test watches for leaks), and how often and how long freed memory was
given back to the OS (:mod:`telebridge.memory`). ``providers`` counts each cloud provider's outcomes as calls
use them (``stt.deepgram``, ``tts.elevenlabs``, …: ok, errors by kind, fallbacks; ``up`` is false while the
latest outcome in the last minute is an error). A failing cloud provider does not make ``ok`` false: calls fall
back to the next provider.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from .runtime import Runtime

REQUIRED = ("vad", "stt", "tts", "llm")


@functools.cache
def _has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@functools.cache
def _default_piper_model() -> str | None:
    try:
        from .providers.tts.piper import default_piper_voice

        path = default_piper_voice()
    except Exception:
        return None
    return path if Path(path).is_file() else None


def _part(up: bool, detail: str) -> dict[str, Any]:
    return {"up": up, "detail": detail}


def _pool_open(pool: Any) -> bool:
    return not getattr(pool, "_closed", False)


def _engines(runtime: Runtime, kind: str) -> int:
    return sum(1 for key in runtime._engines if key[0] == kind)


def _writable_dir(path: Path) -> bool:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def process_figures() -> dict[str, Any]:
    """This process's footprint, from ``/proc`` where there is one: cheap enough for every poll."""
    import asyncio
    import threading

    figures: dict[str, Any] = {"pid": os.getpid(), "threads": threading.active_count()}
    try:
        with open("/proc/self/statm") as f:
            figures["rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        figures["threads"] = len(os.listdir("/proc/self/task"))
        figures["open_fds"] = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        figures["asyncio_tasks"] = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (called from a thread)
        pass
    return figures


def health_report(runtime: Runtime) -> dict[str, Any]:
    hub = runtime._hub_task
    vad_up = hub is not None and not hub.done() and _pool_open(runtime.vad_pool)
    speech_pool = _pool_open(runtime.speech_pool)
    stt_loaded = _engines(runtime, "stt")
    tts_loaded = _engines(runtime, "tts")
    stt_up = speech_pool and (stt_loaded > 0 or _has_package("faster_whisper"))
    tts_up = speech_pool and (tts_loaded > 0 or (_has_package("piper") and _default_piper_model() is not None))
    llm_up = runtime.agent is not None
    cloning_up = tts_up and _has_package("piper") and runtime.voices.writable()
    parts: dict[str, dict[str, Any]] = {
        "vad": _part(vad_up, "batched Silero VAD" if vad_up else "the VAD task is not running"),
        "stt": _part(stt_up, f"{stt_loaded} engine(s) loaded" if stt_loaded else
                     ("Whisper available, loads on first use" if stt_up else "no STT engine available")),
        "tts": _part(tts_up, f"{tts_loaded} engine(s) loaded" if tts_loaded else
                     ("Piper available, loads on first use" if tts_up else "no TTS engine available")),
        "llm": _part(llm_up, f"agent {runtime.agent.id!r}"),
        "voice_cloning": _part(cloning_up, "Piper pitch/pace matching (an approximation)" if cloning_up else
                               "needs Piper and a writable voice store directory"),
    }
    if runtime.recorder.enabled:
        assert runtime.recorder.directory is not None
        writable = _writable_dir(runtime.recorder.directory)
        parts["recording_storage"] = _part(writable, "writable" if writable else "recordings directory not writable")
    ok = all(parts[name]["up"] for name in REQUIRED) and not runtime.draining
    return {
        "ok": ok,
        "stt_up": stt_up,
        "tts_up": tts_up,
        "llm_up": llm_up,
        "voice_cloning_up": cloning_up,
        "accepting": runtime.accepting,
        "sessions": len(runtime.calls),
        "parts": parts,
        "providers": runtime.provider_health.snapshot(),
        "process": {**process_figures(), **runtime.memory.figures()},
        # Shared state (REDIS_URL): up or not, and what works on this instance only while it is away. Calls never
        # depend on it, so it does not make ``ok`` false.
        "redis": state.report() if (state := getattr(runtime, "state", None)) is not None else {"configured": False},
    }


async def health_endpoint(request: Request) -> JSONResponse:
    report = health_report(request.app.state.runtime)
    return JSONResponse(report, status_code=200 if report["ok"] else 503)
