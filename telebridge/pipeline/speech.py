"""One call's speech providers: its STT (a per-call stream, or an utterance engine), its TTS session, and the
fallback chains that keep a call talking when a provider fails.

The chains are the agent's ``stt`` / ``tts``, then its ``fallback_stt`` / ``fallback_tts``, then the embedded
Whisper / Piper (when installed). At the start of the call each provider's credential check runs (cached by the
client, so only the first call pays); a provider that fails it is reported -- naming the provider and its
environment variable -- and the next one is used, so a bad key never means a silent call. Mid-call:

* STT: if the stream dies for good, or an utterance request fails, the VAD's copy of the utterance is
  transcribed whole by the next engine (never by its fresh stream, which did not hear it): the caller's words are
  not lost and no apology is needed. A stream that drops mid-turn and is reconnecting has that utterance
  transcribed whole by the same provider.
* TTS: if a sentence fails, the next provider says ``provider_failure_message`` and then the sentence, and the
  rest of the call uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio.resample import resample_once
from ..config import STT, TTS
from ..providers.errors import ProviderAuthError, ProviderError
from ..providers.registry import available
from ..providers.stt.base import STTError, Transcript
from ..providers.tts.base import TTSError, open_session

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..session import SessionConfig

log = logging.getLogger("telebridge.speech")

STT_RATE = 16000
CLOSE_TIMEOUT = 3.0  # seconds a call's provider connections get to close politely


def _name(cfg: Any) -> str:
    return str(cfg.model_config.get("title") or cfg.provider)


def _chain(primary: Any, fallbacks: list[Any], local: Any, kind: str) -> list[Any]:
    seen: set[str] = set()
    chain = []
    for cfg in (primary, *fallbacks, local):
        key = cfg.model_dump_json()
        if key in seen:
            continue
        if cfg is local and not available(kind, cfg.provider):
            continue
        seen.add(key)
        chain.append(cfg)
    return chain


class CallSpeech:
    def __init__(self, runtime: Runtime, config: SessionConfig, *, call_id: str, input_rate: int, phone: bool,
                 output_rate: int | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.call_id = call_id
        self.input_rate = input_rate
        self.phone = phone
        self.output_rate = output_rate  # the rate the call plays at: cached phrases come at it (see OneShotSession)
        self._stt_chain = _chain(config.stt, list(config.fallback_stt), STT.Whisper(), "stt")
        self._tts_chain = _chain(config.tts, list(config.fallback_tts), TTS.Piper(), "tts")
        self.stt_cfg: Any = None
        self.tts_cfg: Any = None
        self.stt: Any = None
        self.stream: Any = None  # the call's STT stream, when the STT streams
        self.tts_session: Any = None
        self.fallbacks: list[tuple[str, str, str]] = []  # (kind, from provider, reason)
        self._fed = 0  # caller samples fed (input rate): the call clock, for a stream opened mid-call
        self._closed = False

    @property
    def health(self) -> Any:
        return self.runtime.provider_health

    # --- start ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Pick the first working STT and TTS (concurrently). Raises when no provider in a chain works."""
        await asyncio.gather(self._next_stt(None), self._next_tts(None))

    async def _next_stt(self, failed: BaseException | None) -> None:
        if failed is not None:
            self._note_failure("stt", self.stt_cfg, failed)
            await self._close_stream()
        while self._stt_chain:
            cfg = self._stt_chain.pop(0)
            try:
                engine = await self.runtime.stt_for(cfg, phone=self.phone)
                await _check(engine)
                stream = None
                if hasattr(engine, "open_stream"):  # mid-call (a fallback): its clock starts at the call's now
                    stream = await engine.open_stream(input_rate=self.input_rate, call_id=self.call_id,
                                                      start=self._fed / self.input_rate)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_failure("stt", cfg, exc)
                continue
            self.stt_cfg, self.stt, self.stream = cfg, engine, stream
            return
        raise STTError(f"call {self.call_id}: no speech-to-text provider works")

    async def _next_tts(self, failed: BaseException | None) -> None:
        if failed is not None:
            self._note_failure("tts", self.tts_cfg, failed)
            old, self.tts_session = self.tts_session, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
        while self._tts_chain:
            cfg = self._tts_chain.pop(0)
            try:
                resolve = getattr(self.runtime, "resolve_tts", None)
                cfg = resolve(cfg) if resolve is not None else cfg  # a store voice → its provider's config
                engine = await self.runtime.tts_for(cfg, phone=self.phone)
                await _check(engine)
                session = await open_session(engine, call_id=self.call_id, output_rate=self.output_rate)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_failure("tts", cfg, exc)
                continue
            self.tts_cfg, self.tts_session = cfg, session
            return
        raise TTSError(f"call {self.call_id}: no text-to-speech provider works")

    def _note_failure(self, kind: str, cfg: Any, exc: BaseException) -> None:
        if cfg is None:
            return
        name = _name(cfg)
        nxt = self._stt_chain[0] if kind == "stt" and self._stt_chain else (
            self._tts_chain[0] if kind == "tts" and self._tts_chain else None)
        then = f"; using {_name(nxt)} instead" if nxt is not None else "; no fallback left"
        if isinstance(exc, ProviderAuthError):
            log.error("call %s: %s %s%s", self.call_id, name, _reason(exc), then)
        else:
            log.error("call %s: %s failed: %s%s", self.call_id, name, _reason(exc), then)
        if not isinstance(exc, ProviderError):  # provider clients count their own errors
            self.health.error(f"{kind}.{cfg.provider}", _kind(exc), _reason(exc))
        self.health.fallback(f"{kind}.{cfg.provider}")
        self.fallbacks.append((kind, cfg.provider, _reason(exc)))

    # --- speech to text -------------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return self.stream is not None and not self.stream.failed

    def feed(self, pcm: np.ndarray, ulaw: bytes | None = None) -> None:
        """Caller audio for the STT stream; ``ulaw``: the frame as received (see ``STTStream.feed``)."""
        self._fed += len(pcm)
        stream = self.stream
        if stream is None:
            return
        if ulaw is not None and getattr(stream, "takes_ulaw", False):
            stream.feed(pcm, ulaw)
        else:
            stream.feed(pcm)

    @property
    def stt_idle(self) -> bool:
        """The utterance STT runs here and has nothing to do (an engine with an ``idle()`` that says so)."""
        idle = getattr(self.stt, "idle", None)
        return bool(idle()) if callable(idle) else False

    def interim_words(self, start: float, end: float) -> str | None:
        """Words the stream has heard so far in ``[start, end]``; None when the STT does not stream."""
        if not self.streaming:
            return None
        return self.stream.words(start, end)

    async def transcribe(self, audio: np.ndarray, rate: int, start: float, end: float) -> Transcript | None:
        """The utterance ``[start, end]`` (its audio at ``rate`` is the fallback's input). None: nothing usable.

        Once a provider has failed on this utterance, the next one transcribes its audio whole, even if it
        streams: its fresh stream never heard the utterance."""
        fell_back = False
        while not self._closed:
            try:
                if self.streaming and not fell_back:
                    try:
                        return await self.stream.transcript(start, end)
                    except ProviderError:
                        if self.stream is None or self.stream.failed:
                            raise
                        # The socket dropped mid-turn and is reconnecting: this utterance whole, from the same
                        # provider's other endpoint; the stream carries on for the next ones.
                        log.info("call %s: live STT interrupted; transcribing the utterance whole", self.call_id)
                        fell_back = True
                        continue
                audio16 = audio if rate == STT_RATE else resample_once(audio, rate, STT_RATE)
                return await self.stt.transcribe(audio16)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, ProviderError) and self.stt_cfg.provider in ("whisper",):
                    log.exception("call %s: STT failed; the utterance is dropped", self.call_id)
                    return None
                try:
                    await self._next_stt(exc)
                except STTError:
                    log.error("call %s: no STT left; the utterance is dropped", self.call_id)
                    return None
                fell_back = True
        return None

    # --- text to speech -------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.tts_session.sample_rate)

    async def speak(self, text: str, reply_id: int) -> AsyncIterator[tuple[np.ndarray, int]]:
        """One sentence's audio as ``(int16 chunk, rate)`` pairs. If the provider fails, the next one says the
        apology and the sentence, and the call keeps it."""
        session = self.tts_session
        if session is None or self._closed:  # the call ended while this reply was being made: nothing to say
            return
        try:
            async for chunk in session.stream(text, reply_id=reply_id):
                yield chunk, session.sample_rate
            self.health.ok(f"tts.{self.tts_cfg.provider}")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if session is self.tts_session:  # not already replaced after another sentence's failure
                await self._next_tts(exc)
        session = self.tts_session
        for piece in (self.config.provider_failure_message, text):
            async for chunk in session.stream(piece, reply_id=reply_id):
                yield chunk, session.sample_rate

    def use_tts(self, cfg: Any, session: Any) -> None:
        """Switch voices between replies (a realtime ``session.update``); the old session closes in the background."""
        old, self.tts_cfg, self.tts_session = self.tts_session, cfg, session
        if old is not None and old is not session:
            task = asyncio.get_running_loop().create_task(old.aclose(), name=f"{self.call_id}:tts-close")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def cancel_reply(self, reply_id: int) -> None:
        session = self.tts_session
        if session is not None:
            with contextlib.suppress(Exception):
                await session.cancel(reply_id)

    async def end_reply(self, reply_id: int) -> None:
        session = self.tts_session
        if session is not None:
            with contextlib.suppress(Exception):
                await session.end_reply(reply_id)

    # --- end ------------------------------------------------------------------------------------------------
    async def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def aclose(self) -> None:
        """Close the provider connections, concurrently and within :data:`CLOSE_TIMEOUT`: a provider slow to say
        goodbye never keeps a finished call (and its tasks) alive."""
        self._closed = True
        session, self.tts_session = self.tts_session, None
        closing = [self._close_stream()]
        if session is not None:
            closing.append(session.aclose())
        tasks = [asyncio.ensure_future(c) for c in closing]
        done, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning("call %s: a speech provider did not close within %.0f s; dropped", self.call_id, CLOSE_TIMEOUT)


async def _check(engine: Any) -> None:
    check = getattr(engine, "check", None)
    if check is not None:
        await check()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ProviderAuthError):
        return "auth"
    if isinstance(exc, ProviderError) and exc.status == 429:
        return "rate_limited"
    if isinstance(exc, ProviderError) and exc.status and exc.status >= 500:
        return "server"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return "error"
