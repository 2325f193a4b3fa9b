"""The caller's words: one call's speech-to-text side, between the VAD's utterances and the turn engine.

* **Final transcripts.** Each utterance the engine asks for (:class:`~.turns.Transcribe`) is transcribed by its
  call-clock span from a streaming STT, else from its audio (:class:`~.speech.CallSpeech`).
* **Early STT.** Once the caller has been quiet :data:`EARLY_STT_AFTER` (:data:`EARLY_STT_IDLE_AFTER` when the
  local STT has nothing else to do), before the VAD confirms the end of speech, the utterance so far is
  transcribed speculatively, so STT runs during the endpointing wait; if the caller speaks again, that transcript
  is discarded. Not with a streaming STT (it has the words already).
* **Interim words** while the caller speaks over the agent: a streaming STT's words so far, or the
  :class:`~.interim.InterimTranscriber` re-transcribing the growing utterance.
* **Not our own words.** Words heard over the agent that are not confident (:func:`confident`) or are mostly
  what the agent just said (its echo, on a line where an echo can be) are dropped.

The VAD side decides *when* (the shell's ``_on_window``, which reads :attr:`Listener.early` and
:attr:`Listener.streaming` and calls in only when there is something to do); this module does the work.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .interim import InterimTranscriber

if TYPE_CHECKING:
    from .reply import _Reply
    from .speech import CallSpeech
    from .turns import Transcribe, TurnEngine

log = logging.getLogger("telebridge.call")

# Start transcribing once the caller has been quiet this long, before the VAD confirms the end of speech, so STT
# runs during the endpointing wait. If the caller speaks again, the early transcript is discarded (its CPU spent).
# Under load (anything running or queued on the speech pool) it waits this long, about when the end-of-turn model
# is first asked (end_of_turn.ASK_AFTER), so few of them are wasted on pauses the caller talks through ...
EARLY_STT_AFTER = 0.2
# ... and when the local STT is idle, only this long: the words are then ready when the model's first "complete"
# comes (~0.22 s into the pause), not ~0.15 s after it. A wasted run costs an otherwise idle core.
EARLY_STT_IDLE_AFTER = 0.1
# Words heard over the agent with less confidence than this are taken for noise (Whisper turns coughs and hums
# into "you", "them." and the like).
OVER_AGENT_MIN_LOGPROB = -1.0
# Words heard over the agent are its own echo when this share of them matches what it just said (2+ words).
ECHO_TEXT_SHARE = 0.6
ECHO_TEXT_MIN_WORDS = 2


_WORD = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def confident(transcript: Any) -> str:
    """The transcript's text, or "" when it is too unsure to be words heard over the agent."""
    if transcript is None:
        return ""
    logprob = getattr(transcript, "avg_logprob", None)
    if logprob is not None and logprob < OVER_AGENT_MIN_LOGPROB:
        return ""
    return str(transcript.text)


class Listener:
    """Collaborators: ``speech`` (the STT), ``engine`` (is an utterance over the agent?), ``now()`` (the call
    clock), ``playing()`` / ``heard(reply)`` (the reply the caller hears and how much of it: the echo-text
    filter) and ``echo_possible()`` (may the agent's echo be on the line at all? the filter applies only then),
    ``spawn`` (a task owned by the call), ``observe`` (the conversation observer), and where the words
    go: ``on_interim(utterance, text)`` and ``on_transcript(utterance, text)``."""

    def __init__(
        self,
        *,
        call_id: str,
        speech: CallSpeech,
        engine: TurnEngine,
        vad_rate: int,
        sink_rate: int,
        now: Callable[[], float],
        playing: Callable[[], _Reply | None],
        heard: Callable[[_Reply], int],
        spawn: Callable[[Awaitable[Any], str], asyncio.Task],
        observe: Callable[..., None],
        on_interim: Callable[[int, str], None],
        on_transcript: Callable[[int, str], None],
        echo_possible: Callable[[], bool] = lambda: True,
    ) -> None:
        self.call_id = call_id
        self.speech = speech
        self.engine = engine
        self.vad_rate = vad_rate
        self.sink_rate = sink_rate
        self._now = now
        self._playing = playing
        self._heard = heard
        self._spawn = spawn
        self._observe = observe
        self._on_interim = on_interim
        self._on_transcript = on_transcript
        self._echo_possible = echo_possible
        self.interim = InterimTranscriber(self._interim_text, spawn, on_interim, sample_rate=vad_rate)
        self.utterance_span: tuple[float, float] = (0.0, 0.0)  # call-clock span of the utterance just ended
        self.speech_end_wall: float | None = None
        self.last_stt = 0.0
        self.early: asyncio.Task | None = None  # speculative transcript of the current utterance
        self._early_ready: asyncio.Task | None = None  # handed to the Transcribe action that follows
        self.early_used = 0
        self._interim_sent = ""

    @property
    def streaming(self) -> bool:
        return self.speech.streaming

    # --- driven by the VAD (per window while the caller speaks; see the shell's _on_window) -----------------
    def wants_early(self, pause: float) -> bool:
        """Start the early transcript ``pause`` seconds into the caller's pause (none under way yet)?"""
        if self.early is not None or pause < EARLY_STT_IDLE_AFTER or self.streaming:
            return False
        return pause >= EARLY_STT_AFTER or self.speech.stt_idle

    def start_early(self, audio: np.ndarray) -> None:
        self.early = self._spawn(self._recognise(audio), "early-stt")

    def cancel_early(self) -> None:
        """The caller went on talking: the early transcript is stale."""
        if self.early is not None:
            self.early.cancel()
        self.early = None

    def utterance_ended(self, wall: float, span: tuple[float, float]) -> None:
        """The VAD ended an utterance (``span`` on the call clock, at ``wall`` perf-counter time): an early
        transcript under way is the one its Transcribe action will use."""
        self.speech_end_wall = wall
        self.utterance_span = span
        self._early_ready, self.early = self.early, None

    def poll_stream_interim(self, utterance_id: int, start: float, now: float) -> None:
        """A streaming STT's interim words for the current utterance, handed on when they change."""
        text = self.speech.interim_words(start - 0.1, now)
        if text is None or text == self._interim_sent:
            return
        self._interim_sent = text
        text = self.not_our_words(text)
        if text:
            self._on_interim(utterance_id, text)

    # --- transcripts ----------------------------------------------------------------------------------------
    def transcribe(self, action: Transcribe) -> None:
        """The engine's :class:`~.turns.Transcribe`: the utterance's final words, in a task of the call."""
        early, self._early_ready = self._early_ready, None
        self._interim_sent = ""
        self._spawn(self._transcribe(action.utterance_id, action.audio, early, self.utterance_span),
                    f"stt{action.utterance_id}")

    async def _recognise(self, audio: np.ndarray, span: tuple[float, float] | None = None) -> Any | None:
        """Transcribe an utterance: by its call-clock ``span`` from a streaming STT, else its audio."""
        rate = self.vad_rate
        if span is None:
            end = self._now()
            span = (end - len(audio) / rate, end)
        return await self.speech.transcribe(audio, rate, *span)

    async def _interim_text(self, audio: np.ndarray) -> str:
        return self.not_our_words(confident(await self._recognise(audio)))

    def not_our_words(self, text: str) -> str:
        """Words heard over the agent that are mostly the agent's own recent words are its echo, not the caller;
        a lone word the agent just said is dropped too (an interim transcript of an echo remnant: "that"). The
        agent's words at the very start or end of what the caller said are trimmed off only when what is left is
        a backchannel (an echo remnant around their "uh-huh": "that, uh-huh"): a caller who repeats the agent's
        words in an answer ("Help me with my booking") keeps them. On a line where no echo of the agent can be
        (``echo_possible()``: the echo canceller has found none lately) the words are all the caller's: a one-word
        answer over the agent that the agent itself just offered ("Tuesday") is kept."""
        reply = self._playing()
        words = normalise(text)
        if reply is None or not words or not self._echo_possible():
            return text
        heard, rate = self._heard(reply), self.sink_rate
        recent = [s.text for s in reply.spans if s.start <= heard + rate and s.end >= heard - 8 * rate]
        matcher = difflib.SequenceMatcher(None, words, normalise(" ".join(recent)), autojunk=False)
        blocks = matcher.get_matching_blocks()
        matched = sum(block.size for block in blocks)
        if len(words) >= ECHO_TEXT_MIN_WORDS and matched >= ECHO_TEXT_SHARE * len(words):
            log.debug("call %s: %r is the agent's own echo", self.call_id, text)
            return ""
        echoed = {i for block in blocks for i in range(block.a, block.a + block.size)}
        first, last = 0, len(words)
        while first < last and first in echoed:
            first += 1
        while last > first and last - 1 in echoed:
            last -= 1
        if last <= first:
            return ""  # a lone word of the agent's
        if (first, last) != (0, len(words)):
            spans = [m.span() for m in _WORD.finditer(text.lower())]  # the same words, in the original text
            core = text[spans[first][0] : spans[last - 1][1]]
            judge = getattr(self.engine, "judge", None)
            if judge is not None and judge.is_backchannel(core):
                log.debug("call %s: %r holds the agent's own echo around a backchannel", self.call_id, text)
                return core
        return text

    async def _transcribe(
        self, utterance_id: int, audio: np.ndarray, early: asyncio.Task | None, span: tuple[float, float]
    ) -> None:
        started = time.perf_counter()
        transcript: Any | None = None
        used_early = False
        if early is not None:
            # Only silence followed the early snapshot, so its transcript is the whole utterance's.
            await asyncio.wait({early})  # our own cancellation still propagates; early's does not
            if not early.cancelled():
                transcript = early.result()
                used_early = True
                self.early_used += 1
        if not used_early:
            transcript = await self._recognise(audio, span)
        self.last_stt = time.perf_counter() - started
        if self.engine.is_over_agent(utterance_id):
            text = self.not_our_words(confident(transcript))
        else:
            text = str(transcript.text) if transcript is not None else ""
        if text.strip():
            self._observe("user_transcript", text.strip())
        log.debug("call %s: heard %r (%.0f ms STT)", self.call_id, text, 1000 * self.last_stt)
        self._on_transcript(utterance_id, text)
